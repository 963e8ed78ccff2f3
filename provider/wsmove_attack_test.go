package provider_test

import (
	"context"
	"fmt"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
)

// TestAccClusterWorkspaceMoveEdges: node and size changed at once move and
// grow the workspace in place; a node change while a sandbox uses it fails
// with the reason and replaces nothing (the holder, its data and its node
// stay); after an operator migrates the holder by hand, asking for that
// node is an in-place update that only follows it, and the next plan is
// empty.
func TestAccClusterWorkspaceMoveEdges(t *testing.T) {
	d, c := startAgentWith(t, agent.DevOptions{Nodes: 3})
	cfg := func(node string, size int, sandbox bool) string {
		sb := ""
		if sandbox {
			sb = `
resource "agentlab_sandbox" "s" {
  name      = "acc-mv-user"
  profile   = "yolo-workspace"
  workspace = agentlab_workspace.w.name
}`
		}
		return hcl(fmt.Sprintf(`
resource "agentlab_workspace" "w" {
  name                = "acc-mv-edge"
  size_gb             = %d
  deletion_protection = false
  node                = %q
}%s`, size, node, sb))
	}
	addr := "agentlab_workspace.w"
	var holder int
	at := func(node string, size int) resource.TestCheckFunc {
		return func(s *terraform.State) error {
			attrs := s.RootModule().Resources[addr].Primary.Attributes
			if attrs["node"] != node || attrs["size_gb"] != fmt.Sprint(size) {
				return fmt.Errorf("state: node %q size %q, want %s/%d", attrs["node"], attrs["size_gb"], node, size)
			}
			w, err := c.Workspace(context.Background(), "acc-mv-edge")
			if err != nil {
				return err
			}
			if w.Node != node || w.SizeGB != size || d.Sim.Dump().VMs[w.HolderVMID].Node != node {
				return fmt.Errorf("agentd: %+v; Proxmox has the holder on %s; want %s/%d", w, d.Sim.Dump().VMs[w.HolderVMID].Node, node, size)
			}
			if holder == 0 {
				holder = w.HolderVMID
				return d.Sim.WriteFile(w.Volume, "/work/kept", "yes")
			}
			if w.HolderVMID != holder {
				return fmt.Errorf("holder VM %d, was %d: replaced, not moved", w.HolderVMID, holder)
			}
			if got, ok, err := d.Sim.ReadFile(w.Volume, "/work/kept"); err != nil || !ok || got != "yes" {
				return fmt.Errorf("data on %s: %q %v %v", w.Volume, got, ok, err)
			}
			return nil
		}
	}
	update := resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate)}}
	empty := resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{Config: cfg("pve1", 2, false), Check: at("pve1", 2)},
			// Node and size at once: moved, then grown, in place.
			{Config: cfg("pve2", 3, false), ConfigPlanChecks: update, Check: at("pve2", 3)},
			{Config: cfg("pve2", 3, true), Check: at("pve2", 3)},
			// Attached: an update that fails with the reason, no replace.
			{Config: cfg("pve3", 3, true), ConfigPlanChecks: update, ExpectError: regexp.MustCompile(`attached to sandbox\s+acc-mv-user`)},
			{Config: cfg("pve2", 3, true), ConfigPlanChecks: empty, Check: at("pve2", 3)},
			{Config: cfg("pve2", 3, false), Check: at("pve2", 3)},
			// Migrated by hand to pve3; the config then names pve3.
			{
				PreConfig: func() {
					w, err := c.Workspace(context.Background(), "acc-mv-edge")
					if err != nil {
						t.Fatal(err)
					}
					id, secret := d.Sim.Token()
					pc, err := pve.New(pve.Config{URL: d.Sim.URL(), TokenID: id, Secret: secret, Node: "pve1", CAPEM: d.Sim.CAPEM()})
					if err != nil {
						t.Fatal(err)
					}
					if err := pc.On("pve2").Migrate(context.Background(), w.HolderVMID, "pve3", ""); err != nil {
						t.Fatal(err)
					}
				},
				Config: cfg("pve3", 3, false), Check: at("pve3", 3),
			},
			{Config: cfg("pve3", 3, false), ConfigPlanChecks: empty},
		},
	})
}
