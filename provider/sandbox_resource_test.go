package provider_test

import (
	"fmt"
	"regexp"
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
