package provider_test

import (
	"context"
	"fmt"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// TestAccWorkspaceProtection: a workspace is protected by default (destroy
// and replacement fail, saying how to turn it off); unprotected, one with
// snapshots is deleted only with force_destroy.
func TestAccWorkspaceProtection(t *testing.T) {
	d, c := startAgent(t)
	ctx := context.Background()
	cfg := func(name, extra string) string {
		return hcl(fmt.Sprintf(`
resource "agentlab_workspace" "w" {
  name    = %q
  size_gb = 5
  %s
}`, name, extra))
	}
	// Terraform wraps long diagnostics: any space may be a line break.
	re := func(s string) *regexp.Regexp {
		return regexp.MustCompile(regexp.MustCompile(` `).ReplaceAllString(s, `\s+`))
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{
				Config: cfg("prot", ""),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_workspace.w", "deletion_protection", "true"),
					resource.TestCheckResourceAttr("agentlab_workspace.w", "team", "default"),
					resource.TestCheckResourceAttr("agentlab_workspace.w", "force_destroy", "false"),
				),
			},
			{Config: cfg("prot", ""), Destroy: true, ExpectError: re(`(?s)Unable to Delete Workspace.*prot has deletion_protection = true.*set deletion_protection = false`)},
			// A rename replaces it: refused the same way, the workspace kept.
			{Config: cfg("prot-renamed", ""), ExpectError: re(`(?s)Unable to Delete Workspace.*deletion_protection = true`)},
			{
				Config: cfg("prot", "deletion_protection = false"),
				Check:  resource.TestCheckResourceAttr("agentlab_workspace.w", "deletion_protection", "false"),
			},
			{
				PreConfig: func() {
					if w, err := c.Workspace(ctx, "prot"); err != nil || w.Name != "prot" {
						t.Fatalf("workspace after the refused replacement: %+v %v", w, err)
					}
					must(t, err2(c.CreateSnapshot(ctx, "prot", api.CreateSnapshotRequest{Name: "oob"})))
				},
				Config: cfg("prot", "deletion_protection = false"), Destroy: true,
				ExpectError: re(`(?s)Unable to Delete Workspace.*prot still has 1 snapshot\(s\) \(oob\).*force_destroy = true`),
			},
			{
				Config: cfg("prot", "deletion_protection = false\n  force_destroy = true"),
				Check:  resource.TestCheckResourceAttr("agentlab_workspace.w", "force_destroy", "true"),
			},
		},
	})
}

// TestAccWorkspace: create, import, grow in place; shrinking is refused at
// plan time.
func TestAccWorkspace(t *testing.T) {
	d, _ := startAgent(t)
	cfg := func(size int) string {
		return hcl(fmt.Sprintf(`
resource "agentlab_workspace" "w" {
  name                = "team-a"
  size_gb             = %d
  deletion_protection = false
}`, size))
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{
				Config: cfg(10),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_workspace.w", "storage", "local-lvm"),
					resource.TestCheckResourceAttrSet("agentlab_workspace.w", "holder_vmid"),
				),
			},
			{ResourceName: "agentlab_workspace.w", ImportState: true, ImportStateId: "team-a", ImportStateVerify: true, ImportStateVerifyIgnore: []string{"timeouts", "attached_sandbox", "deletion_protection"}},
			// Grow in place.
			{
				Config:           cfg(12),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("agentlab_workspace.w", plancheck.ResourceActionUpdate)}},
				Check:            resource.TestCheckResourceAttr("agentlab_workspace.w", "size_gb", "12"),
			},
			// Shrinking is refused at plan time; nothing changes.
			{Config: cfg(8), ExpectError: regexp.MustCompile(`Workspace Cannot Shrink`)},
		},
	})
}

// TestAccWorkspaceStorage: a storage agentd allows is used; one it does not
// allow fails the plan on storage, naming the allowed ones, before the
// existing workspace is touched.
func TestAccWorkspaceStorage(t *testing.T) {
	d, c := startAgent(t)
	cfg := func(storage string) string {
		return hcl(fmt.Sprintf(`
resource "agentlab_workspace" "w" {
  name                = "st"
  size_gb             = 5
  storage             = %q
  deletion_protection = false
}`, storage))
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{Config: cfg("local-zfs"), Check: resource.TestCheckResourceAttr("agentlab_workspace.w", "storage", "local-zfs")},
			{
				Config: cfg("tank"),
				ExpectError: regexp.MustCompile(`(?s)Invalid Storage.*storage\s+= "tank".*storage\s+"tank"\s+is\s+not\s+one\s+agentd\s+allows\s+workspaces\s+on;` +
					`\s+it\s+allows\s+local-lvm,\s+local-zfs,\s+local,\s+local-raw`),
			},
			{
				PreConfig: func() {
					if w, err := c.Workspace(context.Background(), "st"); err != nil || w.Storage != "local-zfs" {
						t.Fatalf("workspace after the refused plan: %+v %v", w, err)
					}
				},
				Config:   cfg("local-zfs"),
				PlanOnly: true,
			},
		},
	})
}
