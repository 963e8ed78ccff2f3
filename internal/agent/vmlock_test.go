package agent_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// TestForeignVMLockAnswersBusy: a Proxmox lock agentd did not take (a
// vzdump backup's lock=backup) on a sandbox's VM makes a session stop and a
// sandbox destroy answer 409 busy naming the lock, with nothing destroyed;
// the same requests succeed once the lock is gone. A backup can hold its lock
// for hours, and the requests used to wait for it (for up to five minutes,
// far past any client's patience) instead of answering.
func TestForeignVMLockAnswersBusy(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "ws", Size: "5G"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSession(ctx, api.CreateSessionRequest{Name: "s", Profile: "yolo-workspace", Workspace: "ws"}); err != nil {
		t.Fatal(err)
	}
	ses := resume(t, c, "s")
	sb, err := c.Sandbox(ctx, ses.Sandbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Sim.SetLock(sb.VMID, "backup"); err != nil {
		t.Fatal(err)
	}
	busy := func(what string, err error) {
		t.Helper()
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.CodeBusy || ae.Status != http.StatusConflict {
			t.Fatalf("%s on a VM locked by a backup: %v, want 409 busy", what, err)
		}
		if !strings.Contains(ae.Message, "locked (backup)") || !strings.Contains(ae.Message, sb.Name) {
			t.Fatalf("%s: %q does not name the sandbox and the lock", what, ae.Message)
		}
		if _, ok := vms(d)[sb.VMID]; !ok {
			t.Fatalf("%s: VM %d is gone although it was locked", what, sb.VMID)
		}
		// Refused before the destroy was journaled: nothing left to finish.
		if cur, err := c.Sandbox(ctx, sb.Name); err != nil || cur.State != api.StateRunning {
			t.Fatalf("%s: sandbox after the refusal: %+v %v, want it RUNNING", what, cur, err)
		}
	}
	_, err = c.StopSession(ctx, "s")
	busy("session stop", err)
	if cur, err := c.Session(ctx, "s"); err != nil || cur.Sandbox != sb.Name {
		t.Fatalf("session after the refused stop: %+v %v, want it still on %s", cur, err, sb.Name)
	}
	_, err = c.Destroy(ctx, sb.Name, true)
	busy("destroy --force", err)
	// Proxmox itself refuses a stop on the locked VM (check_lock): the same
	// 409 busy, not a 502.
	_, err = c.Stop(ctx, sb.Name)
	busy("sandbox stop", err)

	if err := d.Sim.SetLock(sb.VMID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StopSession(ctx, "s"); err != nil {
		t.Fatalf("session stop once the backup ended: %v", err)
	}
	if _, ok := vms(d)[sb.VMID]; ok {
		t.Fatalf("VM %d still exists after the session stop", sb.VMID)
	}
	if got, _ := c.Sandboxes(ctx, nil); len(got) != 0 {
		t.Fatalf("live sandboxes after the stop: %+v", got)
	}
	if w, err := c.Workspace(ctx, "ws"); err != nil || w.AttachedSandbox != "" {
		t.Fatalf("workspace after the stop: %+v %v, want it kept and released", w, err)
	}
}
