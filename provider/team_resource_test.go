package provider_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

// teamsConfig bootstraps two teams and a member token of each with the
// agent's own (global admin) token from the environment.
const teamsConfig = `
resource "agentlab_team" "alpha" {
  name          = "alpha"
  description   = "team alpha"
  max_sandboxes = 2
  max_ttl       = "8h"
}
resource "agentlab_team" "beta" {
  name = "beta"
}
resource "agentlab_team_token" "alpha" {
  team = agentlab_team.alpha.name
  name = "ci"
}
resource "agentlab_team_token" "beta" {
  team = agentlab_team.beta.name
  name = "ci"
  ttl  = "720h"
}
`

// TestAccTeamResources: teams and their tokens are created with the admin
// token, the tokens work (in their team, with their role), both are
// imported (the token without its value), a quota change is applied in
// place, and a team that still owns something cannot be removed.
func TestAccTeamResources(t *testing.T) {
	d, c := startAgent(t)
	betaClient := teamClient(t, d, d.Info.Token, "beta")
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy: resource.ComposeAggregateTestCheckFunc(noVMsLeft(d), func(*terraform.State) error {
			ts, err := c.Teams(context.Background())
			if err != nil {
				return err
			}
			for _, tm := range ts {
				if tm.Name != "default" {
					return fmt.Errorf("team %s left behind", tm.Name)
				}
			}
			live, err := c.Tokens(context.Background(), false)
			if err != nil || len(live) != 0 {
				return fmt.Errorf("tokens left live: %+v (%v)", live, err)
			}
			return nil
		}),
		Steps: []resource.TestStep{
			{
				Config: hcl(teamsConfig),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_team.alpha", "max_sandboxes", "2"),
					resource.TestCheckResourceAttr("agentlab_team.alpha", "max_ttl", "8h"),
					resource.TestCheckResourceAttr("agentlab_team.alpha", "max_cores", "0"),
					resource.TestCheckResourceAttr("agentlab_team.beta", "max_ttl", "0s"),
					resource.TestCheckNoResourceAttr("agentlab_team.beta", "description"),
					resource.TestCheckResourceAttr("agentlab_team_token.alpha", "role", "member"),
					resource.TestCheckResourceAttr("agentlab_team_token.alpha", "team", "alpha"),
					resource.TestMatchResourceAttr("agentlab_team_token.alpha", "id", regexp.MustCompile(`^tok-`)),
					resource.TestMatchResourceAttr("agentlab_team_token.alpha", "value", regexp.MustCompile(`^agt_`)),
					resource.TestCheckNoResourceAttr("agentlab_team_token.alpha", "expires_at"),
					resource.TestMatchResourceAttr("agentlab_team_token.beta", "expires_at", regexp.MustCompile(`^20\d\d-`)),
					tokenActsAs(d, "agentlab_team_token.alpha", "alpha", "member"),
					tokenActsAs(d, "agentlab_team_token.beta", "beta", "member"),
					func(*terraform.State) error {
						tm, err := c.Team(context.Background(), "alpha")
						if err != nil || tm.Quota.Sandboxes != 2 || tm.Quota.TTLSeconds != 8*3600 || tm.Description != "team alpha" {
							return fmt.Errorf("agentd's team alpha: %+v (%v)", tm, err)
						}
						return nil
					},
				),
			},
			{
				ResourceName: "agentlab_team.alpha", ImportState: true, ImportStateId: "alpha", ImportStateVerify: true,
			},
			{
				ResourceName: "agentlab_team_token.beta", ImportState: true, ImportStateVerify: true,
				ImportStateIdFunc: func(s *terraform.State) (string, error) {
					return s.RootModule().Resources["agentlab_team_token.beta"].Primary.Attributes["id"], nil
				},
				// agentd keeps only the hash and the expiry: no value, no ttl.
				ImportStateVerifyIgnore: []string{"value", "ttl"},
				ImportStateCheck: func(is []*terraform.InstanceState) error {
					if v, ok := is[0].Attributes["value"]; ok && v != "" {
						return fmt.Errorf("imported token has a value: %q", v)
					}
					return nil
				},
			},
			{
				// A quota change is a PUT of the whole quota, in place.
				Config: hcl(strings.Replace(teamsConfig, "max_sandboxes = 2", "max_sandboxes = 3\n  max_cores     = 8", 1) +
					"data \"agentlab_team\" \"alpha\" { name = agentlab_team.alpha.name }\n"),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_team.alpha", "max_sandboxes", "3"),
					resource.TestCheckResourceAttr("agentlab_team.alpha", "max_cores", "8"),
					resource.TestCheckResourceAttr("data.agentlab_team.alpha", "max_cores", "8"),
					resource.TestCheckResourceAttr("data.agentlab_team.alpha", "max_ttl", "8h"),
					resource.TestCheckResourceAttr("data.agentlab_team.alpha", "description", "team alpha"),
					resource.TestCheckResourceAttr("data.agentlab_team.alpha", "usage.sandboxes", "0"),
				),
			},
			{
				// agentd refuses to delete a team that still owns something;
				// the team stays in the state.
				PreConfig: func() {
					_, err := betaClient.CreateWorkspace(context.Background(), apiWorkspace("beta-cache"))
					must(t, err)
				},
				Config:      hcl(strings.Replace(strings.Replace(teamsConfig, "team = agentlab_team.beta.name", `team = "beta"`, 1), "resource \"agentlab_team\" \"beta\" {\n  name = \"beta\"\n}\n", "", 1)),
				ExpectError: regexp.MustCompile(`(?s)Unable to Delete Team.*team beta still has 0 sandboxes, 1 workspaces, 0 sessions and 1\s+tokens`),
			},
			{
				PreConfig: func() {
					_, err := betaClient.DeleteWorkspace(context.Background(), "beta-cache")
					must(t, err)
				},
				Config: hcl(teamsConfig),
				Check:  resource.TestCheckResourceAttr("agentlab_team.beta", "name", "beta"),
			},
		},
	})
}

// teamClient is a client of the agent's TCP listener with token, acting in
// team ("" for none).
func teamClient(t *testing.T, d *agent.Dev, token, team string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Endpoint: d.Info.Endpoint, Token: token, CACert: d.Info.CACert, Team: team})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tokenActsAs checks that the value of a token resource is a working token
// of team with role.
func tokenActsAs(d *agent.Dev, addr, team, role string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		c, err := client.New(client.Config{Endpoint: d.Info.Endpoint, CACert: d.Info.CACert,
			Token: s.RootModule().Resources[addr].Primary.Attributes["value"]})
		if err != nil {
			return err
		}
		st, err := c.Status(context.Background())
		if err != nil {
			return fmt.Errorf("%s: %w", addr, err)
		}
		if st.Caller.Team != team || st.Caller.Role != role {
			return fmt.Errorf("%s acts as %+v, want team %s role %s", addr, st.Caller, team, role)
		}
		return nil
	}
}

// TestAccTeamIsolation: with a member token of team alpha (issued with the
// Go client, as an operator would with the CLI), the provider works in
// alpha only. A sandbox named dev exists in beta too; alpha's provider
// creates its own dev, cannot read or import beta's by id, does not find
// team beta, and cannot manage teams (403). Naming another team in the
// provider's team is refused at configure.
//
// One provider configuration per step: the harness reattaches every
// provider configuration of a step to the same in-process provider server,
// whose last Configure wins, so aliased providers with different tokens
// would all act as one. Aliases per team run as separate provider processes
// in TestAccQuickstartAndTeamModule (examples/teams).
func TestAccTeamIsolation(t *testing.T) {
	d, c := startAgent(t)
	ctx := context.Background()
	tokens := map[string]string{}
	for _, team := range []string{"alpha", "beta"} {
		_, err := c.CreateTeam(ctx, api.CreateTeamRequest{Name: team})
		must(t, err)
		tok, err := c.CreateToken(ctx, api.CreateTokenRequest{Name: "dev", Team: team, Role: "member"})
		must(t, err)
		tokens[team] = tok.Value
	}
	beta := teamClient(t, d, tokens["beta"], "")
	betaDev, err := beta.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "dev", Profile: "yolo-ephemeral"})
	must(t, err)
	_, err = beta.WaitSandbox(ctx, betaDev.ID, 0)
	must(t, err)
	t.Setenv("AGENTLAB_TOKEN", tokens["alpha"])
	base := hcl(`
resource "agentlab_sandbox" "dev" {
  name    = "dev"
  profile = "yolo-ephemeral"
}
data "agentlab_team" "mine" {
  depends_on = [agentlab_sandbox.dev]
}
`)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy: func(s *terraform.State) error {
			if _, err := beta.Destroy(ctx, betaDev.ID, false); err != nil {
				return err
			}
			return noVMsLeft(d)(s)
		},
		Steps: []resource.TestStep{
			{
				Config: base,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_sandbox.dev", "team", "alpha"),
					resource.TestCheckResourceAttr("data.agentlab_team.mine", "name", "alpha"),
					resource.TestCheckResourceAttr("data.agentlab_team.mine", "usage.sandboxes", "1"),
					func(*terraform.State) error {
						// Both VMs carry their team's owner proof in the name.
						names := map[string]bool{}
						for _, v := range d.Sim.Dump().VMs {
							names[fmt.Sprint(v.Config["name"])] = true
						}
						if !names["alpha-dev"] || !names["beta-dev"] {
							return fmt.Errorf("VM names %v", names)
						}
						return nil
					},
				),
			},
			{
				Config:      base + fmt.Sprintf("data \"agentlab_sandbox\" \"stolen\" { name = %q }\n", betaDev.ID),
				ExpectError: regexp.MustCompile(`(?s)Unable to Read Sandbox.*sandbox "` + betaDev.ID + `" not found`),
			},
			{
				Config:        base + "resource \"agentlab_sandbox\" \"stolen\" {\n  name    = \"dev\"\n  profile = \"yolo-ephemeral\"\n}\n",
				ResourceName:  "agentlab_sandbox.stolen",
				ImportState:   true,
				ImportStateId: betaDev.ID,
				ExpectError:   regexp.MustCompile(`(?s)Unable to Import Sandbox.*not found`),
			},
			{
				Config:      base + "data \"agentlab_team\" \"other\" { name = \"beta\" }\n",
				ExpectError: regexp.MustCompile(`(?s)Unable to Read Team.*team "beta" does not exist`),
			},
			{
				Config:      base + "resource \"agentlab_team\" \"gamma\" { name = \"gamma\" }\n",
				ExpectError: regexp.MustCompile(`(?s)Unable to Create Team.*host write access; a member token of team alpha.*global\s+admin\s+token`),
			},
			{
				Config:      base + "provider \"agentlab\" { team = \"beta\" }\n",
				ExpectError: regexp.MustCompile(`(?s)Invalid agentd Team.*team "beta".*acts only in team alpha`),
			},
			{
				// Still alpha's, unchanged, after the refusals.
				Config:   base,
				PlanOnly: true,
			},
		},
	})
}

// TestAccProviderTeam: the agent's own (global) token acts in the team the
// provider names: what it creates is that team's and the team data source
// needs no name; without a team it must name one.
func TestAccProviderTeam(t *testing.T) {
	d, c := startAgent(t)
	_, err := c.CreateTeam(context.Background(), api.CreateTeamRequest{Name: "beta"})
	must(t, err)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{
				Config:      hcl("provider \"agentlab\" { team = \"nope\" }\ndata \"agentlab_host\" \"h\" {}\n"),
				ExpectError: regexp.MustCompile(`(?s)Invalid agentd Team.*team "nope".*does not exist`),
			},
			{
				Config:      hcl("data \"agentlab_team\" \"mine\" {}\n"),
				ExpectError: regexp.MustCompile(`(?s)Missing Team Name.*token is global \(token:agent\).*set\s+name,\s+or\s+the\s+provider's\s+team`),
			},
			{
				Config: hcl(`
provider "agentlab" { team = "beta" }
resource "agentlab_workspace" "w" {
  name                = "cache"
  size_gb             = 5
  deletion_protection = false
}
data "agentlab_team" "mine" {
  depends_on = [agentlab_workspace.w]
}
`),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_workspace.w", "team", "beta"),
					resource.TestCheckResourceAttr("data.agentlab_team.mine", "name", "beta"),
					resource.TestCheckResourceAttr("data.agentlab_team.mine", "usage.workspace_gb", "5"),
				),
			},
		},
	})
}

// TestAccTeamTokenByTeamAdmin: a team admin token issues tokens of its own
// team without naming it, is refused another team's, and a token revoked
// out of band leaves the state at the next refresh and is issued anew.
func TestAccTeamTokenByTeamAdmin(t *testing.T) {
	d, c := startAgent(t)
	ctx := context.Background()
	_, err := c.CreateTeam(ctx, api.CreateTeamRequest{Name: "alpha"})
	must(t, err)
	admin, err := c.CreateToken(ctx, api.CreateTokenRequest{Name: "lead", Team: "alpha", Role: "admin"})
	must(t, err)
	t.Setenv("AGENTLAB_TOKEN", admin.Value)
	cfg := hcl(`
resource "agentlab_team_token" "ci" {
  name = "ci"
  role = "read"
}
`)
	var first string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy: func(*terraform.State) error {
			live, err := c.Tokens(ctx, false)
			if err != nil || len(live) != 1 || live[0].Name != "lead" {
				return fmt.Errorf("live tokens after destroy: %+v (%v)", live, err)
			}
			return nil
		},
		Steps: []resource.TestStep{
			{
				Config: cfg,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_team_token.ci", "team", "alpha"),
					tokenActsAs(d, "agentlab_team_token.ci", "alpha", "read"),
					func(s *terraform.State) error {
						first = s.RootModule().Resources["agentlab_team_token.ci"].Primary.Attributes["id"]
						return nil
					},
				),
			},
			{
				PreConfig: func() {
					_, err := c.RevokeToken(ctx, first)
					must(t, err)
				},
				Config:             cfg,
				PlanOnly:           true,
				ExpectNonEmptyPlan: true,
			},
			{
				Config: cfg,
				Check: resource.ComposeAggregateTestCheckFunc(
					tokenActsAs(d, "agentlab_team_token.ci", "alpha", "read"),
					func(s *terraform.State) error {
						if id := s.RootModule().Resources["agentlab_team_token.ci"].Primary.Attributes["id"]; id == first {
							return fmt.Errorf("the revoked token %s is still in the state", id)
						}
						return nil
					},
				),
			},
			{
				Config:      cfg + "resource \"agentlab_team_token\" \"other\" {\n  team = \"beta\"\n  name = \"ci\"\n}\n",
				ExpectError: regexp.MustCompile(`(?s)Unable to Create Team Token.*a token of team alpha can only create tokens of\s+team alpha`),
			},
		},
	})
}
