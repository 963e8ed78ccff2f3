package agent_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// Soak seed 77 (-fault-rate 0.5 -kills 6 -lock-share 0.3 -lock-at
// sandbox,holder): a workspace create lost its answer, the abandon issued
// the holder's destroy and agentd was killed before it retired the row. The
// resume rebuilt the CREATING row on the holder still being destroyed and
// marked it READY; the destroy then ended, a racer took the VMID, and the
// workspace read as LOST ("names no AgentLab object"), a false LOST.
//
// First the journal: a failed create records the abandon before it
// destroys the holder.
func TestFailedCreateJournalsItsAbandon(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	if err := d.Sim.LoseReply("POST", `^/nodes/[^/]+/qemu$`, 1, false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "w", Size: "1G"}); err == nil {
		t.Fatal("a create whose answer was lost answered success")
	}
	rows, err := d.Agent.Store.Workspaces(ctx, store.WorkspaceDeleted)
	if err != nil || len(rows) != 1 {
		t.Fatalf("retired rows %v %v", rows, err)
	}
	l, err := c.Events(ctx, "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range l.Events {
		if e.Workspace == "w" {
			kinds = append(kinds, e.Kind)
		}
	}
	if got := strings.Join(kinds, ","); !strings.Contains(got, "workspace.abandoning,workspace.create_failed") {
		t.Fatalf("events of w: %s (want the abandon journaled before the row is retired)", got)
	}
	if vm, ok := d.Sim.Dump().VMs[rows[0].HolderVMID]; ok {
		t.Fatalf("holder VM %d of the abandoned create is still there: %v", rows[0].HolderVMID, vm.Config)
	}
}

// Then the resume: a row whose abandon was journaled is retired, never
// rebuilt on the holder whose destroy is running.
func TestResumedAbandonIsNotRebuilt(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Speed: 4})
	ctx := tctx(t)
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "w", Size: "1G"}); err != nil {
		t.Fatal(err)
	}
	st := d.Agent.Store
	w, err := st.LookupWorkspace(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	// What the killed agent left: the abandon journaled, the destroy of the
	// holder issued and still running.
	prev := *w
	w.State, w.Step, w.Error = store.WorkspaceCreating, "create_holder", "abandoning: create VM: connection lost"
	if err := st.SaveWorkspace(ctx, w, prev, store.Event{}); err != nil {
		t.Fatal(err)
	}
	d.Sim.SlowTask("qmdestroy", "", 2*time.Second)
	destroyed := make(chan error, 1)
	go func() { destroyed <- pveClient(t, d).Destroy(ctx, w.HolderVMID) }()
	for !destroying(d) {
		select {
		case <-ctx.Done():
			t.Fatal("the holder's destroy never started")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-destroyed; err != nil {
		t.Fatal(err)
	}
	c = tcpClient(t, d, d.Info.Token)
	if got, err := c.Workspace(ctx, "w"); err == nil {
		t.Fatalf("the abandoned workspace came back: %+v", got)
	}
	if _, ok := d.Sim.Dump().VMs[w.HolderVMID]; ok {
		t.Fatalf("holder VM %d still there", w.HolderVMID)
	}
	if rep, err := c.Reconcile(ctx, true); err != nil || len(rep.Orphans) != 0 {
		t.Fatalf("reconcile: %+v %v", rep, err)
	}
}

// destroying reports whether a qmdestroy task runs in the simulator.
func destroying(d *agent.Dev) bool {
	for _, tk := range d.Sim.Dump().Tasks {
		if tk.Type == "qmdestroy" && tk.Running {
			return true
		}
	}
	return false
}

// Soak seed 84: the destroy of a failed sandbox's VM took effect but its
// answer timed out, and another client's VM took the freed VMID. The next
// destroy rightly refused that VM and marked the sandbox LOST, but kept the
// workspace claimed by it: the workspace, data intact, could not be attached
// anywhere until an operator retired the row (I5: attached to a LOST
// sandbox whose VM has no scsi1). The claim goes once the VM at the VMID
// does not reference the volume; one that does keeps it.
func TestLostSandboxReleasesAnUnpluggedWorkspace(t *testing.T) {
	for _, plugged := range []bool{false, true} {
		t.Run(map[bool]string{false: "foreign VM without the volume", true: "foreign VM with the volume"}[plugged], func(t *testing.T) {
			d, c := startDev(t, agent.DevOptions{})
			ctx := tctx(t)
			if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "w", Size: "1G"}); err != nil {
				t.Fatal(err)
			}
			vol := holderVol(t, d, c, "w")
			sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "sb", Profile: "yolo-workspace", Workspace: "w"})
			if err != nil {
				t.Fatal(err)
			}
			if sb, err = c.WaitSandbox(ctx, sb.ID, 10*time.Millisecond); err != nil || sb.State != api.StateRunning {
				t.Fatalf("%+v %v", sb, err)
			}
			pc := pveClient(t, d)
			if err := pc.Stop(ctx, sb.VMID); err != nil {
				t.Fatal(err)
			}
			if err := pc.Destroy(ctx, sb.VMID); err != nil {
				t.Fatal(err)
			}
			cfg := map[string]string{"name": "racer", "memory": "512"}
			if plugged {
				cfg["scsi1"] = vol
			}
			if err := d.Sim.AddVM("pve", sb.VMID, cfg, false); err != nil {
				t.Fatal(err)
			}
			_, err = c.Destroy(ctx, "sb", false)
			wantCode(t, err, http.StatusConflict, api.CodeNotOwned)
			if got, err := c.Sandbox(ctx, "sb"); err != nil || got.State != api.StateLost {
				t.Fatalf("sandbox after the refused destroy: %+v %v", got, err)
			}
			w, err := c.Workspace(ctx, "w")
			if err != nil {
				t.Fatal(err)
			}
			if plugged {
				if w.AttachedSandbox == "" {
					t.Fatal("released the workspace a foreign VM still references")
				}
				return
			}
			if w.AttachedSandbox != "" {
				t.Fatalf("workspace still claimed by the LOST sandbox: %+v", w)
			}
			next, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "next", Profile: "yolo-workspace", Workspace: "w"})
			if err != nil {
				t.Fatal(err)
			}
			if next, err = c.WaitSandbox(ctx, next.ID, 10*time.Millisecond); err != nil || next.State != api.StateRunning {
				t.Fatalf("the released workspace could not be used: %+v %v", next, err)
			}
			if vm := d.Sim.Dump().VMs[sb.VMID]; vm.Config["name"] != "racer" {
				t.Fatalf("the foreign VM %d was touched: %v", sb.VMID, vm.Config)
			}
		})
	}
}
