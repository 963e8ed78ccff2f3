package soak

import (
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// TestCheckI9PoolTag: a claimed sandbox whose VM carries the pool tag again
// (a revert to a clean snapshot taken while it was a member restored the
// member's tags) is a violation; the same VM with the claimer's tags is not.
func TestCheckI9PoolTag(t *testing.T) {
	desc := "Managed by AgentLab agentd; do not edit or remove these lines.\nagentlab-sandbox-id: sbx-1\nagentlab-sandbox-name: mine\nagentlab-instance: ai-1\n"
	world := func(tags string) *World {
		return &World{
			Sim:       &pvesim.State{VMs: map[int]pvesim.VMState{100: {Running: true, Config: map[string]string{"description": desc, "tags": tags}}}},
			Sandboxes: []api.Sandbox{{ID: "sbx-1", Name: "mine", Profile: "p", State: api.StateRunning, VMID: 100}},
		}
	}
	if vs := CheckI9(world("agentlab;agentlab-pool")); len(vs) != 1 || !strings.Contains(vs[0].Detail, "pool tag") {
		t.Fatalf("I9 with the pool tag: %v", vs)
	}
	if vs := CheckI9(world("agentlab;team-a")); len(vs) != 0 {
		t.Fatalf("I9 with the claimer's tags: %v", vs)
	}
}
