package agent_test

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestMetricsAfterLifecycle scrapes /metrics after create, stop, start,
// destroy and a failed create, and checks the series and their counts.
func TestMetricsAfterLifecycle(t *testing.T) {
	var logs bytes.Buffer
	d, c := startDev(t, agent.DevOptions{Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	ctx := tctx(t)
	create(t, c, "m1")
	c.Stop(ctx, "m1")
	c.Start(ctx, "m1")
	c.WaitSandbox(ctx, "m1", 0)
	create(t, c, "m2")
	c.Destroy(ctx, "m2", false)
	d.Sim.FailTask("qmstart", "", "kvm: boom")
	bad, _ := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "m3", Profile: "yolo-ephemeral"})
	c.WaitSandbox(ctx, bad.Name, 0)
	d.Sim.ClearFaults()
	if _, err := d.Manager.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	d.Sim.Unavailable()
	if st, _ := c.Status(ctx); st.Proxmox.Reachable {
		t.Fatal("Proxmox reachable while down")
	}
	d.Sim.ClearFaults()
	if !strings.HasPrefix(d.Info.Metrics, "http://127.0.0.1:") {
		t.Fatalf("metrics URL %q", d.Info.Metrics)
	}
	if _, err := c.UpdateTeam(ctx, "default", api.UpdateTeamRequest{Quota: api.TeamQuota{Sandboxes: 10}}); err != nil {
		t.Fatal(err)
	}
	body := scrape(t, d.Info.Metrics)
	for _, want := range []string{
		// m1 and the FAILED m3 still hold a slot; m2 is destroyed.
		`agentd_team_usage{resource="sandboxes",team="default"} 2`,
		`agentd_team_quota{resource="sandboxes",team="default"} 10`,
		`agentd_sandboxes{state="RUNNING"} 1`,
		`agentd_sandboxes{state="DESTROYED"} 1`,
		`agentd_sandboxes{state="FAILED"} 1`,
		`agentd_sandbox_transitions_total{from="REQUESTED",to="PROVISIONING"} 3`,
		`agentd_sandbox_transitions_total{from="RUNNING",to="STOPPED"} 1`,
		`agentd_sandbox_transitions_total{from="STOPPED",to="BOOTING"} 1`,
		`agentd_sandbox_transitions_total{from="BOOTING",to="FAILED"} 1`,
		`agentd_provision_step_duration_seconds_count{step="clone"} 3`,
		`agentd_provision_step_duration_seconds_count{step="wait_for_ip"} 3`,
		`agentd_proxmox_errors_total{endpoint="/version",method="GET"} 1`,
		`agentd_loop_duration_seconds_count{loop="reconcile"}`,
		`agentd_idle_stops_total 0`,
		`agentd_artifact_bytes_received_total 0`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if !regexp.MustCompile(`agentd_proxmox_request_duration_seconds_count\{endpoint="/nodes/\{node\}/qemu/\{vmid\}/clone",method="POST"\} 3`).MatchString(body) {
		t.Error("no clone latency series with 3 requests")
	}
	// Logs carry request ids, sandbox ids and the failed task's UPID.
	l := logs.String()
	for _, want := range []string{`"request_id":"`, `"sandbox_id":"sbx-`, `"upid":"UPID:pve:`, `"msg":"provisioning failed"`} {
		if !strings.Contains(l, want) {
			t.Errorf("logs lack %s", want)
		}
	}
}
