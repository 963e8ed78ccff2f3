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
)

// TestAccSandboxPort: a port exposed with agentd's defaults (the LAN
// sources, an allocated host port) and with its own settings, imported by
// SANDBOX:PORT, left with an empty plan by every apply, and published again
// after agentd withdrew it (unexposed out of band, the sandbox stopped).
func TestAccSandboxPort(t *testing.T) {
	d, c := startAgent(t)
	ctx := context.Background()
	cfg := func(power, port string) string {
		return hcl(fmt.Sprintf(`
resource "agentlab_sandbox" "a" {
  name        = "acc-port"
  profile     = "yolo-ephemeral"
  power_state = %q
}
resource "agentlab_sandbox_port" "p" {
  sandbox = agentlab_sandbox.a.name
  port    = 8080
  %s
}`, power, port))
	}
	p := "agentlab_sandbox_port.p"
	own := `sources   = ["10.1.0.0/16", "203.0.113.7/32"]
  host_port = 20500
  ttl       = "1h"`
	var expires string
	exposed := func(hostPort int, sources ...string) resource.TestCheckFunc {
		return func(*terraform.State) error {
			ports, err := c.ExposedPorts(ctx, "acc-port")
			if err != nil {
				return err
			}
			if len(ports) != 1 || ports[0].Port != 8080 || ports[0].HostPort != hostPort || fmt.Sprint(ports[0].Sources) != fmt.Sprint(sources) {
				return fmt.Errorf("agentd has %+v, want port 8080 on host port %d from %v", ports, hostPort, sources)
			}
			return nil
		}
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy: resource.ComposeAggregateTestCheckFunc(noVMsLeft(d), func(*terraform.State) error {
			if ports, err := c.ExposedPorts(ctx, ""); err != nil || len(ports) != 0 {
				return fmt.Errorf("ports left exposed: %+v %v", ports, err)
			}
			return nil
		}),
		Steps: []resource.TestStep{
			{
				Config:           cfg("running", ""),
				ConfigPlanChecks: emptyAfterApply,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestMatchResourceAttr(p, "id", regexp.MustCompile(`^sbx-[^:]+:8080$`)),
					resource.TestCheckResourceAttr(p, "sources.#", "1"),
					resource.TestCheckTypeSetElemAttr(p, "sources.*", "192.168.0.0/16"),
					resource.TestCheckResourceAttr(p, "public", "false"),
					resource.TestCheckResourceAttr(p, "host_port", "20000"),
					resource.TestCheckNoResourceAttr(p, "ttl"),
					resource.TestCheckNoResourceAttr(p, "expires_at"),
					exposed(20000, "192.168.0.0/16"),
				),
			},
			{ResourceName: p, ImportState: true, ImportStateId: "acc-port:8080", ImportStateVerify: true},
			// Every setting replaces the port; the plan knows what it can.
			{
				Config: cfg("running", own),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction(p, plancheck.ResourceActionDestroyBeforeCreate),
						plancheck.ExpectKnownValue(p, tfjsonpath.New("host_port"), knownvalue.Int64Exact(20500)),
						plancheck.ExpectUnknownValue(p, tfjsonpath.New("expires_at")),
					},
					PostApplyPostRefresh: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(p, "host_port", "20500"),
					resource.TestCheckResourceAttr(p, "ttl", "1h"),
					resource.TestCheckResourceAttrSet(p, "expires_at"),
					exposed(20500, "10.1.0.0/16", "203.0.113.7/32"),
					func(s *terraform.State) error {
						expires = s.RootModule().Resources[p].Primary.Attributes["expires_at"]
						return nil
					},
				),
			},
			// The ttl is read back from the expiry, in Go's spelling of the same duration.
			{ResourceName: p, ImportState: true, ImportStateId: "acc-port:8080", ImportStateVerify: true, ImportStateVerifyIgnore: []string{"ttl"},
				ImportStateCheck: importedTTL("1h0m0s")},
			// The same ttl respelled: no replacement, the expiry stays.
			{
				Config: cfg("running", `sources   = ["10.1.0.0/16", "203.0.113.7/32"]
  host_port = 20500
  ttl       = "60m"`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(p, plancheck.ResourceActionUpdate)}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(p, "ttl", "60m"),
					func(s *terraform.State) error {
						if got := s.RootModule().Resources[p].Primary.Attributes["expires_at"]; got != expires {
							return fmt.Errorf("respelling the ttl republished the port: expires %s, was %s", got, expires)
						}
						return nil
					},
				),
			},
			// Unexposed out of band: the apply publishes it again.
			{
				PreConfig:        func() { must(t, c.Unexpose(ctx, "acc-port", 8080)) },
				Config:           cfg("running", own),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(p, plancheck.ResourceActionCreate)}},
				Check:            exposed(20500, "10.1.0.0/16", "203.0.113.7/32"),
			},
			// Stopped out of band: agentd withdrew the port; the apply starts the sandbox, then exposes it.
			{
				PreConfig: func() { must(t, err2(c.Stop(ctx, "acc-port"))) },
				Config:    cfg("running", ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction("agentlab_sandbox.a", plancheck.ResourceActionUpdate),
						plancheck.ExpectResourceAction(p, plancheck.ResourceActionCreate),
					},
					PostApplyPostRefresh: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
				Check: resource.ComposeAggregateTestCheckFunc(resource.TestCheckResourceAttr("agentlab_sandbox.a", "state", "RUNNING"), exposed(20000, "192.168.0.0/16")),
			},
			// public without sources admits every address.
			{
				Config:           cfg("running", "public = true"),
				ConfigPlanChecks: emptyAfterApply,
				Check:            resource.ComposeAggregateTestCheckFunc(resource.TestCheckTypeSetElemAttr(p, "sources.*", "0.0.0.0/0"), exposed(20000, "0.0.0.0/0")),
			},
			{ResourceName: p, ImportState: true, ImportStateId: "acc-port:9999", ExpectError: regexp.MustCompile(`(?s)Unable to Import Sandbox Port.*no exposed port 9999`)},
			{ResourceName: p, ImportState: true, ImportStateId: "acc-port", ExpectError: regexp.MustCompile(`(?s)Unable to Import Sandbox Port.*not SANDBOX:PORT`)},
		},
	})
}

// TestAccSandboxPortValidation: what agentd would refuse fails at plan time,
// on the attribute, without any sandbox.
func TestAccSandboxPortValidation(t *testing.T) {
	startAgent(t)
	cfg := func(attrs string) string {
		return hcl(`
resource "agentlab_sandbox_port" "p" {
  sandbox = "nope"
  ` + attrs + `
}`)
	}
	cases := []struct{ attrs, want string }{
		{`port = 0`, `(?s)Invalid Port.*0 is not a TCP port`},
		{`port = 65536`, `(?s)Invalid Port.*65536 is not a TCP port`},
		{"port = 80\n host_port = 8006", `(?s)Invalid Host Port.*would shadow a host service`},
		{"port = 80\n sources = [\"10.1.2.3/16\"]", `(?s)Invalid Port Source.*"10\.1\.0\.0/16"`},
		{"port = 80\n sources = [\"10.1.2.3\"]", `(?s)Invalid Port Source.*"10\.1\.2\.3/32"`},
		{"port = 80\n sources = [\"fd00::/64\"]", `(?s)Invalid Port Source.*IPv4 only`},
		{"port = 80\n sources = [\"lan\"]", `(?s)Invalid Port Source.*not an IPv4 address or CIDR`},
		{"port = 80\n sources = [\"0.0.0.0/0\"]", `(?s)Invalid Port Source.*every address.*public`},
		{"port = 80\n ttl = \"30s\"", `(?s)Invalid Port TTL.*at least 1m`},
	}
	var steps []resource.TestStep
	for _, tc := range cases {
		steps = append(steps, resource.TestStep{Config: cfg(tc.attrs), PlanOnly: true, ExpectError: regexp.MustCompile(tc.want)})
	}
	// 0.0.0.0/0 with public is valid: the plan gets as far as creating it.
	steps = append(steps, resource.TestStep{Config: cfg("port = 80\n public = true\n sources = [\"0.0.0.0/0\"]"), PlanOnly: true, ExpectNonEmptyPlan: true})
	resource.Test(t, resource.TestCase{ProtoV6ProviderFactories: factories, Steps: steps})
}
