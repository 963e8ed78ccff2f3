package soak

import (
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

func sbDesc(id string) string {
	return "Managed by AgentLab agentd; do not edit or remove these lines.\nagentlab-sandbox-id: " + id + "\n"
}

func wsDesc(id string) string {
	return "AgentLab workspace holder.\nagentlab-workspace-id: " + id + "\n"
}

// TestCheckI10: each promise of node failure, broken on its own in a world
// that otherwise keeps them, is reported once; the world that keeps them
// all is clean.
func TestCheckI10(t *testing.T) {
	at := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	old := at.Add(-time.Minute)
	vms := func() map[int]pvesim.VMState {
		return map[int]pvesim.VMState{
			100: {Node: "pve2", Running: true, Config: map[string]string{"description": sbDesc("sbx-a")}},
			101: {Node: "pve2", Config: map[string]string{"description": wsDesc("ws-a")}},
			102: {Node: "pve1", Running: true, Config: map[string]string{"description": sbDesc("sbx-b")}},
		}
	}
	clean := func() *World {
		p := NodeProbe{Node: "pve2", At: at, Before: &pvesim.State{VMs: vms()}, After: &pvesim.State{VMs: vms()},
			Sandboxes: []api.Sandbox{
				{ID: "sbx-a", Name: "a", State: api.StateLost, Step: "node_offline", VMID: 100, Node: "pve2", UpdatedAt: at.Add(time.Millisecond)},
				{ID: "sbx-b", Name: "b", State: api.StateRunning, VMID: 102, Node: "pve1", UpdatedAt: old},
			},
			Workspaces:       []api.Workspace{{ID: "ws-a", Name: "wa", HolderVMID: 101, Node: "pve2", Unavailable: "node pve2 is offline"}},
			WorkspacesBefore: []api.Workspace{{ID: "ws-a", Name: "wa", HolderVMID: 101, Node: "pve2", State: "READY"}},
		}
		return &World{Nodes: []string{"pve1", "pve2", "pve3"}, Online: map[string]bool{"pve1": true, "pve2": true, "pve3": true},
			Sim: &pvesim.State{VMs: vms()}, Probes: []NodeProbe{p}, Foreign: map[int]pvesim.VMState{},
			Sandboxes: []api.Sandbox{
				{ID: "sbx-a", Name: "a", State: api.StateRunning, VMID: 100, Node: "pve2"},
				{ID: "sbx-b", Name: "b", State: api.StateRunning, VMID: 102, Node: "pve1"},
			},
			Workspaces: []api.Workspace{{ID: "ws-a", Name: "wa", HolderVMID: 101, Node: "pve2", State: "READY"}},
		}
	}
	if vs := CheckI10(clean()); len(vs) != 0 {
		t.Fatalf("a world that keeps every promise: %v", vs)
	}
	cases := []struct {
		name, want string
		breakIt    func(w *World)
	}{
		{"a VM destroyed while its node was offline", "destroyed while node pve2", func(w *World) { delete(w.Probes[0].After.VMs, 100) }},
		{"a sandbox on the offline node not LOST", "RUNNING, not LOST", func(w *World) {
			w.Probes[0].Sandboxes[0].State, w.Probes[0].Sandboxes[0].UpdatedAt = api.StateRunning, old
		}},
		{"a sandbox row DESTROYED while its VM is on the offline node", "row DESTROYED", func(w *World) {
			w.Probes[0].Sandboxes[0].State = api.StateDestroyed
		}},
		{"a workspace on the offline node not unavailable", "not reported unavailable", func(w *World) { w.Probes[0].Workspaces[0].Unavailable = "" }},
		{"a workspace row deleted while its node was offline", "whose row was deleted", func(w *World) { w.Probes[0].Workspaces = nil }},
		{"a sandbox still waiting for its node after the settle", "still LOST at step node_offline", func(w *World) {
			w.Sandboxes[0].State, w.Sandboxes[0].Step = api.StateLost, "node_offline"
		}},
		{"a row naming another node than its VM's", "row says node pve3, its VM is on pve2", func(w *World) { w.Sandboxes[0].Node = "pve3" }},
		{"a holder on another node than its row's", "its holder is on pve2", func(w *World) { w.Workspaces[0].Node = "pve1" }},
		{"one sandbox as two VMs", "exists as more than one VM: 100 on pve2, 103 on pve3", func(w *World) {
			w.Sim.VMs[103] = pvesim.VMState{Node: "pve3", Config: map[string]string{"description": sbDesc("sbx-a")}}
		}},
		{"a workspace unavailable with every node back", "unavailable with every node back", func(w *World) { w.Workspaces[0].Unavailable = "node pve2 is offline" }},
		{"a node left offline", "still offline after the settle", func(w *World) { w.Online["pve3"] = false }},
	}
	for _, tc := range cases {
		w := clean()
		tc.breakIt(w)
		vs := CheckI10(w)
		if len(vs) != 1 || !strings.Contains(vs[0].Detail, tc.want) {
			t.Errorf("%s: got %v, want one violation saying %q", tc.name, vs, tc.want)
		}
	}
	// A row changed after the probe's reconcile began is no evidence
	// about it (a stop landing meanwhile), a VM of another agent's
	// workspace on the node is not a deleted row, and neither is the
	// holder of a workspace whose create failed in the outage.
	w := clean()
	w.Probes[0].After.VMs[104] = pvesim.VMState{Node: "pve2", Config: map[string]string{"description": wsDesc("ws-failed"), "lock": "create"}}
	w.Probes[0].Before.VMs[104] = w.Probes[0].After.VMs[104]
	w.Probes[0].WorkspacesBefore = append(w.Probes[0].WorkspacesBefore, api.Workspace{ID: "ws-failed", State: "CREATING"})
	w.Probes[0].Sandboxes[0].State, w.Probes[0].Sandboxes[0].UpdatedAt = api.StateStopped, at.Add(time.Second)
	w.Probes[0].After.VMs[8003] = pvesim.VMState{Node: "pve2", Config: map[string]string{"description": wsDesc("ws-other")}}
	w.Probes[0].Before.VMs[8003] = w.Probes[0].After.VMs[8003]
	w.Sim.VMs[8003] = w.Probes[0].After.VMs[8003]
	w.Foreign[8003] = w.Probes[0].After.VMs[8003]
	// And a VM whose destroy task ran as the node went offline may be gone.
	w.Probes[0].Before.Tasks = []pvesim.TaskState{{Type: "qmdestroy", ID: "105", Running: true}}
	w.Probes[0].Before.VMs[105] = pvesim.VMState{Node: "pve2", Config: map[string]string{"description": sbDesc("sbx-c")}}
	if vs := CheckI10(w); len(vs) != 0 {
		t.Fatalf("a later change, a foreign holder, a failed create's holder, a destroy under way: %v", vs)
	}
}

// TestClusterPlan: a cluster plan is seeded like any other, pins creates to
// the cluster's nodes and takes nodes offline; the standalone plan of the
// same seed is the one it always was (nothing of the cluster is drawn).
func TestClusterPlan(t *testing.T) {
	nodes := []string{"pve1", "pve2", "pve3"}
	a := NewPlan(PlanOptions{Seed: 41, Ops: 300, Workers: 8, Nodes: nodes})
	b := NewPlan(PlanOptions{Seed: 41, Ops: 300, Workers: 8, Nodes: nodes})
	single := NewPlan(PlanOptions{Seed: 41, Ops: 300, Workers: 8})
	one := NewPlan(PlanOptions{Seed: 41, Ops: 300, Workers: 8, Nodes: []string{"pve"}})
	outages, pinned, placed, moves := 0, 0, 0, 0
	for w := range a.Workers {
		for i, st := range a.Workers[w] {
			sb := b.Workers[w][i]
			if st.Op != sb.Op || (st.Fault == nil) != (sb.Fault == nil) || (st.Fault != nil && *st.Fault != *sb.Fault) {
				t.Fatalf("seed 41 drew two cluster plans (worker %d step %d)", w, i)
			}
			if s1, s2 := single.Workers[w][i], one.Workers[w][i]; s1.Op != s2.Op || s1.Pause != s2.Pause || (s1.Fault == nil) != (s2.Fault == nil) ||
				(s1.Fault != nil && *s1.Fault != *s2.Fault) || s1.Op.Node != "" || (s1.Fault != nil && s1.Fault.Kind == FaultNodeOffline) {
				t.Fatalf("a standalone plan drew something of a cluster (worker %d step %d)", w, i)
			}
			if st.Fault != nil && st.Fault.Kind == FaultNodeOffline {
				outages++
				if st.Fault.Node == "" || st.Fault.RevertAfter < 2 {
					t.Errorf("outage %+v", st.Fault)
				}
			}
			switch {
			case st.Op.Node != "" && st.Op.Kind == OpSandboxCreate:
				pinned++
			case st.Op.Node != "" && st.Op.Kind == OpWsCreate:
				placed++
			case st.Op.Node != "" && st.Op.Kind == OpWsMove:
				moves++
			case st.Op.Kind == OpWsMove:
				t.Errorf("%s without a node", st.Op)
			case st.Op.Node != "":
				t.Errorf("%s with a node", st.Op)
			}
		}
	}
	if outages < 3 || pinned == 0 || placed == 0 || moves == 0 {
		t.Fatalf("cluster plan: %d outages, %d pinned sandbox creates, %d placed workspace creates, %d moves", outages, pinned, placed, moves)
	}
}
