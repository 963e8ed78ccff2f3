package provider_test

import (
	"context"
	"fmt"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
)

// TestAccCluster runs against a simulated three-node cluster: a sandbox
// pinned to pve2 is created there (agentd's and Proxmox's view), an unpinned
// one reads the node agentd placed it on, neither shows a diff on the next
// plan, unsetting the pin keeps the sandbox (also through an update in
// place), an unknown node fails at plan
// time naming the known ones, a new pin replaces the sandbox onto that node,
// agentlab_nodes lists the three nodes online, and an import reads the node.
func TestAccCluster(t *testing.T) {
	d, c := startAgentWith(t, agent.DevOptions{Nodes: 3})
	cfgPower := func(pin, power string) string {
		node := ""
		if pin != "" {
			node = fmt.Sprintf("node = %q", pin)
		}
		return hcl(fmt.Sprintf(`
resource "agentlab_workspace" "w" {
  name                = "acc-cluster"
  size_gb             = 5
  deletion_protection = false
}
resource "agentlab_sandbox" "pinned" {
  name    = "acc-pinned"
  profile = "yolo-ephemeral"
  power_state = %q
  %s
}
resource "agentlab_sandbox" "free" {
  name    = "acc-free"
  profile = "yolo-ephemeral"
}
data "agentlab_nodes" "n" {
  depends_on = [agentlab_sandbox.pinned, agentlab_sandbox.free]
}`, power, node))
	}
	cfg := func(pin string) string { return cfgPower(pin, "running") }
	pinned, free, nodes := "agentlab_sandbox.pinned", "agentlab_sandbox.free", "data.agentlab_nodes.n"
	// on checks that agentd and the simulated Proxmox both have the
	// sandbox on node, and that the state says so.
	on := func(addr, name, node string) resource.TestCheckFunc {
		return func(s *terraform.State) error {
			if got := s.RootModule().Resources[addr].Primary.Attributes["node"]; got != node {
				return fmt.Errorf("%s: state node %q, want %q", addr, got, node)
			}
			sb, err := c.Sandbox(context.Background(), name)
			if err != nil {
				return err
			}
			if sb.Node != node {
				return fmt.Errorf("agentd has %s on %q, want %q", name, sb.Node, node)
			}
			if got := d.Sim.Dump().VMs[sb.VMID].Node; got != node {
				return fmt.Errorf("Proxmox has VM %d of %s on %q, want %q", sb.VMID, name, got, node)
			}
			return nil
		}
	}
	var pinnedID string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{
				Config: cfg("pve2"),
				Check: resource.ComposeAggregateTestCheckFunc(
					on(pinned, "acc-pinned", "pve2"),
					resource.TestMatchResourceAttr(free, "node", regexp.MustCompile(`^pve[123]$`)),
					func(s *terraform.State) error {
						node := s.RootModule().Resources[free].Primary.Attributes["node"]
						pinnedID = s.RootModule().Resources[pinned].Primary.ID
						return on(free, "acc-free", node)(s)
					},
					resource.TestMatchResourceAttr("agentlab_workspace.w", "node", regexp.MustCompile(`^pve[123]$`)),
					resource.TestCheckResourceAttr(nodes, "names.#", "3"),
					resource.TestCheckResourceAttr(nodes, "names.0", "pve1"),
					resource.TestCheckResourceAttr(nodes, "names.2", "pve3"),
					resource.TestCheckResourceAttr(nodes, "nodes.#", "3"),
					resource.TestCheckResourceAttr(nodes, "nodes.0.online", "true"),
					resource.TestCheckResourceAttr(nodes, "nodes.1.online", "true"),
					resource.TestCheckResourceAttr(nodes, "nodes.2.online", "true"),
					resource.TestCheckResourceAttr(nodes, "nodes.1.name", "pve2"),
					resource.TestCheckResourceAttr(nodes, "nodes.1.drained", "false"),
					resource.TestMatchResourceAttr(nodes, "nodes.1.sandboxes", regexp.MustCompile(`^[12]$`)),
					resource.TestMatchResourceAttr(nodes, "nodes.1.memory_mb", regexp.MustCompile(`^[1-9]\d*$`)),
					resource.TestMatchResourceAttr(nodes, "nodes.1.cpus", regexp.MustCompile(`^[1-9]\d*$`)),
				),
			},
			// No perpetual diff: the computed node of the unpinned one is kept.
			{Config: cfg("pve2"), ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}},
			// Import reads the node.
			{Config: cfg("pve2"), ResourceName: pinned, ImportState: true, ImportStateId: "acc-pinned", ImportStateVerify: true,
				ImportStateVerifyIgnore: []string{"timeouts", "ttl"},
				ImportStateCheck: func(is []*terraform.InstanceState) error {
					if len(is) != 1 || is[0].Attributes["node"] != "pve2" {
						return fmt.Errorf("imported node: want pve2, got %+v", is)
					}
					return nil
				}},
			// Unsetting the pin leaves the sandbox where it is.
			{Config: cfg(""), ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}},
				Check: on(pinned, "acc-pinned", "pve2")},
			// An update in place of an unpinned sandbox keeps its node known
			// (no replacement for a node that is only unknown).
			{Config: cfgPower("", "stopped"), ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
				plancheck.ExpectResourceAction(pinned, plancheck.ResourceActionUpdate),
				plancheck.ExpectKnownValue(pinned, tfjsonpath.New("node"), knownvalue.StringExact("pve2")),
			}}, Check: resource.ComposeAggregateTestCheckFunc(on(pinned, "acc-pinned", "pve2"),
				resource.TestCheckResourceAttr(pinned, "state", "STOPPED"))},
			// A node agentd does not use fails the plan, naming the ones it does.
			{Config: cfg("pve9"), PlanOnly: true,
				ExpectError: regexp.MustCompile(`(?s)node "pve9" is not a node agentd uses;.*it uses pve1, pve2, pve3`)},
			// A new pin replaces the sandbox onto the new node; the other stays.
			{
				Config: cfg("pve3"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(pinned, plancheck.ResourceActionDestroyBeforeCreate),
					plancheck.ExpectResourceAction(free, plancheck.ResourceActionNoop),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(on(pinned, "acc-pinned", "pve3"), func(s *terraform.State) error {
					if id := s.RootModule().Resources[pinned].Primary.ID; id == pinnedID {
						return fmt.Errorf("pin changed but sandbox %s was kept", id)
					}
					return nil
				}),
			},
		},
	})
}

// TestAccClusterWorkspaceMove: a workspace created on pve1 moves to pve2
// when its node changes, as an update in place (the same holder, its data
// kept), with the state, agentd and the simulated Proxmox agreeing and no
// diff on the next plan; node and storage changed together move it onto
// that storage there, still in place; storage alone still replaces it.
func TestAccClusterWorkspaceMove(t *testing.T) {
	d, c := startAgentWith(t, agent.DevOptions{Nodes: 3})
	cfg := func(node, storage string) string {
		st := ""
		if storage != "" {
			st = fmt.Sprintf("storage = %q", storage)
		}
		return hcl(fmt.Sprintf(`
resource "agentlab_workspace" "w" {
  name                = "acc-move"
  size_gb             = 2
  deletion_protection = false
  node                = %q
  %s
}`, node, st))
	}
	addr := "agentlab_workspace.w"
	var holder int
	var wsID string
	// at checks that state, agentd and Proxmox have the holder on node,
	// its volume on storage, and the file written at create still there.
	at := func(node, storage string) resource.TestCheckFunc {
		return func(s *terraform.State) error {
			attrs := s.RootModule().Resources[addr].Primary.Attributes
			if attrs["node"] != node || attrs["storage"] != storage {
				return fmt.Errorf("state: node %q storage %q, want %s/%s", attrs["node"], attrs["storage"], node, storage)
			}
			w, err := c.Workspace(context.Background(), "acc-move")
			if err != nil {
				return err
			}
			if w.Node != node || w.Storage != storage {
				return fmt.Errorf("agentd: node %q storage %q, want %s/%s", w.Node, w.Storage, node, storage)
			}
			if holder != 0 && (w.HolderVMID != holder || w.ID != wsID) {
				return fmt.Errorf("holder VM %d, was %d: the workspace was replaced, not moved", w.HolderVMID, holder)
			}
			vm := d.Sim.Dump().VMs[w.HolderVMID]
			if vm.Node != node {
				return fmt.Errorf("Proxmox has holder %d on %q, want %q", w.HolderVMID, vm.Node, node)
			}
			if holder == 0 {
				holder, wsID = w.HolderVMID, w.ID
				return d.Sim.WriteFile(w.Volume, "/work/kept", "yes")
			}
			if got, ok, err := d.Sim.ReadFile(w.Volume, "/work/kept"); err != nil || !ok || got != "yes" {
				return fmt.Errorf("data on %s after the move: %q %v %v", w.Volume, got, ok, err)
			}
			return nil
		}
	}
	empty := resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}
	update := resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate)}}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{Config: cfg("pve1", ""), Check: at("pve1", "local-lvm")},
			{Config: cfg("pve2", ""), ConfigPlanChecks: update, Check: at("pve2", "local-lvm")},
			{Config: cfg("pve2", ""), ConfigPlanChecks: empty},
			// Node and storage together: still a move in place.
			{Config: cfg("pve3", "local-zfs"), ConfigPlanChecks: update, Check: at("pve3", "local-zfs")},
			{Config: cfg("pve3", "local-zfs"), ConfigPlanChecks: empty},
			// A node agentd does not use fails the plan.
			{Config: cfg("pve9", "local-zfs"), PlanOnly: true, ExpectError: regexp.MustCompile(`node "pve9" is not a node agentd uses`)},
			// Storage alone replaces the workspace (and warns that its data is lost).
			{Config: cfg("pve3", "local"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionDestroyBeforeCreate)}},
				Check: func(s *terraform.State) error {
					w, err := c.Workspace(context.Background(), "acc-move")
					if err != nil || w.ID == wsID || w.Node != "pve3" || w.Storage != "local" {
						return fmt.Errorf("after the replacement: %+v %v (old id %s)", w, err, wsID)
					}
					return nil
				}},
		},
	})
}
