package cli

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// TestAttack18HostileHostKeyAnswer: the host key an agent answers is written
// into the known_hosts file ssh trusts; a key carrying a second line (an
// entry for every host, a @cert-authority line) or anything but one public
// key is refused, a good one is kept verbatim.
func TestAttack18HostileHostKeyAnswer(t *testing.T) {
	const good = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEbYDuLO4ZG1lE8Vf0vRxcC5e3RTZ0p2WSaeH1oV0wy3"
	if got, err := knownHostsLine("10.77.0.5", good); err != nil || got != "10.77.0.5 "+good+"\n" {
		t.Fatalf("good key: %q %v", got, err)
	}
	for _, bad := range []string{
		good + "\n* " + good,
		good + "\n@cert-authority * " + good,
		good + " comment",
		"ssh-ed25519",
		"ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIEbYDuLO4ZG1lE8Vf0vRxcC5e3RTZ0p2WSaeH1oV0wy3",
		"-oProxyCommand=sh x",
	} {
		if got, err := knownHostsLine("10.77.0.5", bad); err == nil {
			t.Errorf("host key %q accepted as %q", bad, got)
		}
	}
}

// hostileAgent serves, on a Unix socket, an agent that answers sandbox x
// as RUNNING at ip with name and host key key: what a compromised or
// impersonated agent can say to the CLI.
func hostileAgent(t *testing.T, name, ip, key string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "a.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	sb := api.Sandbox{ID: "sbx-1", Name: name, State: api.StateRunning, IP: ip}
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /v1/sandboxes/{ref}", func(w http.ResponseWriter, r *http.Request) { reply(w, sb) })
	mux.HandleFunc("POST /v1/sandboxes/{ref}/touch", func(w http.ResponseWriter, r *http.Request) { reply(w, sb) })
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, api.Status{SSH: api.SSHInfo{User: "agent", AuthorizedKeys: []string{"SHA256:x"}}})
	})
	mux.HandleFunc("GET /v1/sandboxes/{ref}/hostkey", func(w http.ResponseWriter, r *http.Request) {
		reply(w, api.HostKey{Sandbox: name, SandboxID: sb.ID, Key: key, Fingerprint: "SHA256:x"})
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	t.Setenv("AGENTLAB_ENDPOINT", "unix://"+sock)
	t.Setenv(envSSHJump, "")
	t.Setenv(envSSHIdentity, "")
}

// TestAttack18HostileAddressAnswer: the address an agent answers becomes
// ssh's destination and a known_hosts entry, so only an IP address gets
// through; a hostile sandbox name does not reach the known_hosts path, which
// ssh splits at spaces and expands (%d, ~).
func TestAttack18HostileAddressAnswer(t *testing.T) {
	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEbYDuLO4ZG1lE8Vf0vRxcC5e3RTZ0p2WSaeH1oV0wy3"
	for _, ip := range []string{"evil.example.com", "10.77.0.5\n* " + key, "-oProxyCommand=sh", "10.77.0.5 -oProxyCommand=sh", "fe80::1%eth0"} {
		hostileAgent(t, "x", ip, key)
		code, out := cli("sandbox", "ssh", "x", "--print")
		removeKnownHosts(t, out)
		if code == 0 || strings.Contains(out, "ssh -o") {
			t.Errorf("address %q: %d %q, want a refusal", ip, code, out)
		}
	}
	hostileAgent(t, "x %d ~root", "10.77.0.5", key)
	code, out := cli("sandbox", "ssh", "x", "--print", "--json")
	var got SSHCommand
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil {
		t.Fatalf("hostile name: %d %q %v", code, out, err)
	}
	defer os.Remove(got.KnownHostsFile)
	if strings.ContainsAny(filepath.Base(got.KnownHostsFile), " %~") {
		t.Fatalf("the known_hosts path carries the agent's name: %q", got.KnownHostsFile)
	}
	if b, err := os.ReadFile(got.KnownHostsFile); err != nil || string(b) != "10.77.0.5 "+key+"\n" {
		t.Fatalf("known_hosts: %q %v", b, err)
	}
}
