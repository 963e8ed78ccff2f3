package provider_test

import (
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
)

// TestAccSandboxDataSource reads a sandbox by VMID.
func TestAccSandboxDataSource(t *testing.T) {
	d, _ := startAgent(t)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{{
			Config: providerBlock + `
data "agentlab_profiles" "all" {}
resource "agentlab_sandbox" "s" {
  name    = "ds"
  profile = data.agentlab_profiles.all.names[1]
}
data "agentlab_sandbox" "s" { name = agentlab_sandbox.s.vmid }
`,
			Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckResourceAttr("data.agentlab_sandbox.s", "name", "ds"),
				resource.TestCheckResourceAttr("data.agentlab_sandbox.s", "profile", "yolo-ephemeral"),
				resource.TestCheckResourceAttrPair("data.agentlab_sandbox.s", "ip", "agentlab_sandbox.s", "ip"),
				resource.TestCheckResourceAttrPair("data.agentlab_sandbox.s", "cores", "agentlab_sandbox.s", "cores"),
				resource.TestCheckResourceAttrPair("data.agentlab_sandbox.s", "memory_mb", "agentlab_sandbox.s", "memory_mb"),
				resource.TestCheckResourceAttrSet("data.agentlab_sandbox.s", "cores"),
				// None is null, as in the resource.
				resource.TestCheckNoResourceAttr("data.agentlab_sandbox.s", "workspace"),
				resource.TestCheckNoResourceAttr("agentlab_sandbox.s", "workspace"),
			),
		}},
	})
}
