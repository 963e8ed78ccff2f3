package pvesim_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// agent/exec + agent/exec-status as qemu-server answers them over qga's
// guest-exec: a pid at once, exited 0 while running, then exitcode with the
// decoded output (absent when empty), truncation flags past the capture
// limit, and the pid forgotten after the exit was reported.
func TestAgentExecLikePVE(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	sim, err := pvesim.New(pvesim.Options{Fixtures: true, Now: clock, ExecOutputLimit: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	createVM(t, sim, `{"vmid":300,"name":"box","scsi0":"local-lvm:1","agent":"1"}`)
	exec := func(body, wantStatus string) int {
		t.Helper()
		status, resp := raw(t, sim, "POST", "/nodes/pve/qemu/300/agent/exec", body, true)
		if status != wantStatus {
			t.Fatalf("exec %s: %s %s", body, status, resp)
		}
		var r struct {
			Data struct {
				PID int `json:"pid"`
			} `json:"data"`
		}
		_ = json.Unmarshal([]byte(resp), &r)
		return r.Data.PID
	}
	statusOf := func(pid int) (string, string) {
		t.Helper()
		return raw(t, sim, "GET", "/nodes/pve/qemu/300/agent/exec-status?pid="+itoa(pid), "", true)
	}
	exec(`{"command":["echo","hi"]}`, "500 VM 300 is not running")
	status, body := raw(t, sim, "POST", "/nodes/pve/qemu/300/status/start", ``, true)
	if status != "200 OK" || waitTask(t, sim, body) != "OK" {
		t.Fatalf("start: %s %s", status, body)
	}
	exec(`{}`, "400 Parameter verification failed.")
	exec(`{"command":["nosuch"]}`, "500 Agent error: Failed to execute child process “nosuch” (No such file or directory)")

	pid := exec(`{"command":["sh","-c","echo out; echo 'to err' >&2; cat; exit 3"],"input-data":"from stdin"}`, "200 OK")
	if pid == 0 {
		t.Fatal("no pid")
	}
	if st, resp := statusOf(pid); st != "200 OK" || resp != `{"data":{"err-data":"to err\n","exitcode":3,"exited":1,"out-data":"out\nfrom stdin"}}` {
		t.Fatalf("exec-status: %s %s", st, resp)
	}
	if st, _ := statusOf(pid); st != "500 Agent error: Invalid parameter 'pid'" {
		t.Fatalf("second exec-status: %s", st)
	}

	pid = exec(`{"command":["sleep","5"]}`, "200 OK")
	if _, resp := statusOf(pid); resp != `{"data":{"exited":0}}` {
		t.Fatalf("running: %s", resp)
	}
	now = now.Add(5 * time.Second)
	if _, resp := statusOf(pid); resp != `{"data":{"exitcode":0,"exited":1}}` {
		t.Fatalf("after sleep: %s", resp)
	}

	pid = exec(`{"command":["seq","100"]}`, "200 OK")
	_, resp := statusOf(pid)
	if !strings.Contains(resp, `"out-truncated":1`) || strings.Contains(resp, "err-truncated") || !strings.Contains(resp, `"out-data":"1\n2\n3`) {
		t.Fatalf("truncation: %s", resp)
	}

	// A stop kills the guest's processes; the restarted agent does not know them.
	pid = exec(`{"command":["sleep","60"]}`, "200 OK")
	for _, op := range []string{"stop", "start"} {
		status, body := raw(t, sim, "POST", "/nodes/pve/qemu/300/status/"+op, ``, true)
		if status != "200 OK" || waitTask(t, sim, body) != "OK" {
			t.Fatalf("%s: %s %s", op, status, body)
		}
	}
	if st, _ := statusOf(pid); st != "500 Agent error: Invalid parameter 'pid'" {
		t.Fatalf("after restart: %s", st)
	}
	if len(pvesim.GuestCommands()) < 10 {
		t.Fatalf("guest commands: %v", pvesim.GuestCommands())
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
