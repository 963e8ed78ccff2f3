package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestStopAllWithDev: stop --all names what it would stop and stops nothing
// without --yes; --profile and --filter narrow it; a stop Proxmox refuses is
// reported by name with exit 1 while the others are stopped, in text and in
// --json ({stopped, failed}).
func TestStopAllWithDev(t *testing.T) {
	d := startDevConfig(t)
	for _, n := range []string{"a1", "a2", "keep"} {
		p := "yolo-ephemeral"
		if n == "keep" {
			p = "interactive-dev"
		}
		if code, out := cli("sandbox", "create", "--name", n, "--profile", p, "--quiet"); code != 0 {
			t.Fatalf("create %s: exit %d %s", n, code, out)
		}
	}
	state := func(name string) string {
		t.Helper()
		code, out := cli("sandbox", "show", name, "--json")
		var sb struct{ State string }
		if code != 0 || json.Unmarshal([]byte(out), &sb) != nil {
			t.Fatalf("show %s: exit %d %s", name, code, out)
		}
		return sb.State
	}
	code, out := cli("sandbox", "stop", "--all", "--profile", "yolo-ephemeral")
	if code != exitUsage || !strings.Contains(out, "would stop 2 sandbox(es): ") || !strings.Contains(out, "a1") || !strings.Contains(out, "a2") || strings.Contains(out, "keep") {
		t.Fatalf("stop --all without --yes: exit %d %s", code, out)
	}
	if state("a1") != "RUNNING" || state("a2") != "RUNNING" {
		t.Fatal("stop --all without --yes stopped something")
	}
	// Proxmox refuses a2's shutdown (and its hard stop).
	code, out = cli("sandbox", "show", "a2", "--json")
	var a2 struct{ VMID int }
	if code != 0 || json.Unmarshal([]byte(out), &a2) != nil {
		t.Fatalf("show a2: %s", out)
	}
	if err := d.Sim.FailEndpoint("POST", fmt.Sprintf("/qemu/%d/status/", a2.VMID), 500, "injected: VM is locked (backup)"); err != nil {
		t.Fatal(err)
	}
	code, out = cli("sandbox", "stop", "--all", "--profile", "yolo-ephemeral", "--yes", "--json")
	if code != exitError {
		t.Fatalf("stop --all with a failure: exit %d, want %d: %s", code, exitError, out)
	}
	var res stopAllResult
	if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &res); err != nil {
		t.Fatalf("--json output: %v: %s", err, out)
	}
	if len(res.Stopped) != 1 || res.Stopped[0].Name != "a1" || len(res.Failed) != 1 || res.Failed[0].Sandbox != "a2" || !strings.Contains(res.Failed[0].Error, "injected") {
		t.Fatalf("stop --all result: %+v", res)
	}
	if !strings.Contains(out, "could not stop 1 of 2 sandbox(es): a2: ") {
		t.Fatalf("the failure is not named: %s", out)
	}
	d.Sim.ClearFaults()
	if state("a1") != "STOPPED" || state("a2") != "RUNNING" || state("keep") != "RUNNING" {
		t.Fatalf("after stop --all: a1 %s a2 %s keep %s", state("a1"), state("a2"), state("keep"))
	}
	code, out = cli("sandbox", "stop", "--all", "--filter", "name=a2", "--yes")
	if code != 0 || !strings.Contains(out, "a2") || !strings.Contains(out, "STOPPED") || state("a2") != "STOPPED" || state("keep") != "RUNNING" {
		t.Fatalf("stop --all --filter name=a2: exit %d %s", code, out)
	}
	if code, out := cli("sandbox", "stop", "--all", "--profile", "yolo-ephemeral", "--yes"); code != 0 || !strings.Contains(out, "nothing stopped") {
		t.Fatalf("stop --all with nothing running: exit %d %s", code, out)
	}
}
