package provider_test

import (
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
)

func TestAccHostDataSource(t *testing.T) {
	startAgent(t)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{{
			Config: providerBlock + `data "agentlab_host" "h" {}`,
			Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckResourceAttr("data.agentlab_host.h", "proxmox_reachable", "true"),
				resource.TestCheckResourceAttr("data.agentlab_host.h", "proxmox_version", "9.1.2"),
				resource.TestCheckResourceAttr("data.agentlab_host.h", "node", "pve"),
			),
		}},
	})
}
