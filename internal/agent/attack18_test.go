package agent_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// TestAttack18RevertToSnapshotHoldingWorkspace: an operator re-takes "clean"
// in Proxmox (qm snapshot) while the workspace is plugged in, so the
// snapshot's config names the workspace volume. A rollback to it would roll
// the workspace back too (PVE rolls back every volume of the snapshot's
// config), and plug it in again behind the claim's back. Revert must refuse
// and keep the workspace's data and its attachment as they were.
func TestAttack18RevertToSnapshotHoldingWorkspace(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	sb := withWorkspace(t, c, "oob")
	pc := pveClient(t, d)
	wsVol := holderVol(t, d, c, "ws")
	write(t, d, wsVol, "/work/result.txt", "old")
	if err := pc.DeleteSnapshot(ctx, sb.VMID, "clean"); err != nil {
		t.Fatal(err)
	}
	if err := pc.CreateVMSnapshot(ctx, sb.VMID, "clean", "taken by hand", false); err != nil {
		t.Fatal(err)
	}
	write(t, d, wsVol, "/work/result.txt", "new")

	_, err := c.Revert(ctx, "oob", api.RevertRequest{})
	wantCode(t, err, http.StatusConflict, api.CodeAttached)
	if !strings.Contains(err.Error(), "clean") || !strings.Contains(err.Error(), wsVol) {
		t.Fatalf("the refusal names neither the snapshot nor the volume: %v", err)
	}
	if got := read(t, d, wsVol, "/work/result.txt"); got != "new" {
		t.Fatalf("revert rolled the workspace back: %q", got)
	}
	vm := vms(d)[sb.VMID]
	if volOf(vm.Config["scsi1"]) != wsVol {
		t.Fatalf("workspace no longer attached after the refused revert: %v", vm.Config)
	}
	if got, err := c.WaitSandbox(ctx, "oob", 10*time.Millisecond); err != nil || got.State != api.StateRunning {
		t.Fatalf("after the refused revert: %+v %v", got, err)
	}
}

// TestAttack18RestoreSnapshotHoldingWorkspace: the same for a snapshot of
// the sandbox's own list taken by hand while the workspace was attached,
// restored after the workspace was detached: the rollback would plug the
// workspace back into the sandbox (attached while the database says it is
// free) with its old contents.
func TestAttack18RestoreSnapshotHoldingWorkspace(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	sb := withWorkspace(t, c, "oob2")
	pc := pveClient(t, d)
	wsVol := holderVol(t, d, c, "ws")
	write(t, d, wsVol, "/work/result.txt", "old")
	if err := pc.CreateVMSnapshot(ctx, sb.VMID, "byhand", "", false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DetachWorkspace(ctx, "ws"); err != nil {
		t.Fatal(err)
	}
	write(t, d, wsVol, "/work/result.txt", "new")

	_, err := c.RestoreSandboxSnapshot(ctx, "oob2", "byhand")
	wantCode(t, err, http.StatusConflict, api.CodeAttached)
	if got := read(t, d, wsVol, "/work/result.txt"); got != "new" {
		t.Fatalf("restore rolled the workspace back: %q", got)
	}
	for k, v := range vms(d)[sb.VMID].Config {
		if strings.Contains(v, wsVol) {
			t.Fatalf("restore plugged the detached workspace in again as %s = %s", k, v)
		}
	}
	if w, err := c.Workspace(ctx, "ws"); err != nil || w.AttachedSandbox != "" {
		t.Fatalf("workspace after the refused restore: %+v %v", w, err)
	}
}

// TestAttack18StopOfHibernatedKeepsLeaseCredit: the lease stands still while
// a sandbox is hibernated. Stopping a hibernated sandbox (to free its vmstate
// volume) must not hand it back its pre-hibernation deadline: hibernated
// with 1h left, stopped after 5h asleep, it still has that hour, and lease
// GC must not destroy it at once.
func TestAttack18StopOfHibernatedKeepsLeaseCredit(t *testing.T) {
	d, c, clk, _ := startLoopsDev(t)
	ctx := tctx(t)
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "sleeper", Profile: "yolo-ephemeral", TTL: "1h"}); err != nil {
		t.Fatal(err)
	}
	if sb, err := c.WaitSandbox(ctx, "sleeper", 10*time.Millisecond); err != nil || sb.State != api.StateRunning {
		t.Fatalf("%+v %v", sb, err)
	}
	if _, err := c.Hibernate(ctx, "sleeper"); err != nil {
		t.Fatal(err)
	}
	clk.Add(5 * time.Hour)
	if err := d.Manager.LeaseGC(ctx); err != nil {
		t.Fatal(err)
	}
	if st := state(t, c, "sleeper"); st != api.StateSuspended {
		t.Fatalf("hibernated sandbox reaped while its lease stood still: %s", st)
	}
	if _, err := c.Stop(ctx, "sleeper"); err != nil {
		t.Fatal(err)
	}
	sb, err := c.WaitSandbox(ctx, "sleeper", 10*time.Millisecond)
	if err != nil || sb.State != api.StateStopped {
		t.Fatalf("stop of the hibernated sandbox: %+v %v", sb, err)
	}
	if sb.LeaseExpiresAt == nil || sb.LeaseExpiresAt.Sub(clk.Now()) < 59*time.Minute {
		t.Fatalf("stopped after 5h hibernated with 1h left, the lease ends at %v (now %v)", sb.LeaseExpiresAt, clk.Now())
	}
	if err := d.Manager.LeaseGC(ctx); err != nil {
		t.Fatal(err)
	}
	if st := state(t, c, "sleeper"); st != api.StateStopped {
		t.Fatalf("lease GC right after the stop: %s", st)
	}
}
