package provider_test

import (
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
)

func TestAccWorkspaceSnapshot(t *testing.T) {
	d, _ := startAgent(t)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{
				Config: hcl(`
resource "agentlab_workspace" "w" {
  name                = "team-a"
  size_gb             = 10
  deletion_protection = false
}
resource "agentlab_workspace_snapshot" "s1" {
  workspace   = agentlab_workspace.w.name
  name        = "baseline"
  description = "before the agent starts"
}`),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_workspace_snapshot.s1", "id", "team-a/baseline"),
					resource.TestCheckResourceAttrSet("agentlab_workspace_snapshot.s1", "created_at"),
				),
			},
			{ResourceName: "agentlab_workspace_snapshot.s1", ImportState: true, ImportStateId: "team-a/baseline", ImportStateVerify: true, ImportStateVerifyIgnore: []string{"timeouts"}},
		},
	})
}
