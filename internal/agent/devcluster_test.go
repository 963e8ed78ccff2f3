package agent_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// TestDevCluster: on a simulated 3-node cluster (a template on every node,
// snippets on the shared storage) sandboxes spread over the nodes, each
// placement is an event naming its reason, the sandbox reports the node
// its VM is on, a pin wins and a drained node gets nothing new.
func TestDevCluster(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3})
	ctx := tctx(t)
	if got := d.Sim.Nodes(); !reflect.DeepEqual(got, []string{"pve1", "pve2", "pve3"}) {
		t.Fatalf("nodes %v", got)
	}
	seen := map[string]bool{}
	for _, name := range []string{"c1", "c2", "c3"} {
		sb := create(t, c, name)
		if sb.State != api.StateRunning {
			t.Fatalf("sandbox %s: %s %s", name, sb.State, sb.Error)
		}
		if v := d.Sim.Dump().VMs[sb.VMID]; v.Node != sb.Node || !v.Running {
			t.Fatalf("sandbox %s says node %s; its VM %d is on %s (running %v)", name, sb.Node, sb.VMID, v.Node, v.Running)
		}
		seen[sb.Node] = true
		// The agent network is the SDN VNet on every node.
		if net0 := d.Sim.Dump().VMs[sb.VMID].Config["net0"]; !strings.Contains(net0, "bridge=agentnet") {
			t.Errorf("sandbox %s: net0 %q, want the VNet agentnet", name, net0)
		}
		evs, err := c.Events(ctx, sb.ID, 0, 50)
		if err != nil {
			t.Fatal(err)
		}
		placed := false
		for _, e := range evs.Events {
			placed = placed || strings.HasPrefix(e.Message, "placed on "+sb.Node+": ") && strings.Contains(e.Message, "MiB free after it")
		}
		if !placed {
			t.Errorf("sandbox %s has no placement event: %+v", name, evs.Events)
		}
	}
	if len(seen) != 3 {
		t.Fatalf("3 sandboxes on equal nodes landed on %v, want one per node", seen)
	}
	// A pin wins over the scores; a drained node gets no new sandbox.
	pinned, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "pinned", Profile: "yolo-ephemeral", Node: "pve2"})
	if err != nil {
		t.Fatal(err)
	}
	if pinned, err = c.WaitSandbox(ctx, pinned.ID, 0); err != nil || pinned.Node != "pve2" || pinned.State != api.StateRunning {
		t.Fatalf("pinned to pve2: %+v %v", pinned, err)
	}
	if _, err := c.DrainNode(ctx, "pve3", true); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"d1", "d2"} {
		if sb := create(t, c, name); sb.Node == "pve3" {
			t.Fatalf("sandbox %s placed on drained pve3", name)
		}
	}
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "bad", Profile: "yolo-ephemeral", Node: "pve9"}); err == nil {
		// pve9 is not in the cluster: refused at placement, named.
		sb, _ := c.WaitSandbox(ctx, "bad", 0)
		if sb.State != api.StateFailed || !strings.Contains(sb.Error, "pve9 is not in the cluster") {
			t.Fatalf("pinned to pve9: %s %q", sb.State, sb.Error)
		}
	}
}
