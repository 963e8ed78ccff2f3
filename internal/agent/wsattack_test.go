package agent_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/workspace"
)

// migrateMidCrash journals a move of w to pve2 and starts its migration (a
// task of dur), then restarts agentd while the task still runs: what an
// agentd killed mid-migration finds when it comes back. It returns the
// new client and the migration's result.
func migrateMidCrash(t *testing.T, d *agent.Dev, holder int, dur time.Duration) (*client.Client, <-chan error) {
	t.Helper()
	ctx := tctx(t)
	ws, err := d.Agent.Store.LookupWorkspace(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	journalMove(t, d, "w", "pve2", ws.Storage)
	d.Sim.SlowTask("qmigrate", "", dur)
	done := make(chan error, 1)
	go func() { done <- pveClient(t, d).On("pve1").Migrate(context.Background(), holder, "pve2", "") }()
	for d.Sim.Dump().VMs[holder].Config["lock"] != "migrate" {
		select {
		case err := <-done:
			t.Fatalf("the migration ended before the crash: %v", err)
		case <-ctx.Done():
			t.Fatal("the migration never started")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if row, _ := d.Agent.Store.LookupWorkspace(ctx, "w"); row == nil || !workspace.Moving(row) {
		t.Fatalf("the move is not journaled any more: %+v", row)
	}
	return tcpClient(t, d, d.Info.Token), done
}

// TestSandboxCreateRefusedWhileMoveJournaled: after a crash mid-migration
// the move stays journaled until the task ends; a sandbox (or a session's)
// create with the workspace meanwhile is refused as busy, not claimed: its
// placement would read a node the holder is leaving, and the claim would
// make the settle write a node under an attached sandbox.
func TestSandboxCreateRefusedWhileMoveJournaled(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	ws := movedWS(t, d, c, "w")
	c, done := migrateMidCrash(t, d, ws.HolderVMID, 3*time.Second)
	_, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "racer", Profile: "yolo-workspace", Workspace: "w"})
	wantCode(t, err, http.StatusConflict, api.CodeBusy)
	if !strings.Contains(err.Error(), "being moved") {
		t.Fatalf("refusal does not say why: %v", err)
	}
	// A session may reserve it (that moves nothing), but not run on it.
	if _, err = c.CreateSession(ctx, api.CreateSessionRequest{Name: "sess", Profile: "yolo-workspace", Workspace: "w"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.ResumeSession(ctx, "sess")
	wantCode(t, err, http.StatusConflict, api.CodeBusy)
	if row, _ := d.Agent.Store.LookupWorkspace(ctx, "w"); row == nil || row.AttachedSandbox != "" {
		t.Fatalf("the workspace was claimed mid-move: %+v", row)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := d.Manager.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	holderAgrees(t, d, c, "w", "pve2", ws.Storage)
	// Settled: the session now runs, on the workspace's new node.
	x, err := c.ResumeSession(ctx, "sess")
	if err != nil {
		t.Fatal(err)
	}
	sb, err := c.WaitSandbox(ctx, x.Sandbox, 0)
	if err != nil || sb.State != api.StateRunning || sb.Node != "pve2" {
		t.Fatalf("session's sandbox after the move settled: %+v %v", sb, err)
	}
}

// TestNothingWaitsBehindMoveInFlight: a move request holds its workspace
// for as long as the migration runs (hours for a large volume); a
// reconcile cycle meanwhile must not wait for it (it leaves the move to
// the request that runs it and goes on with everything else), nor must a
// sandbox create with the workspace (409 busy, as every request answers
// for a workspace another operation holds).
func TestNothingWaitsBehindMoveInFlight(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	ws := movedWS(t, d, c, "w")
	d.Sim.HangTask("qmigrate", "")
	moved := make(chan error, 1)
	go func() {
		_, err := c.MoveWorkspace(context.Background(), "w", api.MoveWorkspaceRequest{Node: "pve2"})
		moved <- err
	}()
	for {
		row, _ := d.Agent.Store.LookupWorkspace(ctx, "w")
		if row != nil && workspace.Moving(row) {
			break
		}
		select {
		case err := <-moved:
			t.Fatalf("the move ended before its task hung: %v", err)
		case <-ctx.Done():
			t.Fatal("the move was never journaled")
		case <-time.After(5 * time.Millisecond):
		}
	}
	type result struct {
		rep *api.ReconcileReport
		err error
	}
	rec := make(chan result, 1)
	go func() {
		rep, err := d.Manager.Reconcile(context.Background(), false)
		rec <- result{rep, err}
	}()
	select {
	case r := <-rec:
		if r.err != nil {
			t.Fatal(r.err)
		}
		for _, a := range r.rep.Actions {
			if a.VMID == ws.HolderVMID && a.Action != "workspace_move_pending" {
				t.Fatalf("reconcile acted on the holder mid-move: %+v", a)
			}
		}
	case <-ctx.Done():
		t.Fatal("reconcile waited behind the move in flight")
	}
	// A create with the workspace answers busy, rather than hanging until
	// the migration ends.
	sbc := make(chan error, 1)
	go func() {
		_, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "racer", Profile: "yolo-workspace", Workspace: "w"})
		sbc <- err
	}()
	select {
	case err := <-sbc:
		wantCode(t, err, http.StatusConflict, api.CodeBusy)
	case <-ctx.Done():
		t.Fatal("a sandbox create with the workspace waited behind the move in flight")
	}
	if n := d.Sim.ReleaseHungTasks(); n != 1 {
		t.Fatalf("released %d hung tasks", n)
	}
	err := <-moved
	wantCode(t, err, http.StatusBadGateway, api.CodeProxmox)
	holderAgrees(t, d, c, "w", "pve1", ws.Storage)
}

// TestJournaledMoveWhoseHolderIsGone: the holder was deleted by hand while
// a move was journaled (agentd down). The holder is on no node, so no
// migration can be running: the settle ends the move (the row keeps its
// node, the loss is reported), rather than leaving the workspace "being
// moved" forever, which refused its delete for good.
func TestJournaledMoveWhoseHolderIsGone(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	ws := movedWS(t, d, c, "w")
	journalMove(t, d, "w", "pve2", "local-lvm")
	if err := pveClient(t, d).On("pve1").Destroy(ctx, ws.HolderVMID); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	c = tcpClient(t, d, d.Info.Token)
	if _, err := d.Manager.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	row, err := d.Agent.Store.LookupWorkspace(ctx, "w")
	if err != nil || workspace.Moving(row) || row.Node != "" {
		t.Fatalf("row after the settle: %+v %v (want the move ended, node kept)", row, err)
	}
	if !hasEvent(wsEvents(t, c, "w"), "workspace.move_failed", "on no node") {
		t.Fatalf("events: %+v", wsEvents(t, c, "w"))
	}
	if _, err := c.DeleteWorkspace(ctx, "w"); err != nil {
		t.Fatalf("delete of the workspace whose holder is gone: %v", err)
	}
}

// TestMoveHandMigratedHolderBeforeReconcile: an operator migrated the
// holder (qm migrate) and no reconcile cycle has followed it yet. A move
// then must find the holder where it is (proven there), not report the
// volume gone: to where it already is, it only follows it; to a third
// node, it moves from there.
func TestMoveHandMigratedHolderBeforeReconcile(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	ws := movedWS(t, d, c, "w")
	if err := pveClient(t, d).On("pve1").Migrate(ctx, ws.HolderVMID, "pve3", ""); err != nil {
		t.Fatal(err)
	}
	// Terraform asks for the node the operator chose: nothing to migrate.
	got, err := c.MoveWorkspace(ctx, "w", api.MoveWorkspaceRequest{Node: "pve3"})
	if err != nil || got.Node != "pve3" {
		t.Fatalf("move to where the holder already is: %+v %v", got, err)
	}
	holderAgrees(t, d, c, "w", "pve3", ws.Storage)
	if !hasEvent(wsEvents(t, c, "w"), "workspace.node_changed", "migrated outside agentd") {
		t.Fatalf("events: %+v", wsEvents(t, c, "w"))
	}
	// Hand-migrated again, then moved on to a third node.
	if err := pveClient(t, d).On("pve3").Migrate(ctx, ws.HolderVMID, "pve1", ""); err != nil {
		t.Fatal(err)
	}
	if got, err = c.MoveWorkspace(ctx, "w", api.MoveWorkspaceRequest{Node: "pve2"}); err != nil || got.Node != "pve2" {
		t.Fatalf("move from where the holder is: %+v %v", got, err)
	}
	holderAgrees(t, d, c, "w", "pve2", ws.Storage)
}

// TestMoveOntoFullStorage: the target storage has no room; the migration
// fails (PVE's storage_migrate, its copies on the target removed) and the
// workspace is as it was: holder and data on the source, one copy, no
// journal, the reason in the answer and the event.
func TestMoveOntoFullStorage(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3})
	ctx := tctx(t)
	ws := movedWS(t, d, c, "w")
	if err := d.Sim.FillStorage("pve2", "local-zfs", true); err != nil {
		t.Fatal(err)
	}
	_, err := c.MoveWorkspace(ctx, "w", api.MoveWorkspaceRequest{Node: "pve2", Storage: "local-zfs"})
	wantCode(t, err, http.StatusConflict, api.CodeUnsupported)
	if !strings.Contains(err.Error(), "storage local-zfs on node pve2 does not support this") || !strings.Contains(err.Error(), "not enough free space") ||
		strings.Count(err.Error(), "migration aborted") != 2 {
		t.Fatalf("the answer does not say why: %v", err)
	}
	holderAgrees(t, d, c, "w", "pve1", ws.Storage)
	if got := copies(t, d, ws.HolderVMID); len(got) != 1 || !strings.HasPrefix(got[0], "pve1/") {
		t.Fatalf("copies after the failed move: %v", got)
	}
	if !hasEvent(wsEvents(t, c, "w"), "workspace.move_failed", "not enough free space") {
		t.Fatalf("events: %+v", wsEvents(t, c, "w"))
	}
}

// TestMoveNodeOfflineMidMigration: a node goes offline while the
// migration copies. The source (whose pvedaemon runs the task): the
// request cannot tell where the holder is and says so, the move stays
// journaled (every change refused meanwhile), and once the node is back
// the task goes on and reconcile settles the row where the holder is. The
// target: PVE's copy dies with the connection and the holder stays on the
// source, so the move fails at once, settled there; the partial copy PVE
// could not free stays on the target (agentd frees no volume), and a later
// move there still works, the data intact.
func TestMoveNodeOfflineMidMigration(t *testing.T) {
	for _, down := range []string{"pve1", "pve2"} {
		t.Run(down, func(t *testing.T) {
			d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{NoLoops: true}})
			ctx := tctx(t)
			ws := movedWS(t, d, c, "w")
			vol := holderVol(t, d, c, "w")
			d.Sim.SlowTask("qmigrate", "", 500*time.Millisecond)
			if err := d.Sim.BeforeRequest("GET", `/tasks/.*qmigrate.*/status$`, func() {
				_ = d.Sim.SetNodeOnline(down, false)
			}); err != nil {
				t.Fatal(err)
			}
			_, err := c.MoveWorkspace(ctx, "w", api.MoveWorkspaceRequest{Node: "pve2"})
			row, _ := d.Agent.Store.LookupWorkspace(ctx, "w")
			if down == "pve2" {
				wantCode(t, err, http.StatusBadGateway, api.CodeProxmox)
				if !strings.Contains(err.Error(), "exit code 255") || row == nil || workspace.Moving(row) {
					t.Fatalf("move with the target lost: %v; row %+v", err, row)
				}
				if err := d.Sim.SetNodeOnline(down, true); err != nil {
					t.Fatal(err)
				}
				if _, err := d.Manager.Reconcile(ctx, false); err != nil {
					t.Fatal(err)
				}
				holderAgrees(t, d, c, "w", "pve1", ws.Storage)
				if got := copies(t, d, ws.HolderVMID); len(got) != 2 || !slices.Contains(got, "pve2/"+vol) {
					t.Fatalf("copies: %v (want the holder's and PVE's partial one on pve2)", got)
				}
				if got, err := c.MoveWorkspace(ctx, "w", api.MoveWorkspaceRequest{Node: "pve2"}); err != nil || got.Node != "pve2" {
					t.Fatalf("the move once pve2 is back: %+v %v", got, err)
				}
				holderAgrees(t, d, c, "w", "pve2", ws.Storage)
				if holderVol(t, d, c, "w") == vol {
					t.Fatalf("the holder took the partial copy's volume %s", vol)
				}
				return
			}
			wantCode(t, err, http.StatusServiceUnavailable, api.CodeUnavailable)
			if row == nil || !workspace.Moving(row) {
				t.Fatalf("move failed (%v) but the journal is gone: %+v", err, row)
			}
			_, serr := c.CreateSnapshot(ctx, "w", api.CreateSnapshotRequest{Name: "mid"})
			wantCode(t, serr, http.StatusConflict, api.CodeBusy)
			if err := d.Sim.SetNodeOnline(down, true); err != nil {
				t.Fatal(err)
			}
			// The task goes on where it was; reconcile settles.
			for {
				if _, err := d.Manager.Reconcile(ctx, false); err != nil {
					t.Fatal(err)
				}
				if row, _ := d.Agent.Store.LookupWorkspace(ctx, "w"); row != nil && !workspace.Moving(row) {
					break
				}
				select {
				case <-ctx.Done():
					t.Fatal("the move never settled")
				case <-time.After(50 * time.Millisecond):
				}
			}
			holderAgrees(t, d, c, "w", "pve2", ws.Storage)
			if got := copies(t, d, ws.HolderVMID); len(got) != 1 {
				t.Fatalf("copies after the settle: %v", got)
			}
		})
	}
}

// TestSnapshotOpsRefusedWhileMoveJournaled: a fork from a snapshot and a
// snapshot's delete act on the holder whether or not it is attached, so
// they checked no move: mid-migration (after a crash) they are refused as
// busy like every other operation on the workspace, and nothing is made.
func TestSnapshotOpsRefusedWhileMoveJournaled(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	ws, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "w", Size: "1G", Node: "pve1", Storage: "local-zfs"})
	if err != nil {
		t.Fatal(err)
	}
	write(t, d, holderVol(t, d, c, "w"), "/work/notes.txt", "keep me")
	if _, err := c.CreateSnapshot(ctx, "w", api.CreateSnapshotRequest{Name: "s1"}); err != nil {
		t.Fatal(err)
	}
	before := len(vms(d))
	c, done := migrateMidCrash(t, d, ws.HolderVMID, 3*time.Second)
	_, err = c.ForkWorkspace(ctx, "w", api.ForkRequest{Name: "f", FromSnapshot: "s1"})
	wantCode(t, err, http.StatusConflict, api.CodeBusy)
	err = c.DeleteSnapshot(ctx, "w", "s1")
	wantCode(t, err, http.StatusConflict, api.CodeBusy)
	if got := len(vms(d)); got != before {
		t.Fatalf("VMs mid-move: %d, before %d", got, before)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := d.Manager.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	holderAgrees(t, d, c, "w", "pve2", "local-zfs")
	if snaps, err := c.Snapshots(ctx, "w"); err != nil || len(snaps) != 1 {
		t.Fatalf("snapshots after the move: %+v %v", snaps, err)
	}
}

// TestDeleteHandMigratedHolderBeforeReconcile: an operator migrated the
// holder and no cycle has followed it yet. Deleting the workspace then
// deletes its holder where it is (proven there); it used to find nothing
// on the row's node, call the holder gone and retire the row, leaving the
// holder and its volume behind on the other node.
func TestDeleteHandMigratedHolderBeforeReconcile(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	ws := movedWS(t, d, c, "w")
	if err := pveClient(t, d).On("pve1").Migrate(ctx, ws.HolderVMID, "pve3", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteWorkspace(ctx, "w"); err != nil {
		t.Fatal(err)
	}
	if vm, ok := d.Sim.Dump().VMs[ws.HolderVMID]; ok {
		t.Fatalf("the holder is still there after the delete: %+v", vm)
	}
	if got := copies(t, d, ws.HolderVMID); len(got) != 0 {
		t.Fatalf("volumes left: %v", got)
	}
}

// TestMoveTaskFailsAfterRestart: agentd is killed mid-migration, and the
// task then fails (the target storage fills up before the copy): the
// holder never left the source. Reconcile settles the row there, with the
// data, one copy, and the move reported failed.
func TestMoveTaskFailsAfterRestart(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	ws := movedWS(t, d, c, "w")
	c, done := migrateMidCrash(t, d, ws.HolderVMID, time.Second)
	if err := d.Sim.FillStorage("pve2", ws.Storage, true); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "not enough free space") {
		t.Fatalf("the migration: %v (want it to fail for space)", err)
	}
	if _, err := d.Manager.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	holderAgrees(t, d, c, "w", "pve1", ws.Storage)
	if got := copies(t, d, ws.HolderVMID); len(got) != 1 || !strings.HasPrefix(got[0], "pve1/") {
		t.Fatalf("copies: %v", got)
	}
	if !hasEvent(wsEvents(t, c, "w"), "workspace.move_failed", "interrupted") {
		t.Fatalf("events: %+v", wsEvents(t, c, "w"))
	}
}

// TestMoveFromOfflineNode: the workspace's node is offline (its pvedaemon
// would run the migration): refused before anything is journaled.
func TestMoveFromOfflineNode(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	ws := movedWS(t, d, c, "w")
	n := len(wsEvents(t, c, "w"))
	if err := d.Sim.SetNodeOnline("pve1", false); err != nil {
		t.Fatal(err)
	}
	_, err := c.MoveWorkspace(ctx, "w", api.MoveWorkspaceRequest{Node: "pve2"})
	wantCode(t, err, http.StatusServiceUnavailable, api.CodeUnavailable)
	if row, _ := d.Agent.Store.LookupWorkspace(ctx, "w"); row == nil || row.Step != "" {
		t.Fatalf("row after the refusal: %+v", row)
	}
	if err := d.Sim.SetNodeOnline("pve1", true); err != nil {
		t.Fatal(err)
	}
	if evs := wsEvents(t, c, "w"); len(evs) != n {
		t.Fatalf("a refused move wrote events: %+v", evs[n:])
	}
	// The cycle that sees pve1 back (its workspaces are reported
	// unavailable until then).
	if _, err := d.Manager.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	holderAgrees(t, d, c, "w", "pve1", ws.Storage)
}

// TestMoveSharedWorkspaceStorage: a workspace on a shared storage moves
// without a copy (PVE's scan_local_volumes skips shared volumes, and
// targetstorage maps only local ones), so a move asking for another
// storage cannot honour it: refused up front, naming why, rather than
// answering 200 with the volume still on the shared storage (Terraform
// then plans a replacement for the storage it did not get). A plain move
// of it works and keeps its storage.
func TestMoveSharedWorkspaceStorage(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	ws, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "w", Size: "1G", Node: "pve1", Storage: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	write(t, d, holderVol(t, d, c, "w"), "/work/notes.txt", "keep me")
	n := len(wsEvents(t, c, "w"))
	_, err = c.MoveWorkspace(ctx, "w", api.MoveWorkspaceRequest{Node: "pve2", Storage: "local-lvm"})
	wantCode(t, err, http.StatusBadRequest, api.CodeInvalidField)
	if !strings.Contains(err.Error(), "shared") {
		t.Fatalf("refusal does not say why: %v", err)
	}
	if evs := wsEvents(t, c, "w"); len(evs) != n {
		t.Fatalf("a refused move wrote events: %+v", evs[n:])
	}
	holderAgrees(t, d, c, "w", "pve1", "shared")
	if got, err := c.MoveWorkspace(ctx, "w", api.MoveWorkspaceRequest{Node: "pve2"}); err != nil || got.Node != "pve2" || got.Storage != "shared" {
		t.Fatalf("plain move: %+v %v", got, err)
	}
	holderAgrees(t, d, c, "w", "pve2", "shared")
	_ = ws
}

// TestMoveRefusedWhileLostSandboxMayUseIt: a workspace on a shared storage
// (holder on pve2) is used by a sandbox on pve1, which goes offline: the
// sandbox is LOST, its VM possibly still running and writing the volume.
// The workspace cannot move (nor be claimed elsewhere) while that VM may
// reference it, even after destroy --force retired the row: agentd cannot
// tell what the unreachable VM holds.
func TestMoveRefusedWhileLostSandboxMayUseIt(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3})
	ctx := tctx(t)
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "w", Size: "1G", Node: "pve2", Storage: "shared"}); err != nil {
		t.Fatal(err)
	}
	sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "user", Profile: "yolo-workspace", Workspace: "w", Node: "pve1"})
	if err != nil {
		t.Fatal(err)
	}
	if sb, err = c.WaitSandbox(ctx, sb.ID, 0); err != nil || sb.State != api.StateRunning || sb.Node != "pve1" {
		t.Fatalf("sandbox: %+v %v", sb, err)
	}
	if err := d.Sim.SetNodeOnline("pve1", false); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := d.Manager.Reconcile(ctx, false); err != nil {
			t.Fatal(err)
		}
		if got, _ := c.Sandbox(ctx, "user"); got != nil && got.State == api.StateLost {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the sandbox never went LOST")
		case <-time.After(50 * time.Millisecond):
		}
	}
	_, err = c.MoveWorkspace(ctx, "w", api.MoveWorkspaceRequest{Node: "pve3"})
	wantCode(t, err, http.StatusConflict, api.CodeAttached)
	if _, err := c.Destroy(ctx, sb.ID, true); err != nil {
		t.Fatal(err)
	}
	_, err = c.MoveWorkspace(ctx, "w", api.MoveWorkspaceRequest{Node: "pve3"})
	wantCode(t, err, http.StatusConflict, api.CodeAttached)
	if vm := d.Sim.Dump().VMs[mustWS(t, c, "w").HolderVMID]; vm.Node != "pve2" {
		t.Fatalf("the holder moved: %+v", vm)
	}
}

func mustWS(t *testing.T, c *client.Client, name string) *api.Workspace {
	t.Helper()
	w, err := c.Workspace(tctx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestOpsOnHandMigratedHolderBeforeReconcile: after an operator's qm
// migrate and before a reconcile cycle follows it, a resize, a snapshot,
// a restore and a fork act on the holder where it is (proven there, the
// row following it), instead of answering that the volume is gone.
func TestOpsOnHandMigratedHolderBeforeReconcile(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	ws := movedWS(t, d, c, "w")
	pc := pveClient(t, d)
	if err := pc.On("pve1").Migrate(ctx, ws.HolderVMID, "pve2", ""); err != nil {
		t.Fatal(err)
	}
	if got, err := c.ResizeWorkspace(ctx, "w", api.ResizeWorkspaceRequest{Size: "2G"}); err != nil || got.Node != "pve2" || got.SizeGB != 2 {
		t.Fatalf("resize: %+v %v", got, err)
	}
	if err := pc.On("pve2").Migrate(ctx, ws.HolderVMID, "pve3", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSnapshot(ctx, "w", api.CreateSnapshotRequest{Name: "s1"}); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	holderAgrees(t, d, c, "w", "pve3", ws.Storage)
	write(t, d, holderVol(t, d, c, "w"), "/work/notes.txt", "changed")
	// Snapshots pin lvm-thin volumes to their node for PVE's migration, so
	// the next hand migration is of a fresh fork's holder.
	if _, err := c.RestoreSnapshot(ctx, "w", "s1"); err != nil {
		t.Fatalf("restore: %v", err)
	}
	holderAgrees(t, d, c, "w", "pve3", ws.Storage)
	f, err := c.ForkWorkspace(ctx, "w", api.ForkRequest{Name: "f"})
	if err != nil || f.Node != "pve3" {
		t.Fatalf("fork: %+v %v", f, err)
	}
	if err := pc.On("pve3").Migrate(ctx, f.HolderVMID, "pve1", ""); err != nil {
		t.Fatal(err)
	}
	g, err := c.ForkWorkspace(ctx, "f", api.ForkRequest{Name: "g"})
	if err != nil || g.Node != "pve1" {
		t.Fatalf("fork of the hand-migrated fork: %+v %v", g, err)
	}
	if got := read(t, d, g.Volume, "/work/notes.txt"); got != "keep me" {
		t.Fatalf("fork's data: %q", got)
	}
}
