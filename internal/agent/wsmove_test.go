package agent_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/workspace"
)

// wsEvents lists the kinds and messages of a workspace's events, oldest first.
func wsEvents(t *testing.T, c *client.Client, name string) []api.Event {
	t.Helper()
	l, err := c.Events(tctx(t), "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []api.Event
	for _, e := range l.Events {
		if e.Workspace == name {
			out = append(out, e)
		}
	}
	return out
}

func hasEvent(evs []api.Event, kind, frag string) bool {
	for _, e := range evs {
		if e.Kind == kind && strings.Contains(e.Message, frag) {
			return true
		}
	}
	return false
}

// movedWS makes workspace name on pve1 of a 3-node dev cluster with a file
// on its volume.
func movedWS(t *testing.T, d *agent.Dev, c *client.Client, name string) *api.Workspace {
	t.Helper()
	ws, err := c.CreateWorkspace(tctx(t), api.CreateWorkspaceRequest{Name: name, Size: "1G", Node: "pve1"})
	if err != nil || ws.Node != "pve1" {
		t.Fatalf("create: %+v %v", ws, err)
	}
	write(t, d, holderVol(t, d, c, name), "/work/notes.txt", "keep me")
	return ws
}

// holderAgrees fails unless the API, the database row and the simulator
// all put ws's holder on node with its data on storage.
func holderAgrees(t *testing.T, d *agent.Dev, c *client.Client, name, node, storage string) {
	t.Helper()
	ws, err := c.Workspace(tctx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	vm, ok := d.Sim.Dump().VMs[ws.HolderVMID]
	if !ok || vm.Node != node || ws.Node != node || ws.Storage != storage || vm.Config["lock"] != "" {
		t.Fatalf("workspace %s: API node %s storage %s; holder %d in Proxmox on %s (%v, lock %q); want %s/%s", name, ws.Node, ws.Storage,
			ws.HolderVMID, vm.Node, ok, vm.Config["lock"], node, storage)
	}
	if row, err := d.Agent.Store.LookupWorkspace(tctx(t), name); err != nil || row.Step != "" {
		t.Fatalf("row %+v %v: a step is still journaled", row, err)
	}
	vol := volOf(vm.Config["scsi0"])
	if !strings.HasPrefix(vol, storage+":") || ws.Volume != vol {
		t.Fatalf("volume %s (API %s), want one on %s", vol, ws.Volume, storage)
	}
	if got := read(t, d, vol, "/work/notes.txt"); got != "keep me" {
		t.Fatalf("data on %s after the move: %q", vol, got)
	}
}

// copies lists every volume of VM vmid on every node's storages, as
// node/volid, read through the Proxmox API.
func copies(t *testing.T, d *agent.Dev, vmid int) []string {
	t.Helper()
	var out []string
	for _, n := range d.Sim.Nodes() {
		for _, st := range []string{"local", "local-lvm", "local-zfs", "local-raw"} {
			vols, err := pveClient(t, d).On(n).Volumes(tctx(t), st, vmid)
			if err != nil && !strings.Contains(err.Error(), "does not exist") {
				t.Fatal(err)
			}
			for _, v := range vols {
				out = append(out, n+"/"+v.Volid)
			}
		}
	}
	return out
}

// TestWorkspaceMove: a detached workspace moves to another node (and
// storage) with its data, the old copy freed; moving to where it is
// changes nothing; a sandbox made with it afterwards runs on its new node.
func TestWorkspaceMove(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3})
	ctx := tctx(t)
	ws := movedWS(t, d, c, "w")
	oldVol := holderVol(t, d, c, "w")
	got, err := c.MoveWorkspace(ctx, "w", api.MoveWorkspaceRequest{Node: "pve2"})
	if err != nil || got.Node != "pve2" {
		t.Fatalf("move to pve2: %+v %v", got, err)
	}
	holderAgrees(t, d, c, "w", "pve2", ws.Storage)
	if got := copies(t, d, ws.HolderVMID); len(got) != 1 || got[0] != "pve2/"+oldVol {
		t.Fatalf("copies of the volume after the move: %v (want only pve2/%s: the source freed)", got, oldVol)
	}
	if !hasEvent(wsEvents(t, c, "w"), "workspace.moving", "to node pve2") || !hasEvent(wsEvents(t, c, "w"), "workspace.moved", "from node pve1 to node pve2") {
		t.Fatalf("events: %+v", wsEvents(t, c, "w"))
	}
	// Already there: a no-op, no event.
	n := len(wsEvents(t, c, "w"))
	if got, err = c.MoveWorkspace(ctx, "w", api.MoveWorkspaceRequest{Node: "pve2"}); err != nil || got.Node != "pve2" {
		t.Fatalf("move to where it is: %+v %v", got, err)
	}
	if len(wsEvents(t, c, "w")) != n {
		t.Fatalf("a no-op move wrote events: %+v", wsEvents(t, c, "w")[n:])
	}
	// Onto another storage on a third node.
	if got, err = c.MoveWorkspace(ctx, "w", api.MoveWorkspaceRequest{Node: "pve3", Storage: "local-zfs"}); err != nil || got.Node != "pve3" || got.Storage != "local-zfs" {
		t.Fatalf("move to pve3/local-zfs: %+v %v", got, err)
	}
	holderAgrees(t, d, c, "w", "pve3", "local-zfs")
	// Sandboxes follow the workspace to its node.
	sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "user", Profile: "yolo-workspace", Workspace: "w"})
	if err != nil {
		t.Fatal(err)
	}
	if sb, err = c.WaitSandbox(ctx, sb.ID, 0); err != nil || sb.State != api.StateRunning || sb.Node != "pve3" {
		t.Fatalf("sandbox with the moved workspace: %+v %v", sb, err)
	}
}

// TestWorkspaceMoveRefusals: what cannot move is refused before anything
// is journaled or migrated, with the reason named.
func TestWorkspaceMoveRefusals(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3})
	ctx := tctx(t)
	ws := movedWS(t, d, c, "w")
	refuse := func(req api.MoveWorkspaceRequest, status int, code api.Code, frag string) {
		t.Helper()
		before := len(wsEvents(t, c, "w"))
		_, err := c.MoveWorkspace(ctx, "w", req)
		wantCode(t, err, status, code)
		if !strings.Contains(err.Error(), frag) {
			t.Fatalf("%+v: %v (want it to say %q)", req, err, frag)
		}
		if vm := d.Sim.Dump().VMs[ws.HolderVMID]; vm.Node != "pve1" {
			t.Fatalf("%+v: the holder moved to %s", req, vm.Node)
		}
		if evs := wsEvents(t, c, "w"); len(evs) != before {
			t.Fatalf("%+v: a refused move wrote events %+v", req, evs[before:])
		}
	}
	refuse(api.MoveWorkspaceRequest{}, http.StatusBadRequest, api.CodeInvalidField, "node")
	refuse(api.MoveWorkspaceRequest{Node: "pve9"}, http.StatusBadRequest, api.CodeInvalidField, `node "pve9" is not a node agentd uses (nodes: pve1, pve2, pve3)`)
	refuse(api.MoveWorkspaceRequest{Node: "pve1", Storage: "local-zfs"}, http.StatusBadRequest, api.CodeInvalidField, "already on node pve1")
	refuse(api.MoveWorkspaceRequest{Node: "pve2", Storage: "nfs-elsewhere"}, http.StatusBadRequest, api.CodeInvalidField, "nfs-elsewhere")
	if err := d.Sim.SetNodeOnline("pve2", false); err != nil {
		t.Fatal(err)
	}
	refuse(api.MoveWorkspaceRequest{Node: "pve2"}, http.StatusBadRequest, api.CodeInvalidField, "node pve2 is offline")
	if err := d.Sim.SetNodeOnline("pve2", true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DrainNode(ctx, "pve3", true); err != nil {
		t.Fatal(err)
	}
	refuse(api.MoveWorkspaceRequest{Node: "pve3"}, http.StatusBadRequest, api.CodeInvalidField, "node pve3 is drained")
	if _, err := c.DrainNode(ctx, "pve3", false); err != nil {
		t.Fatal(err)
	}
	if err := d.Sim.RestrictStorage("local-raw", "pve1"); err != nil {
		t.Fatal(err)
	}
	refuse(api.MoveWorkspaceRequest{Node: "pve3", Storage: "local-raw"}, http.StatusBadRequest, api.CodeInvalidField, "storage local-raw does not exist on node pve3")
	// Attached: 409 naming the sandbox.
	sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "holder-user", Profile: "yolo-workspace", Workspace: "w"})
	if err != nil {
		t.Fatal(err)
	}
	if sb, err = c.WaitSandbox(ctx, sb.ID, 0); err != nil || sb.State != api.StateRunning {
		t.Fatalf("sandbox: %+v %v", sb, err)
	}
	refuse(api.MoveWorkspaceRequest{Node: "pve2"}, http.StatusConflict, api.CodeAttached, "attached to sandbox holder-user")
	if _, err := c.Destroy(ctx, sb.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitSandbox(ctx, sb.ID, 0); err != nil {
		t.Fatal(err)
	}
	// A foreign VM at the holder's VMID is never migrated: the workspace
	// goes LOST instead.
	if err := pveClient(t, d).On("pve1").Configure(ctx, ws.HolderVMID, pve.Option{Name: "description", Value: "somebody else's VM"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.MoveWorkspace(ctx, "w", api.MoveWorkspaceRequest{Node: "pve2"})
	wantCode(t, err, http.StatusConflict, api.CodeNotOwned)
	if vm := d.Sim.Dump().VMs[ws.HolderVMID]; vm.Node != "pve1" || vm.Config["description"] != "somebody else's VM" {
		t.Fatalf("the foreign VM was touched: %+v", vm)
	}
}

// journalMove writes what an agentd killed right after journaling a move to
// node leaves in its database (the step; nothing else changed).
func journalMove(t *testing.T, d *agent.Dev, name, node, storage string) {
	t.Helper()
	ctx := tctx(t)
	st := d.Agent.Store
	w, err := st.LookupWorkspace(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	prev := *w
	w.Step = workspace.StepMove + ":" + node + ":" + storage
	if err := st.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.moving", Message: "moving to node " + node}); err != nil {
		t.Fatal(err)
	}
}

// TestWorkspaceMoveCrashAtEachStep: agentd killed at each step of a move
// (after the journal and before the migrate request, while the migrate
// task runs, after it ended and before the row was written) converges on
// restart on the node where the holder really is, its data intact; the
// answer of the migrate request lost, or its task failed, settles the same
// way without a restart.
func TestWorkspaceMoveCrashAtEachStep(t *testing.T) {
	steps := []struct {
		name     string
		node     string // where the holder ends up
		event    string
		simulate func(t *testing.T, d *agent.Dev, c *client.Client, holder int)
	}{
		{"before migrate", "pve1", "workspace.move_failed", func(t *testing.T, d *agent.Dev, c *client.Client, _ int) {
			journalMove(t, d, "w", "pve2", "local-lvm")
			if err := d.Restart(tctx(t)); err != nil {
				t.Fatal(err)
			}
		}},
		{"during the task", "pve2", "workspace.moved", func(t *testing.T, d *agent.Dev, _ *client.Client, holder int) {
			ctx := tctx(t)
			journalMove(t, d, "w", "pve2", "local-lvm")
			d.Sim.SlowTask("qmigrate", "", time.Second)
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
			c := tcpClient(t, d, d.Info.Token)
			// While the migration runs the workspace is not usable, and
			// the journal stays for reconcile.
			if row, _ := d.Agent.Store.LookupWorkspace(ctx, "w"); row == nil || !workspace.Moving(row) {
				t.Fatalf("the resume settled a move whose task still runs: %+v", row)
			}
			_, err := c.CreateSnapshot(ctx, "w", api.CreateSnapshotRequest{Name: "mid"})
			wantCode(t, err, http.StatusConflict, api.CodeBusy)
			_, err = c.DeleteWorkspace(ctx, "w")
			wantCode(t, err, http.StatusConflict, api.CodeBusy)
			_, err = c.ResizeWorkspace(ctx, "w", api.ResizeWorkspaceRequest{Size: "2G"})
			wantCode(t, err, http.StatusConflict, api.CodeBusy)
			_, err = c.MoveWorkspace(ctx, "w", api.MoveWorkspaceRequest{Node: "pve3"})
			wantCode(t, err, http.StatusConflict, api.CodeBusy)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if _, err := d.Manager.Reconcile(ctx, false); err != nil {
				t.Fatal(err)
			}
		}},
		{"after the task", "pve2", "workspace.moved", func(t *testing.T, d *agent.Dev, c *client.Client, holder int) {
			journalMove(t, d, "w", "pve2", "local-lvm")
			if err := pveClient(t, d).On("pve1").Migrate(tctx(t), holder, "pve2", ""); err != nil {
				t.Fatal(err)
			}
			if err := d.Restart(tctx(t)); err != nil {
				t.Fatal(err)
			}
		}},
		{"answer lost", "pve2", "workspace.moved", func(t *testing.T, d *agent.Dev, c *client.Client, _ int) {
			if err := d.Sim.LoseReply("POST", `/qemu/\d+/migrate$`, 1, false); err != nil {
				t.Fatal(err)
			}
			if got, err := c.MoveWorkspace(tctx(t), "w", api.MoveWorkspaceRequest{Node: "pve2"}); err != nil || got.Node != "pve2" {
				t.Fatalf("move whose answer was lost: %+v %v", got, err)
			}
		}},
		{"task failed", "pve1", "workspace.move_failed", func(t *testing.T, d *agent.Dev, c *client.Client, _ int) {
			d.Sim.FailTaskTimes("qmigrate", "", "injected", 1)
			_, err := c.MoveWorkspace(tctx(t), "w", api.MoveWorkspaceRequest{Node: "pve2"})
			wantCode(t, err, http.StatusBadGateway, api.CodeProxmox)
		}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			// No loops: a reconcile cycle would settle the planted journal
			// before the step under test runs.
			d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{NoLoops: true}})
			ws := movedWS(t, d, c, "w")
			s.simulate(t, d, c, ws.HolderVMID)
			c = tcpClient(t, d, d.Info.Token)
			holderAgrees(t, d, c, "w", s.node, ws.Storage)
			if evs := wsEvents(t, c, "w"); !hasEvent(evs, s.event, "") {
				t.Fatalf("no %s event: %+v", s.event, evs)
			}
			// Nothing left behind: no orphan, no second copy.
			if rep, err := c.Reconcile(tctx(t), true); err != nil || len(rep.Orphans) != 0 {
				t.Fatalf("after settling: %+v %v", rep, err)
			}
			if got := copies(t, d, ws.HolderVMID); len(got) != 1 || !strings.HasPrefix(got[0], s.node+"/") {
				t.Fatalf("copies of the volume: %v (want exactly one, on %s)", got, s.node)
			}
			// And it moves again from where it is.
			to := map[string]string{"pve1": "pve3", "pve2": "pve3"}[s.node]
			if got, err := c.MoveWorkspace(tctx(t), "w", api.MoveWorkspaceRequest{Node: to}); err != nil || got.Node != to {
				t.Fatalf("next move: %+v %v", got, err)
			}
		})
	}
}

// TestReconcileFollowsHandMigratedHolder: an operator migrates a holder with
// qm migrate; reconcile proves it on its new node and the row follows, with
// an event saying why.
func TestReconcileFollowsHandMigratedHolder(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	ws := movedWS(t, d, c, "w")
	if err := pveClient(t, d).On("pve1").Migrate(ctx, ws.HolderVMID, "pve3", "local-zfs"); err != nil {
		t.Fatal(err)
	}
	rep, err := d.Manager.Reconcile(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	followed := false
	for _, a := range rep.Actions {
		followed = followed || a.Action == "workspace_node_changed" && a.VMID == ws.HolderVMID
	}
	if !followed {
		t.Fatalf("reconcile actions: %+v", rep.Actions)
	}
	holderAgrees(t, d, c, "w", "pve3", "local-zfs")
	if !hasEvent(wsEvents(t, c, "w"), "workspace.node_changed", "is on node pve3, not pve1 (migrated outside agentd)") {
		t.Fatalf("events: %+v", wsEvents(t, c, "w"))
	}
	// A second cycle has nothing to follow.
	if rep, err = d.Manager.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	for _, a := range rep.Actions {
		if a.Action == "workspace_node_changed" {
			t.Fatalf("followed twice: %+v", a)
		}
	}
	// A foreign VM moved in its place is not followed: LOST.
	if err := pveClient(t, d).On("pve3").Configure(ctx, ws.HolderVMID, pve.Option{Name: "description", Value: "not ours"}); err != nil {
		t.Fatal(err)
	}
	if err := pveClient(t, d).On("pve3").Migrate(ctx, ws.HolderVMID, "pve2", ""); err != nil {
		t.Fatal(err)
	}
	if _, err = d.Manager.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	got, err := c.Workspace(ctx, "w")
	if err != nil || got.State != store.WorkspaceLost || got.Node != "pve3" {
		t.Fatalf("after a foreign VM moved: %+v %v", got, err)
	}
}

// BenchmarkWorkspaceMove moves one workspace back and forth between two
// nodes of a simulated cluster at zero task time: the agent's own cost of a
// move (checks, proof, journal, migrate, settle), with the Proxmox requests
// one move takes.
func BenchmarkWorkspaceMove(b *testing.B) {
	d, c := startDev(b, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{NoLoops: true}})
	ctx := context.Background()
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "bw", Size: "1G", Node: "pve1"}); err != nil {
		b.Fatal(err)
	}
	before, _ := d.Sim.RequestCount()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		to := []string{"pve2", "pve1"}[i%2]
		if w, err := c.MoveWorkspace(ctx, "bw", api.MoveWorkspaceRequest{Node: to}); err != nil || w.Node != to {
			b.Fatalf("move to %s: %+v %v", to, w, err)
		}
	}
	b.StopTimer()
	after, _ := d.Sim.RequestCount()
	b.ReportMetric(float64(after-before)/float64(b.N), "pve-requests/move")
}

// TestInterruptedMoveOntoForeignVM: after a crash mid-move, the VM found at
// the holder's VMID on the target no longer proves itself (edited out of
// band, or another VM there): the settle marks the workspace LOST and
// leaves that VM alone, rather than adopting it.
func TestInterruptedMoveOntoForeignVM(t *testing.T) {
	// No loops: a reconcile cycle between the hand migration and the
	// planted description would settle the move while the VM is still ours.
	d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	ws := movedWS(t, d, c, "w")
	journalMove(t, d, "w", "pve2", "local-lvm")
	if err := pveClient(t, d).On("pve1").Migrate(ctx, ws.HolderVMID, "pve2", ""); err != nil {
		t.Fatal(err)
	}
	if err := pveClient(t, d).On("pve2").Configure(ctx, ws.HolderVMID, pve.Option{Name: "description", Value: "someone else's"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	c = tcpClient(t, d, d.Info.Token)
	got, err := c.Workspace(ctx, "w")
	if err != nil || got.State != store.WorkspaceLost {
		t.Fatalf("after the settle: %+v %v", got, err)
	}
	vm := d.Sim.Dump().VMs[ws.HolderVMID]
	if vm.Node != "pve2" || vm.Config["description"] != "someone else's" {
		t.Fatalf("the foreign VM was touched: %+v", vm)
	}
	if !hasEvent(wsEvents(t, c, "w"), "workspace.not_owned", "refused to move") {
		t.Fatalf("events: %+v", wsEvents(t, c, "w"))
	}
}
