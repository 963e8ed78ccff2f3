package provider_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

// TestAccSandboxUpdateOrder: a ttl change with a stop in one apply renews
// first, then stops; a start with a ttl change starts first; a renewal the
// sandbox cannot take (stays stopped, or no lease) fails at plan time. Plans
// for a ttl change or a resize keep the values the update cannot change.
func TestAccSandboxUpdateOrder(t *testing.T) {
	d, _ := startAgent(t)
	cfg := func(ttl, power string, size int) string {
		return hcl(fmt.Sprintf(`
resource "agentlab_workspace" "w" {
  name                = "acc-order"
  size_gb             = %d
  deletion_protection = false
}
resource "agentlab_sandbox" "a" {
  name        = "acc-order"
  profile     = "yolo-ephemeral"
  ttl         = %q
  power_state = %q
}`, size, ttl, power))
	}
	sb, ws := "agentlab_sandbox.a", "agentlab_workspace.w"
	var lease string
	leaseAfter := func(s *terraform.State) error {
		got := s.RootModule().Resources[sb].Primary.Attributes["lease_expires_at"]
		if got <= lease {
			return fmt.Errorf("lease not renewed: %s, was %s", got, lease)
		}
		lease = got
		return nil
	}
	quiet := func(leaseKnown bool) []plancheck.PlanCheck {
		c := []plancheck.PlanCheck{
			plancheck.ExpectResourceAction(sb, plancheck.ResourceActionUpdate),
			plancheck.ExpectKnownValue(sb, tfjsonpath.New("state"), knownvalue.StringExact("RUNNING")),
			plancheck.ExpectKnownValue(sb, tfjsonpath.New("ip"), knownvalue.StringRegexp(regexp.MustCompile(`^10\.77\.`))),
			plancheck.ExpectKnownValue(sb, tfjsonpath.New("vmid"), knownvalue.NotNull()),
		}
		if leaseKnown {
			return append(c, plancheck.ExpectKnownValue(sb, tfjsonpath.New("lease_expires_at"), knownvalue.NotNull()))
		}
		return append(c, plancheck.ExpectUnknownValue(sb, tfjsonpath.New("lease_expires_at")))
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{Config: cfg("2h", "running", 5), Check: func(s *terraform.State) error {
				lease = s.RootModule().Resources[sb].Primary.Attributes["lease_expires_at"]
				return nil
			}},
			// The same lease spelled differently is no renewal.
			{
				Config: cfg("120m", "running", 5),
				Check: resource.ComposeAggregateTestCheckFunc(resource.TestCheckResourceAttr(sb, "ttl", "120m"), func(s *terraform.State) error {
					if got := s.RootModule().Resources[sb].Primary.Attributes["lease_expires_at"]; got != lease {
						return fmt.Errorf("respelling the ttl renewed the lease: %s, was %s", got, lease)
					}
					return nil
				}),
			},
			// A ttl change: only the lease is unknown; a resize: nothing is.
			{
				PreConfig:        func() { time.Sleep(1100 * time.Millisecond) }, // leases have second resolution
				Config:           cfg("3h", "running", 5),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: quiet(false)},
				Check:            resource.ComposeAggregateTestCheckFunc(resource.TestCheckResourceAttr(sb, "ttl", "3h"), leaseAfter),
			},
			{
				Config: cfg("3h", "running", 6),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(ws, plancheck.ResourceActionUpdate),
					plancheck.ExpectKnownValue(ws, tfjsonpath.New("attached_sandbox"), knownvalue.Null()),
					plancheck.ExpectKnownValue(ws, tfjsonpath.New("holder_vmid"), knownvalue.NotNull()),
					plancheck.ExpectResourceAction(sb, plancheck.ResourceActionNoop),
				}},
			},
			// Renew, then stop, in one apply.
			{
				PreConfig: func() { time.Sleep(1100 * time.Millisecond) },
				Config:    cfg("4h", "stopped", 6),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(sb, "state", "STOPPED"),
					resource.TestCheckResourceAttr(sb, "ttl", "4h"),
					leaseAfter,
				),
			},
			// A stopped sandbox that stays stopped cannot be renewed: refused by the plan.
			{Config: cfg("5h", "stopped", 6), PlanOnly: true, ExpectError: regexp.MustCompile(`(?s)Invalid Lease Change.*renewed\s+only\s+while\s+the\s+sandbox\s+runs`)},
			// Start, then renew.
			{
				PreConfig: func() { time.Sleep(1100 * time.Millisecond) },
				Config:    cfg("5h", "running", 6),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(sb, "state", "RUNNING"),
					resource.TestCheckResourceAttr(sb, "ttl", "5h"),
					leaseAfter,
				),
			},
			{Config: cfg("0", "running", 6), PlanOnly: true, ExpectError: regexp.MustCompile(`(?s)Invalid Lease Change.*cannot\s+be\s+removed\s+in\s+place`)},
		},
	})
}

func TestAccSandbox(t *testing.T) {
	d, c := startAgent(t)
	ctx := context.Background()
	cfg := func(extra string) string {
		return hcl(`
resource "agentlab_workspace" "w" {
  name                = "acc-ws"
  size_gb             = 5
  deletion_protection = false
}
resource "agentlab_sandbox" "a" {
  name    = "acc-a"
  profile = "yolo-ephemeral"
  ttl     = "2h"
  tags    = ["team-a"]
` + extra + `
}`)
	}
	var firstID string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{
				Config: cfg(""),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "state", "RUNNING"),
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "power_state", "running"),
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "ttl", "2h"),
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "keepalive", "false"),
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "node", "pve"),
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "team", "default"),
					resource.TestMatchResourceAttr("agentlab_sandbox.a", "ip", regexp.MustCompile(`^10\.77\.`)),
					resource.TestMatchResourceAttr("agentlab_sandbox.a", "id", regexp.MustCompile(`^sbx-`)),
					resource.TestCheckResourceAttrSet("agentlab_sandbox.a", "lease_expires_at"),
					resource.TestCheckTypeSetElemAttr("agentlab_sandbox.a", "tags.*", "team-a"),
					func(s *terraform.State) error {
						firstID = s.RootModule().Resources["agentlab_sandbox.a"].Primary.ID
						vmid := s.RootModule().Resources["agentlab_sandbox.a"].Primary.Attributes["vmid"]
						if v := d.Sim.Dump().VMs[atoi(vmid)]; !v.Running || v.Config["tags"] != "agentlab;team-a" {
							return fmt.Errorf("VM %s in Proxmox: %+v", vmid, v)
						}
						return nil
					},
				),
			},
			// Import by name and by VMID reproduces the state.
			// An imported lease has agentd's seconds in Go's spelling (2h0m0s), the same duration as the configured 2h.
			{ResourceName: "agentlab_sandbox.a", ImportState: true, ImportStateId: "acc-a", ImportStateVerify: true, ImportStateVerifyIgnore: []string{"timeouts", "ttl"},
				ImportStateCheck: importedTTL("2h0m0s")},
			{ResourceName: "agentlab_sandbox.a", ImportState: true, ImportStateIdFunc: func(s *terraform.State) (string, error) {
				return s.RootModule().Resources["agentlab_sandbox.a"].Primary.Attributes["vmid"], nil
			}, ImportStateVerify: true, ImportStateVerifyIgnore: []string{"timeouts", "ttl"}, ImportStateCheck: importedTTL("2h0m0s")},
			// Power state and lease change in place.
			{
				Config:           cfg(`power_state = "stopped"`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("agentlab_sandbox.a", plancheck.ResourceActionUpdate)}},
				Check:            resource.TestCheckResourceAttr("agentlab_sandbox.a", "state", "STOPPED"),
			},
			{
				Config: strings.Replace(cfg(`workspace = agentlab_workspace.w.name`), `"2h"`, `"4h"`, 1),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "state", "RUNNING"),
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "ttl", "4h"),
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "workspace", "acc-ws"),
					func(s *terraform.State) error {
						if id := s.RootModule().Resources["agentlab_sandbox.a"].Primary.ID; id != firstID {
							return fmt.Errorf("in-place changes replaced the sandbox: %s → %s", firstID, id)
						}
						return nil
					},
				),
			},
			// Idle stop out of band and a detached workspace: drift the plan repairs in place.
			{
				PreConfig: func() {
					must(t, err2(c.Stop(ctx, "acc-a")))
					must(t, err2(c.DetachWorkspace(ctx, "acc-ws")))
				},
				Config:           strings.Replace(cfg(`workspace = agentlab_workspace.w.name`), `"2h"`, `"4h"`, 1),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("agentlab_sandbox.a", plancheck.ResourceActionUpdate)}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "state", "RUNNING"),
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "workspace", "acc-ws"),
					func(*terraform.State) error {
						if w, err := c.Workspace(ctx, "acc-ws"); err != nil || w.AttachedSandbox != "acc-a" {
							return fmt.Errorf("workspace not re-attached: %+v %v", w, err)
						}
						return nil
					},
				),
			},
			// Destroyed out of band: the plan recreates it.
			{
				PreConfig: func() {
					must(t, err2(c.DetachWorkspace(ctx, "acc-ws")))
					must(t, err2(c.Destroy(ctx, "acc-a", false)))
				},
				Config:           cfg(""),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("agentlab_sandbox.a", plancheck.ResourceActionCreate)}},
				Check: func(s *terraform.State) error {
					if id := s.RootModule().Resources["agentlab_sandbox.a"].Primary.ID; id == firstID {
						return fmt.Errorf("sandbox not recreated (%s)", id)
					}
					return nil
				},
			},
			// Changing the profile replaces it.
			{
				Config:           strings.Replace(cfg(""), "yolo-ephemeral", "interactive-dev", 1),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("agentlab_sandbox.a", plancheck.ResourceActionDestroyBeforeCreate)}},
				Check:            resource.TestCheckResourceAttr("agentlab_sandbox.a", "profile", "interactive-dev"),
			},
		},
	})
}

func TestAccSandboxErrors(t *testing.T) {
	d, _ := startAgent(t)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{
				Config:      providerBlock + `resource "agentlab_sandbox" "x" {` + "\n" + `name = "x"` + "\n" + `profile = "nope"` + "\n}",
				ExpectError: regexp.MustCompile(`(?s)Invalid Profile.*profile "nope" does not exist`),
			},
			{
				Config:      providerBlock + `resource "agentlab_sandbox" "x" {` + "\n" + `name = "x"` + "\n" + `profile = "yolo-ephemeral"` + "\n" + `power_state = "hibernated"` + "\n}",
				ExpectError: regexp.MustCompile(`power_state`),
			},
			{
				PreConfig:   func() { d.Sim.FailTask("qmstart", "", "kvm: out of memory") },
				Config:      providerBlock + `resource "agentlab_sandbox" "x" {` + "\n" + `name = "x"` + "\n" + `profile = "yolo-ephemeral"` + "\n}",
				ExpectError: regexp.MustCompile(`(?s)Unable to Create Sandbox.*is FAILED: start: start VM \d+: task.*kvm: out\s+of\s+memory`),
			},
			{
				// The failed (tainted) sandbox is replaced once the fault is gone.
				PreConfig: func() { d.Sim.ClearFaults() },
				Config:    providerBlock + `resource "agentlab_sandbox" "x" {` + "\n" + `name = "x"` + "\n" + `profile = "yolo-ephemeral"` + "\n}",
				Check:     resource.TestCheckResourceAttr("agentlab_sandbox.x", "state", "RUNNING"),
			},
		},
	})
}
