package provider_test

import (
	"context"
	"fmt"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
)

// TestAccSession: a session on a workspace (snapshotted before the session
// starts): create, import, stop (sandbox destroyed, workspace kept), resume,
// and a sandbox destroyed out of band is resumed by the plan.
func TestAccSession(t *testing.T) {
	d, c := startAgent(t)
	ctx := context.Background()
	cfg := func(running bool) string {
		return hcl(fmt.Sprintf(`
resource "agentlab_workspace" "w" {
  name                = "team-a"
  size_gb             = 10
  deletion_protection = false
}
resource "agentlab_workspace_snapshot" "s1" {
  workspace   = agentlab_workspace.w.name
  name        = "baseline"
  description = "before the agent starts"
}
resource "agentlab_session" "alice" {
  name       = "alice"
  profile    = "yolo-workspace"
  workspace  = agentlab_workspace.w.name
  running    = %t
  depends_on = [agentlab_workspace_snapshot.s1]
}`, running))
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{
				Config: cfg(true),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_session.alice", "state", "RUNNING"),
					resource.TestCheckResourceAttr("agentlab_session.alice", "team", "default"),
					resource.TestCheckResourceAttr("agentlab_session.alice", "sandbox", "alice-1"),
					resource.TestMatchResourceAttr("agentlab_session.alice", "ip", regexp.MustCompile(`^10\.77\.`)),
				),
			},
			{ResourceName: "agentlab_session.alice", ImportState: true, ImportStateId: "alice", ImportStateVerify: true, ImportStateVerifyIgnore: []string{"timeouts"}},
			// Stop the session (sandbox destroyed, workspace kept).
			{
				Config: cfg(false),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_session.alice", "state", "STOPPED"),
					resource.TestCheckResourceAttr("agentlab_session.alice", "sandbox_vmid", "0"),
				),
			},
			{Config: cfg(true), Check: resource.TestCheckResourceAttr("agentlab_session.alice", "sandbox", "alice-2")},
			// The session's sandbox destroyed out of band: the plan resumes it.
			{
				PreConfig: func() {
					s, err := c.Session(ctx, "alice")
					must(t, err)
					must(t, err2(c.Destroy(ctx, s.Sandbox, false)))
				},
				Config:           cfg(true),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("agentlab_session.alice", plancheck.ResourceActionUpdate)}},
				Check:            resource.TestCheckResourceAttr("agentlab_session.alice", "state", "RUNNING"),
			},
		},
	})
}

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
