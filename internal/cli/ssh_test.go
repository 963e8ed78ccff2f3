package cli

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// TestSandboxSSH runs sandbox ssh --print and sandbox hostkey against agentd
// dev: the simulated guest's key is pinned on first use, written to a 0600
// known_hosts file, kept when the guest is asked again, refused once it
// changed; --no-start names the state; a guest without a key needs
// --insecure-host-key.
func TestSandboxSSH(t *testing.T) {
	d := startDevConfig(t)
	if code, out := cli("sandbox", "create", "--name", "sshbox", "--profile", "yolo-ephemeral"); code != 0 {
		t.Fatalf("create: %d %s", code, out)
	}
	code, out := cli("sandbox", "ssh", "sshbox", "--print", "--json", "--", "sh", "-c", "echo 'hi there'")
	if code != 0 {
		t.Fatalf("ssh --print: %d %s", code, out)
	}
	var sc SSHCommand
	if err := json.Unmarshal([]byte(out), &sc); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	sb, err := d.Manager.Get(t.Context(), "sshbox")
	if err != nil {
		t.Fatal(err)
	}
	guestKey, _ := d.Sim.GuestFile(sb.VMID, pvesim.HostKeyPath)
	f := strings.Fields(string(guestKey))
	want := sb.IP + " " + f[0] + " " + f[1] + "\n"
	if sc.KnownHosts != want {
		t.Fatalf("known_hosts %q, want %q", sc.KnownHosts, want)
	}
	b, err := os.ReadFile(sc.KnownHostsFile)
	if err != nil || string(b) != want {
		t.Fatalf("known_hosts file %q: %q %v", sc.KnownHostsFile, b, err)
	}
	if fi, _ := os.Stat(sc.KnownHostsFile); fi.Mode().Perm() != 0o600 {
		t.Fatalf("known_hosts mode %v", fi.Mode())
	}
	t.Cleanup(func() { os.Remove(sc.KnownHostsFile) })
	wantCmd := "ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile=" + sc.KnownHostsFile +
		" -o GlobalKnownHostsFile=/dev/null -- agent@" + sb.IP + ` sh -c 'echo '\''hi there'\'''`
	if sc.Command != wantCmd {
		t.Fatalf("command\n%s\nwant\n%s", sc.Command, wantCmd)
	}
	// Plain --print with --jump: one shell-quoted line.
	code, out = cli("sandbox", "ssh", "sshbox", "--print", "--jump", "root@pve1.lan")
	if code != 0 || !strings.HasPrefix(out, "ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile=") ||
		!strings.HasSuffix(out, " -J root@pve1.lan -- agent@"+sb.IP+"\n") {
		t.Fatalf("ssh --print --jump: %d %q", code, out)
	}
	removeKnownHosts(t, out)
	code, out = cli("sandbox", "hostkey", "sshbox")
	if code != 0 || !strings.Contains(out, sc.Fingerprint) || !strings.Contains(out, "yes, the guest has it now") {
		t.Fatalf("hostkey: %d %s", code, out)
	}

	// A changed key is refused, by hostkey and by ssh.
	other := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEbYDuLO4ZG1lE8Vf0vRxcC5e3RTZ0p2WSaeH1oV0wy3 evil@x\n"
	d.Sim.SetGuestFile(sb.VMID, pvesim.HostKeyPath, []byte(other))
	for _, args := range [][]string{{"sandbox", "hostkey", "sshbox"}, {"sandbox", "ssh", "sshbox", "--print", "--insecure-host-key"}} {
		code, out = cli(args...)
		if code != 1 || !strings.Contains(out, "SSH host key changed") || !strings.Contains(out, sc.Fingerprint) || !strings.Contains(out, "host_key_changed") {
			t.Fatalf("%v with a changed key: %d %s", args, code, out)
		}
	}
	d.Sim.SetGuestFile(sb.VMID, pvesim.HostKeyPath, guestKey)

	// --no-start on a stopped sandbox names the state; the pin is still answered.
	if code, out = cli("sandbox", "stop", "sshbox"); code != 0 {
		t.Fatalf("stop: %d %s", code, out)
	}
	code, out = cli("sandbox", "ssh", "sshbox", "--no-start", "--print")
	if code != 1 || !strings.Contains(out, "sandbox sshbox is STOPPED and --no-start was given") {
		t.Fatalf("--no-start: %d %s", code, out)
	}
	code, out = cli("sandbox", "hostkey", "sshbox", "--json")
	if code != 0 || !strings.Contains(out, `"verified": false`) || !strings.Contains(out, sc.Fingerprint) {
		t.Fatalf("hostkey of a stopped sandbox: %d %s", code, out)
	}
	// Without --no-start, ssh starts it and the key is the pinned one.
	code, out = cli("sandbox", "ssh", "sshbox", "--print", "--json")
	if code != 0 || !strings.Contains(out, `"fingerprint": "`+sc.Fingerprint+`"`) {
		t.Fatalf("ssh starting the sandbox: %d %s", code, out)
	}
	var sc2 SSHCommand
	_ = json.Unmarshal([]byte(out), &sc2)
	os.Remove(sc2.KnownHostsFile)
	if s, _ := d.Manager.Get(t.Context(), "sshbox"); s.State != "RUNNING" {
		t.Fatalf("state after ssh: %s", s.State)
	}

	// A guest without a host key: refused unless --insecure-host-key.
	if code, out = cli("sandbox", "create", "--name", "nokey", "--profile", "yolo-ephemeral"); code != 0 {
		t.Fatalf("create: %d %s", code, out)
	}
	nk, _ := d.Manager.Get(t.Context(), "nokey")
	d.Sim.SetGuestFile(nk.VMID, pvesim.HostKeyPath, nil)
	code, out = cli("sandbox", "ssh", "nokey", "--print")
	if code != 1 || !strings.Contains(out, "has no /etc/ssh/ssh_host_ed25519_key.pub") || !strings.Contains(out, "--insecure-host-key") {
		t.Fatalf("no key: %d %s", code, out)
	}
	code, out = cli("sandbox", "ssh", "nokey", "--print", "--insecure-host-key")
	if code != 0 || !strings.Contains(out, "WARNING: host key not checked") ||
		!strings.Contains(out, "ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=/dev/null -- agent@"+nk.IP+"\n") {
		t.Fatalf("no key, --insecure-host-key: %d %s", code, out)
	}
	// Usage errors.
	for _, args := range [][]string{{"sandbox", "ssh", "sshbox", "--json"}, {"sandbox", "ssh"}, {"sandbox", "ssh", "sshbox", "--"}, {"sandbox", "ssh", "sshbox", "--jump", "a b"}} {
		if code, out = cli(args...); code != 2 {
			t.Fatalf("%v: %d %s", args, code, out)
		}
	}
}

func removeKnownHosts(t *testing.T, cmd string) {
	for _, f := range strings.Fields(cmd) {
		if p, ok := strings.CutPrefix(f, "UserKnownHostsFile="); ok {
			os.Remove(p)
		}
	}
}
