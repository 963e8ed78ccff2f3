package provider_test

import (
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
)

func TestAccProfileDataSource(t *testing.T) {
	startAgent(t)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{{
			Config: providerBlock + `data "agentlab_profile" "dev" { name = "interactive-dev" }`,
			Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckResourceAttr("data.agentlab_profile.dev", "cores", "6"),
				resource.TestCheckResourceAttr("data.agentlab_profile.dev", "template_vmid", "9000"),
				resource.TestCheckResourceAttr("data.agentlab_profile.dev", "template", ""),
			),
		}},
	})
}
