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
	const audit = 100
	m := &Manager{opts: Options{AuditPerCycle: audit}}
	var rows []*store.Sandbox
	var ws []*store.Workspace
	byID := map[int]pve.Resource{}
	n := 3 * audit
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
	if due := m.proofsDue(rows, ws, byID); len(due) != audit {
		t.Fatalf("%d objects due on a steady listing, want the rotating %d", len(due), audit)
	}
	// Without the audit a steady listing makes nothing due; a changed name
	// makes that row due at once.
	m.opts.AuditPerCycle = 0
	if due := m.proofsDue(rows, ws, byID); len(due) != 0 {
		t.Fatalf("%d objects due on a steady listing without the audit", len(due))
	}
	r := byID[1001]
	r.Name = "someone-else"
	byID[1001] = r
	if due := m.proofsDue(rows, ws, byID); len(due) != 1 || !due["sbx-0001"] {
		t.Fatalf("renamed VM 1001: due %v", due)
	}
}
