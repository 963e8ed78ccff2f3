package provider_test

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

func poolConfig(minReady, max int) string {
	return hcl(fmt.Sprintf(`
resource "agentlab_pool" "warm" {
  profile   = "yolo-ephemeral"
  min_ready = %d
  max       = %d
}
`, minReady, max))
}

// poolReady waits (bounded by the test's context, never timed) until agentd
// reports n ready members and nothing building.
func poolReady(c *client.Client, n int) resource.TestCheckFunc {
	return func(*terraform.State) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for {
			p, err := c.Pool(ctx, "yolo-ephemeral")
			if err != nil {
				return err
			}
			if p.Ready == n && p.Building == 0 {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("pool never had %d ready: %+v", n, p)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// TestAccPoolResource: a pool is created, fills, is resized, imported by
// profile name, refused at plan time when min_ready exceeds max, and leaves
// no VM behind when destroyed.
func TestAccPoolResource(t *testing.T) {
	d, c := startAgent(t)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{
				Config:      poolConfig(3, 2),
				ExpectError: regexp.MustCompile(`(?s)Invalid Pool Size.*min_ready.*3 is more than max 2`),
			},
			{
				Config: poolConfig(2, 3),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_pool.warm", "id", "yolo-ephemeral"),
					resource.TestCheckResourceAttr("agentlab_pool.warm", "min_ready", "2"),
					resource.TestCheckResourceAttr("agentlab_pool.warm", "max", "3"),
					resource.TestCheckResourceAttrSet("agentlab_pool.warm", "profile_hash"),
					poolReady(c, 2),
				),
			},
			{
				// A refresh reads the counts agentd has now.
				RefreshState: true,
				Check:        resource.TestCheckResourceAttr("agentlab_pool.warm", "ready", "2"),
			},
			{
				Config: poolConfig(1, 1),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_pool.warm", "min_ready", "1"),
					resource.TestCheckResourceAttr("agentlab_pool.warm", "max", "1"),
					poolReady(c, 1),
				),
			},
			{
				ResourceName:            "agentlab_pool.warm",
				ImportState:             true,
				ImportStateId:           "yolo-ephemeral",
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"ready", "building", "claimed"},
			},
			{
				Config:      poolConfig(1, 1) + "\nresource \"agentlab_pool\" \"bad\" {\n  profile   = \"no-such\"\n  min_ready = 0\n  max       = 0\n}\n",
				ExpectError: regexp.MustCompile(`(?s)profile "no-such" does not exist`),
			},
		},
	})
}
