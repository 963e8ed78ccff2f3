package provider_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
)

// vmHas checks the Proxmox VM behind a sandbox: running or not, and its
// cores and memory as the simulator holds them.
func vmHas(d *agent.Dev, addr string, running bool, cores, memoryMB int) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		vmid := atoi(s.RootModule().Resources[addr].Primary.Attributes["vmid"])
		v, ok := d.Sim.Dump().VMs[vmid]
		switch {
		case !ok:
			return fmt.Errorf("VM %d is not in Proxmox", vmid)
		case v.Running != running:
			return fmt.Errorf("VM %d running = %v, want %v", vmid, v.Running, running)
		case v.Config["cores"] != strconv.Itoa(cores) || v.Config["memory"] != strconv.Itoa(memoryMB):
			return fmt.Errorf("VM %d has cores %q, memory %q; want %d, %d", vmid, v.Config["cores"], v.Config["memory"], cores, memoryMB)
		}
		return nil
	}
}

var emptyAfterApply = resource.ConfigPlanChecks{PostApplyPostRefresh: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}

// TestAccSandboxPauseResize: power_state paused hibernates in place and
// resumes; cores and memory_mb default to the profile's and change in place;
// a running sandbox's resize is pending until its next start; every apply
// leaves an empty plan; an out-of-band hibernation is repaired.
func TestAccSandboxPauseResize(t *testing.T) {
	d, c := startAgent(t)
	ctx := context.Background()
	prof, err := c.Profile(ctx, "yolo-ephemeral")
	must(t, err)
	cfg := func(ttl, power, extra string) string {
		return hcl(fmt.Sprintf(`
resource "agentlab_sandbox" "a" {
  name        = "acc-pause"
  profile     = "yolo-ephemeral"
  ttl         = %q
  power_state = %q
  %s
}`, ttl, power, extra))
	}
	sb := "agentlab_sandbox.a"
	var lease string
	leaseRenewed := func(s *terraform.State) error {
		got := s.RootModule().Resources[sb].Primary.Attributes["lease_expires_at"]
		if got <= lease {
			return fmt.Errorf("lease not renewed: %s, was %s", got, lease)
		}
		lease = got
		return nil
	}
	resized := `cores = 3
  memory_mb = 3072`
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{
				Config:           cfg("2h", "running", ""),
				ConfigPlanChecks: emptyAfterApply,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(sb, "cores", strconv.Itoa(prof.Cores)),
					resource.TestCheckResourceAttr(sb, "memory_mb", strconv.Itoa(prof.MemoryMB)),
					vmHas(d, sb, true, prof.Cores, prof.MemoryMB),
					func(s *terraform.State) error {
						lease = s.RootModule().Resources[sb].Primary.Attributes["lease_expires_at"]
						return nil
					},
				),
			},
			{ResourceName: sb, ImportState: true, ImportStateId: "acc-pause", ImportStateVerify: true,
				ImportStateVerifyIgnore: []string{"timeouts", "ttl"}},
			// A resize of a running sandbox: in place, the state and address
			// stay known in the plan, Proxmox holds the new values (pending
			// until the next start), and the next plan is empty.
			{
				Config: cfg("2h", "running", resized),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction(sb, plancheck.ResourceActionUpdate),
						plancheck.ExpectKnownValue(sb, tfjsonpath.New("state"), knownvalue.StringExact("RUNNING")),
						plancheck.ExpectKnownValue(sb, tfjsonpath.New("ip"), knownvalue.StringRegexp(regexp.MustCompile(`^10\.77\.`))),
						plancheck.ExpectKnownValue(sb, tfjsonpath.New("cores"), knownvalue.Int64Exact(3)),
					},
					PostApplyPostRefresh: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(sb, "cores", "3"),
					resource.TestCheckResourceAttr(sb, "memory_mb", "3072"),
					vmHas(d, sb, true, 3, 3072),
				),
			},
			// Renew, then hibernate, in one apply.
			{
				PreConfig:        func() { time.Sleep(1100 * time.Millisecond) }, // leases have second resolution
				Config:           cfg("3h", "paused", resized),
				ConfigPlanChecks: emptyAfterApply,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(sb, "state", "SUSPENDED"),
					resource.TestCheckResourceAttr(sb, "power_state", "paused"),
					resource.TestCheckResourceAttr(sb, "ttl", "3h"),
					vmHas(d, sb, false, 3, 3072),
					leaseRenewed,
				),
			},
			// A hibernated sandbox that stays paused can neither be renewed nor resized.
			{Config: cfg("4h", "paused", resized), PlanOnly: true,
				ExpectError: regexp.MustCompile(`(?s)Invalid Lease Change.*renewed\s+only\s+while\s+the\s+sandbox\s+runs`)},
			{Config: cfg("3h", "paused", "cores = 4"), PlanOnly: true,
				ExpectError: regexp.MustCompile(`(?s)Invalid Resize.*resizes\s+only\s+a\s+running\s+or\s+stopped`)},
			// Resume, then renew.
			{
				PreConfig:        func() { time.Sleep(1100 * time.Millisecond) },
				Config:           cfg("4h", "running", resized),
				ConfigPlanChecks: emptyAfterApply,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(sb, "state", "RUNNING"),
					resource.TestCheckResourceAttr(sb, "power_state", "running"),
					vmHas(d, sb, true, 3, 3072),
					leaseRenewed,
				),
			},
			// Hibernated out of band (as idle hibernation does): drift the apply repairs by resuming.
			{
				PreConfig:        func() { must(t, err2(c.Hibernate(ctx, "acc-pause"))) },
				Config:           cfg("4h", "running", resized),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(sb, plancheck.ResourceActionUpdate)}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(sb, "state", "RUNNING"),
					vmHas(d, sb, true, 3, 3072),
				),
			},
			{Config: cfg("4h", "paused", resized), Check: resource.TestCheckResourceAttr(sb, "state", "SUSPENDED")},
			// Paused to stopped with a resize: stopped first, so Proxmox takes it at once.
			{
				Config:           cfg("4h", "stopped", "cores = 2\n  memory_mb = 2048"),
				ConfigPlanChecks: emptyAfterApply,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(sb, "state", "STOPPED"),
					resource.TestCheckResourceAttr(sb, "power_state", "stopped"),
					resource.TestCheckResourceAttr(sb, "cores", "2"),
					vmHas(d, sb, false, 2, 2048),
				),
			},
			// Removing the overrides keeps the values: no plan.
			{Config: cfg("4h", "stopped", ""), PlanOnly: true},
			{
				Config:           cfg("4h", "paused", "cores = 2\n  memory_mb = 2048"),
				ConfigPlanChecks: emptyAfterApply,
				Check:            resource.ComposeAggregateTestCheckFunc(resource.TestCheckResourceAttr(sb, "state", "SUSPENDED"), vmHas(d, sb, false, 2, 2048)),
			},
		},
	})
}

// TestAccSandboxCreatePausedResized: a sandbox created with its own cores and
// memory boots with them (none pending), and one created paused ends
// hibernated.
func TestAccSandboxCreatePausedResized(t *testing.T) {
	d, _ := startAgent(t)
	sb := "agentlab_sandbox.a"
	cfg := func(power string) string {
		return hcl(fmt.Sprintf(`
resource "agentlab_sandbox" "a" {
  name        = "acc-cpaused"
  profile     = "yolo-ephemeral"
  power_state = %q
  cores       = 4
  memory_mb   = 2048
}`, power))
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{
				Config:           cfg("paused"),
				ConfigPlanChecks: emptyAfterApply,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(sb, "state", "SUSPENDED"),
					resource.TestCheckResourceAttr(sb, "power_state", "paused"),
					resource.TestCheckResourceAttr(sb, "cores", "4"),
					resource.TestCheckResourceAttr(sb, "memory_mb", "2048"),
					vmHas(d, sb, false, 4, 2048),
				),
			},
			{
				Config:           cfg("running"),
				ConfigPlanChecks: emptyAfterApply,
				Check:            resource.ComposeAggregateTestCheckFunc(resource.TestCheckResourceAttr(sb, "state", "RUNNING"), vmHas(d, sb, true, 4, 2048)),
			},
		},
	})
}
