package cli

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
)

// TestCrashRecovery runs `agentd sim` and `agentd serve` as separate
// processes, starts 20 creates, kills agentd with SIGKILL mid-way, restarts
// it, and checks after a reconcile: no VM without a row, every sandbox
// running or terminal, none stuck past the provisioning timeout. It then stops
// agentd with SIGTERM during another batch and checks a clean, quick exit.
func TestCrashRecovery(t *testing.T) {
	bin := buildAgentd(t)
	dir, err := os.MkdirTemp("", "crash") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	local := filepath.Join(dir, "pve-local")

	sim := exec.Command(bin, "sim", "--addr", "127.0.0.1:0", "--realistic", "--speed", "10",
		"--ca-file", filepath.Join(dir, "pve.pem"), "--local-dir", local)
	out, _ := sim.StdoutPipe()
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Process.Kill(); _ = sim.Wait() })
	env := map[string]string{}
	sc := bufio.NewScanner(out)
	for len(env) < 6 && sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		env[k] = v
	}
	i := strings.LastIndex(env["PVE_TOKEN"], "=")
	tokenID, secret := env["PVE_TOKEN"][:i], env["PVE_TOKEN"][i+1:]

	profiles := filepath.Join(dir, "profiles")
	os.MkdirAll(profiles, 0o755)
	ents, _ := profile.Defaults.ReadDir("defaults")
	for _, e := range ents {
		b, _ := profile.Defaults.ReadFile("defaults/" + e.Name())
		os.WriteFile(filepath.Join(profiles, e.Name()), b, 0o644)
	}
	os.WriteFile(filepath.Join(dir, "secret"), []byte(secret+"\n"), 0o600)
	cfgPath := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`state_dir: %s/state
socket_path: %s/agentd.sock
profiles_dir: %s
proxmox_url: %s
proxmox_token_id: %s
proxmox_token_secret_file: %s/secret
proxmox_node: pve
proxmox_ca_file: %s/pve.pem
snippets_dir: %s/snippets
provisioning_timeout: 30s
shutdown_timeout: 2s
reconcile_interval: 1s
lease_gc_interval: 1s
guest_listen: 127.0.0.1:0
guest_check_source_ip: false
manage_nft_sets: false
metrics_listen: 127.0.0.1:0
secrets_dir: %s/secrets
secrets_key_file: %s/secrets/age.key
`, dir, dir, profiles, env["PVE_URL"], tokenID, dir, dir, local, dir, dir)), 0o600)

	serve := func() *exec.Cmd {
		cmd := exec.Command(bin, "serve", "--config", cfgPath)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	c, err := client.New(client.Config{Endpoint: "unix://" + filepath.Join(dir, "agentd.sock")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	waitUp := func() {
		for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
			if _, err := c.Status(ctx); err == nil {
				return
			}
			if time.Since(start) > 15*time.Second {
				t.Fatal("agentd serve did not come up")
			}
		}
	}
	agentd := serve()
	waitUp()
	for n := 0; n < 20; n++ {
		if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: fmt.Sprintf("c%02d", n), Profile: "yolo-ephemeral"}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(700 * time.Millisecond) // mid-way: clones and starts in flight
	if err := agentd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = agentd.Wait()

	agentd = serve()
	t.Cleanup(func() { _ = agentd.Process.Kill(); _ = agentd.Wait() })
	waitUp()
	for n := 0; n < 20; n++ {
		sb, err := c.WaitSandbox(ctx, fmt.Sprintf("c%02d", n), 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if sb.State != api.StateRunning && !sb.State.Terminal() {
			t.Fatalf("%s is %s after recovery", sb.Name, sb.State)
		}
		if sb.State != api.StateRunning {
			t.Logf("%s ended %s: %s", sb.Name, sb.State, sb.Error)
		}
	}
	rep, err := c.Reconcile(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Orphans) != 0 {
		t.Fatalf("orphans after recovery: %+v", rep.Orphans)
	}
	// Every VM in Proxmox belongs to a live row.
	pem, _ := os.ReadFile(filepath.Join(dir, "pve.pem"))
	pc, err := pve.New(pve.Config{URL: env["PVE_URL"], TokenID: tokenID, Secret: secret, Node: "pve", CAPEM: pem})
	if err != nil {
		t.Fatal(err)
	}
	res, err := pc.Resources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := c.Sandboxes(ctx, nil)
	live := map[int]bool{}
	for _, sb := range rows {
		live[sb.VMID] = sb.State == api.StateRunning
	}
	for _, r := range res {
		if r.VMID != 9000 && !live[r.VMID] {
			t.Fatalf("VM %d (%s) has no running sandbox row", r.VMID, r.Name)
		}
	}
	// States are not enough: every running sandbox's VM carries the whole
	// configuration, however far its provisioning had got when killed.
	for _, sb := range rows {
		if sb.State != api.StateRunning {
			continue
		}
		cfg, err := pc.Config(ctx, sb.VMID)
		if err != nil {
			t.Fatal(err)
		}
		get := func(k string) string { v, _ := cfg[k].(string); return v }
		_, fw, err := pc.VMFirewallRules(ctx, sb.VMID)
		for what, ok := range map[string]bool{
			"tag":                 strings.Contains(";"+get("tags")+";", ";agentlab;"),
			"description proof":   strings.Contains(get("description"), "agentlab-sandbox-id: "+sb.ID) && strings.Contains(get("description"), "agentlab-instance: "),
			"cicustom":            strings.Contains(get("cicustom"), "agentlab-"+sb.ID+".yaml"),
			"net0 with firewall":  strings.Contains(get("net0"), "bridge=vmbr1") && strings.Contains(get("net0"), "firewall=1"),
			"root disk of 40 GiB": strings.Contains(get("scsi0"), "size=40G"),
			"VM firewall on":      err == nil && fmt.Sprint(fw["enable"]) == "1",
		} {
			if !ok {
				t.Fatalf("%s (VM %d) after kill -9 and resume lacks its %s: %v", sb.Name, sb.VMID, what, cfg)
			}
		}
	}

	// SIGTERM during work: a clean exit in seconds, state intact.
	for n := 0; n < 5; n++ {
		c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: fmt.Sprintf("t%d", n), Profile: "yolo-ephemeral"})
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	agentd.Process.Signal(syscall.SIGTERM)
	if err := agentd.Wait(); err != nil {
		t.Fatalf("agentd did not exit cleanly on SIGTERM: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("SIGTERM took %v", took)
	}
	agentd = serve()
	waitUp()
	for n := 0; n < 5; n++ {
		if sb, err := c.WaitSandbox(ctx, fmt.Sprintf("t%d", n), 100*time.Millisecond); err != nil || sb.State != api.StateRunning {
			t.Fatalf("t%d after SIGTERM and restart: %+v %v", n, sb, err)
		}
	}

	// The host commands against the same config: render sees the running
	// sandboxes' addresses; apply loads the ruleset (in a network namespace of
	// this test, not the machine's) and the security groups; check names the
	// missing bridge with its fix.
	sb0, _ := c.Sandbox(ctx, "c00")
	out1, err := exec.Command(bin, "host", "network", "render", "--config", cfgPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out1), "table inet agentlab") || !strings.Contains(string(out1), sb0.IP) {
		t.Fatalf("render: %v\n%s", err, out1)
	}
	ns := fmt.Sprintf("agentd-apply-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	for i := 0; i < 2; i++ { // twice: apply is idempotent
		out2, err := exec.Command("ip", "netns", "exec", ns, bin, "host", "network", "apply", "--skip-groups", "--config", cfgPath).CombinedOutput()
		if err != nil || !strings.Contains(string(out2), "tables bridge agentlab and inet agentlab loaded") {
			t.Fatalf("apply: %v\n%s", err, out2)
		}
		out2, err = exec.Command(bin, "host", "network", "apply", "--skip-nft", "--config", cfgPath).CombinedOutput()
		if err != nil || !strings.Contains(string(out2), "security groups up to date") {
			t.Fatalf("apply groups: %v\n%s", err, out2)
		}
	}
	if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "set", "inet", "agentlab", "nat_hosts").CombinedOutput(); err != nil || !strings.Contains(string(out), sb0.IP) {
		t.Fatalf("nat_hosts after apply: %v\n%s", err, out)
	}
	out3, err := exec.Command(bin, "host", "check", "--config", cfgPath).CombinedOutput()
	if err == nil || !strings.Contains(string(out3), "fail  bridge") || !strings.Contains(string(out3), "fix: add the stanza") ||
		!strings.Contains(string(out3), "ok    token_privileges") {
		t.Fatalf("host check: %v\n%s", err, out3)
	}
}
