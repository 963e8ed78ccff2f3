package agent_test

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// TestWaitSettledLongPoll: one GET ?wait=settled answers a create only once
// it settled (at realistic task times, where it takes a while), an unsettled
// one after its timeout with the current view, and a bad wait or timeout is
// a field error naming it.
func TestWaitSettledLongPoll(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Speed: 40})
	ctx := tctx(t)
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "lp", Profile: "yolo-ephemeral"}); err != nil {
		t.Fatal(err)
	}
	before, _ := d.Sim.RequestCount()
	sb, err := c.SandboxSettled(ctx, "lp", 25*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := d.Sim.RequestCount()
	if sb.State != api.StateRunning || sb.IP == "" {
		t.Fatalf("one long-poll answered %s (ip %q), want RUNNING with its address", sb.State, sb.IP)
	}
	if after == before {
		t.Fatalf("the create had finished before the long-poll was asked (no Proxmox request in between): the test proves nothing")
	}

	// Stuck at start: the long-poll answers after its timeout, still settling.
	d.Sim.HangTask("qmstart", "")
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "stuck", Profile: "yolo-ephemeral"}); err != nil {
		t.Fatal(err)
	}
	sb, err = c.SandboxSettled(ctx, "stuck", 300*time.Millisecond)
	if err != nil || !sb.State.Settling() {
		t.Fatalf("timed-out long-poll: %v %+v", err, sb)
	}
	for q, field := range map[string]string{"wait=running": "wait", "wait=settled&timeout=5": "timeout",
		"wait=settled&timeout=-1s": "timeout", "timeout=1s": "timeout"} {
		err := c.Do(ctx, "GET", "/v1/sandboxes/stuck?"+q, nil, nil)
		if ae, ok := err.(*api.Error); !ok || ae.Status != http.StatusBadRequest || ae.Field != field {
			t.Errorf("?%s: %v, want a 400 on %s", q, err, field)
		}
	}

	// Shutdown answers a long-poll at once instead of holding the server.
	var answered atomic.Pointer[api.Sandbox]
	polled := make(chan error, 1)
	go func() {
		sb, err := c.SandboxSettled(ctx, "stuck", 25*time.Second)
		answered.Store(sb)
		polled <- err
	}()
	time.Sleep(200 * time.Millisecond) // let the poll reach the server
	closed := make(chan struct{})
	go func() { d.Close(); close(closed) }()
	select {
	case err := <-polled:
		if err != nil || answered.Load() == nil || !answered.Load().State.Settling() {
			t.Fatalf("long-poll at shutdown: %v %+v", err, answered.Load())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("shutdown did not answer the long-poll (it waits up to 25 s)")
	}
	select {
	case <-closed:
	case <-time.After(15 * time.Second):
		t.Fatal("the agent did not shut down while a long-poll was open")
	}
}

// TestWaitSandboxFollowsDestroy: a wait by name on a forced destroy of a
// sandbox in flight ends at DESTROYED, where the name no longer resolves.
func TestWaitSandboxFollowsDestroy(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Speed: 40})
	ctx := tctx(t)
	d.Sim.HangTask("qmstart", "")
	c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "gone", Profile: "yolo-ephemeral"})
	for sb, _ := c.Sandbox(ctx, "gone"); sb.Step != "start"; sb, _ = c.Sandbox(ctx, "gone") {
		time.Sleep(20 * time.Millisecond)
	}
	sb, err := c.Destroy(ctx, "gone", true)
	if err != nil || sb.State != api.StateDestroying {
		t.Fatalf("destroy --force in flight: %v %+v", err, sb)
	}
	d.Sim.ReleaseHungTasks()
	if sb, err := c.WaitSandbox(ctx, "gone", time.Second); err != nil || sb.State != api.StateDestroyed {
		t.Fatalf("wait for destroy: %v %+v", err, sb)
	}
}
