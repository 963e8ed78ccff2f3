package provider_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
)

// TestAccSessionWorkspaceDetached: a workspace detached from the session's
// running sandbox out of band shows up as drift (running reads false), and the
// next apply gives the session a fresh sandbox with the workspace attached.
func TestAccSessionWorkspaceDetached(t *testing.T) {
	d, c := startAgent(t)
	ctx := context.Background()
	cfg := hcl(`
resource "agentlab_workspace" "w" {
  name                = "det-work"
  size_gb             = 5
  deletion_protection = false
}
resource "agentlab_session" "s" {
  name      = "det"
  profile   = "yolo-workspace"
  workspace = agentlab_workspace.w.name
}`)
	attachedTo := func(want string) resource.TestCheckFunc {
		return func(*terraform.State) error {
			if w, err := c.Workspace(ctx, "det-work"); err != nil || w.AttachedSandbox != want {
				return fmt.Errorf("workspace: want attached to %s, got %+v %v", want, w, err)
			}
			return nil
		}
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{Config: cfg, Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckResourceAttr("agentlab_session.s", "workspace_attached", "true"),
				resource.TestCheckResourceAttr("agentlab_session.s", "sandbox", "det-1"),
				attachedTo("det-1"),
			)},
			{
				PreConfig:          func() { must(t, err2(c.DetachWorkspace(ctx, "det-work"))) },
				RefreshState:       true,
				ExpectNonEmptyPlan: true,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_session.s", "workspace_attached", "false"),
					resource.TestCheckResourceAttr("agentlab_session.s", "running", "false"),
					resource.TestCheckResourceAttr("agentlab_session.s", "state", "RUNNING"),
				),
			},
			{
				Config:           cfg,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("agentlab_session.s", plancheck.ResourceActionUpdate)}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_session.s", "workspace_attached", "true"),
					resource.TestCheckResourceAttr("agentlab_session.s", "running", "true"),
					resource.TestCheckResourceAttr("agentlab_session.s", "sandbox", "det-2"),
					attachedTo("det-2"),
				),
			},
		},
	})
}
