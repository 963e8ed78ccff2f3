package agent_test

import (
	"reflect"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
)

// `agentd dev --nodes 3` runs the agent against a simulated cluster; until
// the agent places across nodes it works on pve1, where the template is.
func TestDevCluster(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3})
	if got := d.Sim.Nodes(); !reflect.DeepEqual(got, []string{"pve1", "pve2", "pve3"}) {
		t.Fatalf("nodes %v", got)
	}
	if d.Config.ProxmoxNode != "pve1" {
		t.Fatalf("agent node %q", d.Config.ProxmoxNode)
	}
	sb := create(t, c, "clustered")
	if sb.State != "RUNNING" {
		t.Fatalf("sandbox %s", sb.State)
	}
	for id, v := range vms(d) {
		if v.Node != "pve1" {
			t.Errorf("VM %d on %s", id, v.Node)
		}
	}
}
