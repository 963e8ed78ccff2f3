package sandbox

import (
	"fmt"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// TestProofsDueKnowsTeamVMNames: a team's VMs carry "<team>-<name>", which
// is their right name: a steady listing makes only the rotating share due,
// as for default's VMs, not every team VM every cycle.
func TestProofsDueKnowsTeamVMNames(t *testing.T) {
	m := &Manager{}
	var rows []*store.Sandbox
	var ws []*store.Workspace
	byID := map[int]pve.Resource{}
	n := 3 * proofsPerCycle
	for i := 0; i < n; i++ {
		team, vmName := "default", fmt.Sprintf("s%d", i)
		if i%2 == 0 {
			team, vmName = "a", "a-"+vmName
		}
		rows = append(rows, &store.Sandbox{Sandbox: api.Sandbox{ID: fmt.Sprintf("sbx-%04d", i), Name: fmt.Sprintf("s%d", i), Team: team, VMID: 1000 + i}})
		byID[1000+i] = pve.Resource{VMID: 1000 + i, Name: vmName, Tags: []string{OwnerTag}}
	}
	ws = append(ws, &store.Workspace{ID: "ws-1", Name: "data", Team: "a", HolderVMID: 5000})
	byID[5000] = pve.Resource{VMID: 5000, Name: "ws-a-data", Tags: []string{"agentlab-workspace"}}
	m.proofsDue(rows, ws, byID) // the first cycle proves everything
	if due := m.proofsDue(rows, ws, byID); len(due) != proofsPerCycle {
		t.Fatalf("%d objects due on a steady listing, want the rotating %d", len(due), proofsPerCycle)
	}
}
