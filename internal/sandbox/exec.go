package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// Exec defaults and bounds.
const (
	execDefaultTimeout = 60 * time.Second
	execMaxTimeout     = time.Hour
)

// checkExec validates an exec request and returns its timeout.
func checkExec(req api.ExecRequest) (time.Duration, error) {
	if len(req.Command) == 0 || req.Command[0] == "" {
		return 0, api.FieldError("command", "is required: the program and its arguments, e.g. [\"uname\",\"-a\"]")
	}
	for i, a := range req.Command {
		if strings.ContainsRune(a, 0) || !utf8.ValidString(a) {
			return 0, api.FieldError("command", "argument %d contains a NUL byte or invalid UTF-8", i)
		}
	}
	if len(req.Stdin) > api.ExecMaxStdin {
		return 0, api.FieldError("stdin", "is %d bytes; the guest agent takes at most %d", len(req.Stdin), api.ExecMaxStdin)
	}
	if !utf8.ValidString(req.Stdin) {
		return 0, api.FieldError("stdin", "must be UTF-8 text (the guest agent's input-data is a string)")
	}
	switch {
	case req.TimeoutSeconds < 0 || time.Duration(req.TimeoutSeconds)*time.Second > execMaxTimeout:
		return 0, api.FieldError("timeout_seconds", "must be between 1 and %d (0 takes the default, %d)",
			int(execMaxTimeout/time.Second), int(execDefaultTimeout/time.Second))
	case req.TimeoutSeconds == 0:
		return execDefaultTimeout, nil
	}
	return time.Duration(req.TimeoutSeconds) * time.Second, nil
}

// Exec runs a program in a RUNNING sandbox through the QEMU guest agent and
// waits until it exits or the timeout ends. It needs no network path to the
// guest. The proof and the start of the process happen under the sandbox's
// lock; the wait does not hold it, so a stop or destroy is never blocked
// behind a long command (the process then dies with the VM). Exec counts as
// activity for idle stop.
func (m *Manager) Exec(ctx context.Context, ref string, req api.ExecRequest) (*api.ExecResult, error) {
	timeout, err := checkExec(req)
	if err != nil {
		return nil, err
	}
	sb, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	v, err := m.execStart(ctx, sb)
	if err != nil {
		unlock()
		return nil, err
	}
	start := m.now()
	pid, err := v.Exec(ctx, req.Command, req.Stdin)
	if err == nil {
		now := m.now().UTC()
		sb.LastUsedAt = &now
		if serr := m.store.Save(ctx, sb, sb.State, store.Event{Kind: "sandbox.exec",
			Message: fmt.Sprintf("ran %q through the guest agent (pid %d)", req.Command[0], pid)}); serr != nil {
			m.opts.Log.Warn("could not record exec", "sandbox_id", sb.ID, "err", serr)
		}
	}
	unlock()
	if err != nil {
		return nil, guestError("run a command in", sb, err)
	}
	res := &api.ExecResult{PID: pid}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for wait := 25 * time.Millisecond; ; wait = min(wait*2, time.Second) {
		st, err := v.ExecStatus(wctx, pid)
		if err != nil && wctx.Err() == nil {
			return nil, guestError("read the command's status in", sb, err)
		}
		if err == nil && st.Exited {
			res.Exited, res.ExitCode, res.Signal = true, st.ExitCode, st.Signal
			res.Stdout, res.Stderr = st.OutData, st.ErrData
			res.StdoutTruncated, res.StderrTruncated = st.OutTruncated, st.ErrTruncated
			break
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			res.TimedOut = true
		case <-time.After(wait):
			continue
		}
		break
	}
	res.DurationMS = float64(m.now().Sub(start).Microseconds()) / 1000
	return res, nil
}

// execStart proves the VM of a RUNNING sandbox; the caller holds the lock.
func (m *Manager) execStart(ctx context.Context, sb *store.Sandbox) (*owner.VM, error) {
	if sb.State != api.StateRunning {
		err := invalidState(sb, "run a command in", api.StateRunning)
		if sb.State == api.StateStopped || sb.State == api.StateSuspended {
			err.(*api.Error).Message += "; start it first"
		}
		return nil, err
	}
	v, err := m.vm(ctx, sb)
	if errors.Is(err, owner.ErrNotOwned) {
		return nil, m.lost(ctx, sb, "run a command in", err)
	}
	if err == nil && v == nil {
		err = fmt.Errorf("VM %d does not exist", sb.VMID)
	}
	if err != nil {
		return nil, proxmoxError("run a command in", sb, err)
	}
	return v, nil
}

// guestError maps a guest agent failure to an API error.
func guestError(op string, sb *store.Sandbox, err error) error {
	switch {
	case errors.Is(err, pve.ErrExecFailed):
		return api.Errorf(http.StatusUnprocessableEntity, api.CodeExecFailed, "sandbox %s: %v", sb.Name, err)
	case errors.Is(err, pve.ErrAgentNotConfigured), errors.Is(err, pve.ErrAgentNotRunning), errors.Is(err, pve.ErrAgentTimeout):
		return api.Errorf(http.StatusConflict, api.CodeGuestAgent,
			"cannot %s sandbox %s: its QEMU guest agent does not answer (%v); is qemu-guest-agent installed and running in the template?", op, sb.Name, err)
	}
	return proxmoxError(op, sb, err)
}
