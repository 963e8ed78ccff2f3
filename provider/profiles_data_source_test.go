package provider_test

import (
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
)

func TestAccProfilesDataSource(t *testing.T) {
	startAgent(t)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{{
			Config: providerBlock + `data "agentlab_profiles" "all" {}`,
			Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckResourceAttr("data.agentlab_profiles.all", "names.#", "3"),
				resource.TestCheckResourceAttr("data.agentlab_profiles.all", "profiles.2.name", "yolo-workspace"),
				resource.TestCheckResourceAttr("data.agentlab_profiles.all", "profiles.2.workspace_required", "true"),
			),
		}},
	})
}
