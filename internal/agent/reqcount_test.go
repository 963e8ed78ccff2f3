package agent_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// coldCreateRequests creates one sandbox (after a warm-up create, so
// one-time reads such as the firewall group's are not counted) with the
// loops off and returns the Proxmox requests it made, in completion order.
func coldCreateRequests(t *testing.T) []pvesim.RequestLogEntry {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "requests.jsonl")
	_, c := startDev(t, agent.DevOptions{LogRequests: logPath, Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	for _, name := range []string{"warm", "cold"} {
		if name == "cold" {
			if err := os.Truncate(logPath, 0); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: "yolo-ephemeral"}); err != nil {
			t.Fatal(err)
		}
		if _, err := waitRunning(ctx, c, name); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []pvesim.RequestLogEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e pvesim.RequestLogEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("request log line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func describeRequest(e pvesim.RequestLogEntry) string {
	keys := make([]string, 0, len(e.Params))
	for k := range e.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var ps []string
	for _, k := range keys {
		v := fmt.Sprint(e.Params[k])
		if len(v) > 40 {
			v = v[:40] + "…"
		}
		ps = append(ps, k+"="+strings.ReplaceAll(v, "\n", `\n`))
	}
	return fmt.Sprintf("%-6s %s %s [%s]", e.Method, strings.TrimPrefix(e.Path, "/api2/json"), strings.Join(ps, " "), e.Status)
}

// TestColdCreateRequests lists the Proxmox requests of one cold create at
// zero task time and holds the figure issue 19 sets (≤ 13), so a step that
// starts re-reading what agentd already knows shows up here with its
// request named.
func TestColdCreateRequests(t *testing.T) {
	reqs := coldCreateRequests(t)
	var lines []string
	for i, e := range reqs {
		lines = append(lines, fmt.Sprintf("%2d %s", i+1, describeRequest(e)))
	}
	t.Logf("Proxmox requests of one cold create (%d):\n%s", len(reqs), strings.Join(lines, "\n"))
	if len(reqs) > 13 {
		t.Errorf("a cold create made %d Proxmox requests, more than the 13 of issue 19:\n%s", len(reqs), strings.Join(lines, "\n"))
	}
}
