package provider_test

import (
	"context"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
)

// TestAccWorkspaceDataSource reads a workspace created with the CLI.
func TestAccWorkspaceDataSource(t *testing.T) {
	d, c := startAgent(t)
	ctx := context.Background()
	_, err := c.CreateWorkspace(ctx, apiWorkspace("cli-ws"))
	must(t, err)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy: func(s *terraform.State) error {
			if _, err := c.DeleteWorkspace(ctx, "cli-ws"); err != nil {
				return err
			}
			return noVMsLeft(d)(s)
		},
		Steps: []resource.TestStep{{
			Config: providerBlock + `data "agentlab_workspace" "w" { name = "cli-ws" }`,
			Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckResourceAttr("data.agentlab_workspace.w", "size_gb", "5"),
				resource.TestCheckResourceAttr("data.agentlab_workspace.w", "team", "default"),
				resource.TestMatchResourceAttr("data.agentlab_workspace.w", "volume", regexp.MustCompile(`^local-lvm:vm-\d+-disk-0$`)),
				// None is null, as in the resource.
				resource.TestCheckNoResourceAttr("data.agentlab_workspace.w", "attached_sandbox"),
				resource.TestCheckNoResourceAttr("data.agentlab_workspace.w", "session"),
			),
		}},
	})
}
