package cli

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/config"
)

// TestSandboxSSHIdentityAndJump: -i offers one key (IdentitiesOnly) and
// warns when its public half is not among the agent's ssh_public_keys; the
// jump host comes from --jump, then AGENTLAB_SSH_JUMP, then the agent's
// ssh_jump_host (the dev CLI reaches its agent over https), and --no-jump
// turns it off; a hostile value in any of them is refused before ssh runs.
func TestSandboxSSHIdentityAndJump(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "id_ed25519")
	other := filepath.Join(dir, "other_ed25519")
	for _, k := range []string{key, other} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "t@x", "-f", k).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, _ := os.ReadFile(key + ".pub")
	ctx, cancel := context.WithCancel(context.Background())
	d, err := agent.StartDev(ctx, agent.DevOptions{StateDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Configure: func(c *config.Config) {
			c.SSHPublicKeys = []string{strings.TrimSpace(string(pub))}
			c.SSHJumpHost = "root@pve1.lan"
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); d.Close() })
	for _, kv := range d.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	t.Setenv(envSSHJump, "")
	t.Setenv(envSSHIdentity, "")
	if code, out := cli("sandbox", "create", "--name", "j", "--profile", "yolo-ephemeral"); code != 0 {
		t.Fatalf("create: %d %s", code, out)
	}
	sb, _ := d.Manager.Get(t.Context(), "j")
	dest := " -- agent@" + sb.IP + "\n"
	printSSH := func(args ...string) (int, string) {
		t.Helper()
		code, out := cli(append([]string{"sandbox", "ssh", "j", "--print"}, args...)...)
		removeKnownHosts(t, out)
		return code, out
	}

	// The agent's ssh_jump_host, since this CLI talks https.
	code, out := printSSH()
	if code != 0 || !strings.HasSuffix(out, " -J root@pve1.lan"+dest) || strings.Contains(out, "warning") {
		t.Fatalf("default jump: %d %q", code, out)
	}
	// The environment beats the agent, the flag beats both, --no-jump none.
	t.Setenv(envSSHJump, "ops@bastion:2222")
	if code, out = printSSH(); code != 0 || !strings.HasSuffix(out, " -J ops@bastion:2222"+dest) {
		t.Fatalf("AGENTLAB_SSH_JUMP: %d %q", code, out)
	}
	if code, out = printSSH("--jump", "me@[fd00::1]:22"); code != 0 || !strings.HasSuffix(out, " -J 'me@[fd00::1]:22'"+dest) {
		t.Fatalf("--jump: %d %q", code, out)
	}
	if code, out = printSSH("--no-jump"); code != 0 || strings.Contains(out, " -J ") || !strings.HasSuffix(out, dest) {
		t.Fatalf("--no-jump: %d %q", code, out)
	}

	// -i: the accepted key without a warning, another one with one.
	code, out = printSSH("--no-jump", "-i", key)
	if code != 0 || !strings.Contains(out, " -i "+key+" -o IdentitiesOnly=yes -- agent@") || strings.Contains(out, "warning") {
		t.Fatalf("-i accepted key: %d %q", code, out)
	}
	t.Setenv(envSSHIdentity, other)
	code, out = printSSH("--no-jump")
	if code != 0 || !strings.Contains(out, "warning: "+other+".pub (SHA256:") || !strings.Contains(out, "is not among the agent's ssh_public_keys") ||
		!strings.Contains(out, " -i "+other+" -o IdentitiesOnly=yes") {
		t.Fatalf("AGENTLAB_SSH_IDENTITY, unknown key: %d %q", code, out)
	}
	t.Setenv(envSSHIdentity, "")

	// Hostile or wrong values: usage errors, nothing printed to run.
	for _, tc := range []struct {
		env  string
		args []string
		want string
	}{
		{"", []string{"--jump", "-oProxyCommand=touch /tmp/x"}, "--jump \"-oProxyCommand=touch /tmp/x\": want USER@HOST"},
		{"", []string{"--jump", "-J"}, "--jump \"-J\": want USER@HOST"},
		{"-oProxyCommand=sh", nil, "AGENTLAB_SSH_JUMP=\"-oProxyCommand=sh\": want USER@HOST"},
		{"", []string{"--jump", "a@b", "--no-jump"}, "--jump and --no-jump contradict"},
		{"", []string{"-i", filepath.Join(dir, "missing")}, "not a readable private key file"},
		{"", []string{"-i", dir}, "not a readable private key file"},
	} {
		t.Setenv(envSSHJump, tc.env)
		if code, out = printSSH(tc.args...); code != 2 || !strings.Contains(out, tc.want) || strings.Contains(out, "ssh -o") {
			t.Errorf("%q %v: %d %q, want exit 2 with %q", tc.env, tc.args, code, out, tc.want)
		}
	}
}

// TestSSHJumpFromAgentIsChecked: the jump host an agent answers goes into
// ssh's argv on the operator's machine, so a hostile or broken agent's value
// is refused like a bad --jump; over the Unix socket it is not used at all.
func TestSSHJumpFromAgentIsChecked(t *testing.T) {
	t.Setenv(envSSHJump, "")
	for _, bad := range []string{"-oProxyCommand=touch /tmp/pwn", "-J", "a@b -oX", "root@host\n-oX"} {
		if got, err := sshJump("", false, "https://agent:8443", bad); err == nil {
			t.Errorf("agent jump host %q accepted as %q", bad, got)
		}
	}
	if got, err := sshJump("", false, "unix:///run/agentd/agentd.sock", "-oProxyCommand=x"); err != nil || got != "" {
		t.Errorf("over the socket: %q %v, want no jump host", got, err)
	}
	if got, err := sshJump("", false, "https://agent:8443", "root@pve1.lan"); err != nil || got != "root@pve1.lan" {
		t.Errorf("good agent jump host: %q %v", got, err)
	}
}
