package cli

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
)

// startDevConfig starts agentd dev in process, writes its config.yaml as the
// dev command does and exports what its env file holds.
func startDevConfig(t *testing.T) *agent.Dev { return startDevConfigNodes(t, 0) }

func startDevConfigNodes(t *testing.T, nodes int) *agent.Dev {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d, err := agent.StartDev(ctx, agent.DevOptions{StateDir: t.TempDir(), Nodes: nodes, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); d.Close() })
	path, err := writeDevConfig(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range append(d.Env(), EnvConfig+"="+path) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return d
}

// TestHostNetworkSDN: on a 3-node agentd dev the agent network is the SDN
// VNet that dev set up as host network apply does: render shows the plan
// (peers: the three nodes) with nothing to change, as nft comments ahead
// of a ruleset scoped to the VNet; apply says nothing changed; --interfaces
// is the host address stanza of the VNet, not a bridge of its own.
func TestHostNetworkSDN(t *testing.T) {
	startDevConfigNodes(t, 3)
	code, out := cli("host", "network", "render")
	for _, want := range []string{
		"# Proxmox SDN (agentd host network apply creates and applies these through /cluster/sdn):\n",
		"#   zone agentlab: type vxlan, peers 127.0.0.1,127.0.0.2,127.0.0.3, mtu Proxmox's default, nodes every node\n",
		"#   vnet agentnet: zone agentlab, tag (VNI) 7700,",
		"#   subnet agentlab-10.77.0.0-16: 10.77.0.0/16, gateway 10.77.0.1\n",
		"# apply: nothing to change (all in place and applied)\n",
		`oifname "agentnet" drop comment "sandbox to sandbox`,
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("render: exit %d, lacks %q:\n%s", code, want, out)
		}
	}
	if code, out := cli("host", "network", "apply"); code != 0 ||
		!strings.Contains(out, "sdn: zone agentlab, vnet agentnet, subnet agentlab-10.77.0.0-16 already in place and applied: nothing changed\n") {
		t.Fatalf("apply: exit %d:\n%s", code, out)
	}
	if code, out := cli("host", "network", "render", "--interfaces"); code != 0 || !strings.Contains(out, "iface agentnet inet static\n\taddress 10.77.0.1/16\n") ||
		strings.Contains(out, "bridge-ports") {
		t.Fatalf("render --interfaces: exit %d:\n%s", code, out)
	}
}

// TestLocalFileCommandsWithDev: with only the variables agentd dev exports,
// every command that reads a configuration file works against the dev
// instance, without --config.
func TestLocalFileCommandsWithDev(t *testing.T) {
	d := startDevConfig(t)
	dir := t.TempDir()
	val := filepath.Join(dir, "v")
	if err := os.WriteFile(val, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, "k.pub")
	if err := os.WriteFile(pub, []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake dev@x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(d.StateDir, "config.yaml")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"config", "check"}, 0, cfgPath + ": ok; profiles: "},
		{[]string{"secrets", "init"}, 0, "created " + filepath.Join(d.StateDir, "secrets", "age.key")},
		{[]string{"secrets", "set-env", "FOO", "--value-file", val}, 0, "set FOO in bundle default"},
		{[]string{"secrets", "add-ssh-key", "dev", "--key-file", pub}, 0, ""},
		{[]string{"secrets", "show"}, 0, `"FOO"`},
		{[]string{"secrets", "validate"}, 0, "bundle default: ok (age, 1 env, 1 ssh keys"},
		{[]string{"backup", "--out", filepath.Join(dir, "b.tar.gz")}, 0, "wrote " + filepath.Join(dir, "b.tar.gz")},
		{[]string{"restore", filepath.Join(dir, "b.tar.gz")}, 1, "agentd is running: stop it first"},
		{[]string{"host", "network", "render"}, 0, "table inet agentlab"},
		{[]string{"host", "network", "render", "--interfaces"}, 0, "vmbr1"},
		{[]string{"host", "network", "apply"}, 0, "nftables: not loaded: " + d.StateDir + " belongs to agentd dev"},
		{[]string{"host", "check"}, -1, "proxmox"},
		{[]string{"doctor", "--out", filepath.Join(dir, "d.tar.gz")}, 0, "config.yaml"},
		{[]string{"status"}, 0, "Proxmox VE"},
	} {
		code, out := cli(tc.args...)
		if (tc.code >= 0 && code != tc.code) || !strings.Contains(out, tc.want) {
			t.Errorf("agentd %v: exit %d, %q; want exit %d with %q", tc.args, code, out, tc.code, tc.want)
		}
		if strings.Contains(out, "s3cret") {
			t.Errorf("agentd %v echoed a secret value: %q", tc.args, out)
		}
	}
	// The doctor bundle carries the host check's real output.
	f, err := os.Open(filepath.Join(dir, "d.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	found := false
	for h, err := tr.Next(); err == nil; h, err = tr.Next() {
		if strings.HasSuffix(h.Name, "host-check.txt") {
			b, _ := io.ReadAll(tr)
			found = strings.Contains(string(b), "nftables") && !strings.Contains(string(b), "not part of this version")
		}
	}
	if !found {
		t.Error("doctor bundle: host-check.txt lacks the host check's output")
	}
}

// TestConfigErrorsNameWhatToSet: a missing config file names the flag and the
// variable; a missing directory names the key.
func TestConfigErrorsNameWhatToSet(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvConfig, filepath.Join(dir, "nope.yaml"))
	for _, args := range [][]string{{"config", "check"}, {"secrets", "show", "--local"}, {"backup", "--out", "x"}, {"host", "network", "render"}, {"host", "check"}, {"restore", "x"}} {
		code, out := cli(args...)
		if code != exitError || !strings.Contains(out, filepath.Join(dir, "nope.yaml")+" does not exist: give --config FILE or set AGENTD_CONFIG") {
			t.Errorf("agentd %v: exit %d, %q", args, code, out)
		}
	}
	cfg := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfg, []byte("state_dir: "+filepath.Join(dir, "state")+"\nprofiles_dir: "+filepath.Join(dir, "profiles")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvConfig, cfg)
	if code, out := cli("config", "check"); code != exitError || !strings.Contains(out, "profiles_dir "+filepath.Join(dir, "profiles")+" does not exist: set profiles_dir in "+cfg) {
		t.Errorf("config check: exit %d, %q", code, out)
	}
	if code, out := cli("backup", "--out", filepath.Join(dir, "b.tgz")); code != exitError || !strings.Contains(out, "state_dir "+filepath.Join(dir, "state")+" does not exist: set state_dir in "+cfg) {
		t.Errorf("backup: exit %d, %q", code, out)
	}
	// --config still wins over the variable.
	if code, out := cli("config", "check", "--config", filepath.Join(dir, "other.yaml")); code != exitError || !strings.Contains(out, "other.yaml does not exist") {
		t.Errorf("--config: exit %d, %q", code, out)
	}
}
