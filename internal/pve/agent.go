package pve

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
)

// ExecStatus is agent/exec-status of one process. PVE passes qga's answer
// through: exited is 0/1 (booleans on some versions), exitcode and signal
// are present only once it exited, out-data/err-data are already decoded
// from qga's base64 and absent when empty. go-proxmox's AgentExecStatus
// declares signal a bool and cannot decode a real signal number, so the
// answer is decoded here.
type ExecStatus struct {
	Exited       bool
	ExitCode     *int
	Signal       *int
	OutData      string
	ErrData      string
	OutTruncated bool
	ErrTruncated bool
}

// flag decodes PVE's booleans, which arrive as 0/1, true/false or "1".
type flag bool

func (f *flag) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case "1", "true", `"1"`, `"true"`:
		*f = true
	case "0", "false", `"0"`, `"false"`, "null", `""`:
		*f = false
	default:
		return fmt.Errorf("not a boolean: %s", b)
	}
	return nil
}

// AgentExec starts argv in the guest through the QEMU guest agent
// (agent/exec, qga guest-exec with captured output) and returns the guest's
// pid. stdin (at most 64 KiB, PVE's limit on input-data) is the process's
// standard input; PVE base64-encodes it for the agent. The request returns
// at once: the process runs on.
func (c *Client) AgentExec(ctx context.Context, vmid int, argv []string, stdin string) (int, error) {
	op := fmt.Sprintf("run %q in the guest of VM %d", argv[0], vmid)
	body := map[string]any{"command": argv}
	if stdin != "" {
		body["input-data"] = stdin
	}
	var out struct {
		PID json.Number `json:"pid"`
	}
	if err := c.api.Post(ctx, c.vmPath(vmid, "/agent/exec"), body, &out); err != nil {
		return 0, wrap(op, err)
	}
	pid, err := strconv.Atoi(out.PID.String())
	if err != nil || pid <= 0 {
		return 0, &Error{Op: op, Msg: fmt.Sprintf("the agent answered no pid (%q)", out.PID)}
	}
	return pid, nil
}

// AgentExecStatus reads the state of a process AgentExec started. Once it
// reported the exit, qga forgets the pid: asking again is ErrNotFound, as
// is a pid from before a VM restart.
func (c *Client) AgentExecStatus(ctx context.Context, vmid, pid int) (*ExecStatus, error) {
	var raw struct {
		Exited       flag   `json:"exited"`
		ExitCode     *int   `json:"exitcode"`
		Signal       *int   `json:"signal"`
		OutData      string `json:"out-data"`
		ErrData      string `json:"err-data"`
		OutTruncated flag   `json:"out-truncated"`
		ErrTruncated flag   `json:"err-truncated"`
	}
	path := c.vmPath(vmid, "/agent/exec-status?pid="+strconv.Itoa(pid))
	if err := c.api.Get(ctx, path, &raw); err != nil {
		return nil, wrap(fmt.Sprintf("get status of guest process %d of VM %d", pid, vmid), err)
	}
	return &ExecStatus{Exited: bool(raw.Exited), ExitCode: raw.ExitCode, Signal: raw.Signal, OutData: raw.OutData,
		ErrData: raw.ErrData, OutTruncated: bool(raw.OutTruncated), ErrTruncated: bool(raw.ErrTruncated)}, nil
}
