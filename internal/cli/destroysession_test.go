package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

// TestDestroySessionSandboxNeedsYes: a session's current sandbox is destroyed
// only with --yes (usage error, exit 2, nothing destroyed, saying the session
// resumes a new one); other sandboxes need no --yes.
func TestDestroySessionSandboxNeedsYes(t *testing.T) {
	d := startDevConfig(t)
	if code, out := cli("session", "create", "--name", "bob", "--profile", "yolo-workspace", "--workspace", "new:bob", "--workspace-size", "10G"); code != 0 {
		t.Fatalf("session create: %d %s", code, out)
	}
	if code, out := cli("session", "resume", "bob"); code != 0 {
		t.Fatalf("session resume: %d %s", code, out)
	}
	c, err := client.New(client.Config{Endpoint: d.Info.Endpoint, Token: d.Info.Token, CACert: d.Info.CACert})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Session(context.Background(), "bob")
	if err != nil || s.Sandbox == "" {
		t.Fatalf("session bob: %+v %v", s, err)
	}
	code, out := cli("sandbox", "destroy", s.Sandbox)
	if code != exitUsage || !strings.Contains(out, `current sandbox of session "bob"`) || !strings.Contains(out, "agentd session resume bob") || !strings.Contains(out, "--yes") {
		t.Fatalf("destroy without --yes: exit %d, %q", code, out)
	}
	if sb, err := c.Sandbox(context.Background(), s.Sandbox); err != nil || sb.State != "RUNNING" {
		t.Fatalf("refused destroy touched the sandbox: %+v %v", sb, err)
	}
	if code, out := cli("sandbox", "destroy", s.Sandbox, "--yes"); code != 0 {
		t.Fatalf("destroy --yes: exit %d, %q", code, out)
	}
	if code, out := cli("session", "resume", "bob"); code != 0 {
		t.Fatalf("session resume after destroy: exit %d, %q", code, out)
	}
	// A sandbox of no session: no --yes needed.
	if code, out := cli("sandbox", "create", "--name", "plain", "--profile", "yolo-ephemeral", "--ttl", "1h"); code != 0 {
		t.Fatalf("create: %d %s", code, out)
	}
	if code, out := cli("sandbox", "destroy", "plain"); code != 0 {
		t.Fatalf("destroy plain: exit %d, %q", code, out)
	}
}

// TestDevIdleStopOff: agentd dev has no conntrack of simulated SSH sessions:
// idle stop is off (no error each run) and status says why.
func TestDevIdleStopOff(t *testing.T) {
	d := startDevConfig(t)
	if code, out := cli("sandbox", "create", "--name", "idle", "--profile", "yolo-ephemeral", "--ttl", "1h"); code != 0 {
		t.Fatalf("create: %d %s", code, out)
	}
	if err := d.Manager.IdleStop(context.Background()); err != nil {
		t.Fatalf("IdleStop in dev: %v", err)
	}
	if code, out := cli("status"); code != 0 || !strings.Contains(out, "off in agentd dev") {
		t.Fatalf("status: exit %d, %q", code, out)
	}
}
