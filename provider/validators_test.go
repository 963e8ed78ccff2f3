package provider_test

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// TestAccPlanTimeValidation: bad values fail `terraform plan` on their
// attribute, with agentd's own rules, before anything is created.
func TestAccPlanTimeValidation(t *testing.T) {
	d, c := startAgent(t)
	steps := []resource.TestStep{}
	for _, tc := range []struct{ cfg, want string }{
		{`resource "agentlab_sandbox" "x" {
  name    = "Bad_Name!"
  profile = "yolo-ephemeral"
}`, `(?s)Invalid Sandbox Name.*name\s+= "Bad_Name!".*lowercase letters`},
		{`resource "agentlab_sandbox" "x" {
  name    = "100"
  profile = "yolo-ephemeral"
}`, `(?s)Invalid Name.*name\s+= "100".*"100" is all digits`},
		{`resource "agentlab_sandbox" "x" {
  name    = "sbx-x"
  profile = "yolo-ephemeral"
}`, `(?s)Invalid Name.*starts with "sbx-"`},
		{`resource "agentlab_sandbox" "x" {
  name    = "x"
  profile = "yolo-ephemeral"
  ttl     = "2 hours"
}`, `(?s)Invalid Time Duration String Value.*ttl\s+= "2 hours"`},
		{`resource "agentlab_sandbox" "x" {
  name    = "x"
  profile = "yolo-ephemeral"
  tags    = ["agentlab"]
}`, `(?s)Invalid Tag.*reserved`},
		{`resource "agentlab_workspace" "w" {
  name    = "w"
  size_gb = 10000000
}`, `(?s)Invalid Size.*size_gb\s+= 10000000.*between 1 and 65536`},
		{`resource "agentlab_workspace" "w" {
  name    = "w"
  size_gb = 5
  storage = "local-lvm,foo=bar"
}`, `(?s)Invalid Storage.*storage\s+= "local-lvm,foo=bar".*not a Proxmox storage id`},
		{`resource "agentlab_workspace" "w" {
  name    = "ws-data"
  size_gb = 5
}`, `(?s)Invalid Name.*starts with "ws-"`},
		{`resource "agentlab_workspace_snapshot" "s" {
  workspace = "w"
  name      = "9bad"
}`, `(?s)Invalid Snapshot Name.*starting with a letter`},
		// Rules that need the agent, checked while planning.
		{`resource "agentlab_sandbox" "x" {
  name    = "x"
  profile = "nope"
}`, `(?s)Invalid Profile.*profile\s+= "nope".*profile "nope" does not exist; agentd has interactive-dev, yolo-ephemeral, yolo-workspace`},
		{`resource "agentlab_sandbox" "x" {
  name    = "x"
  profile = "yolo-workspace"
}`, `(?s)Missing Workspace.*profile yolo-workspace requires a workspace`},
		{`resource "agentlab_session" "s" {
  name      = "s"
  profile   = "nope"
  workspace = "w"
}`, `(?s)Invalid Profile.*profile\s+= "nope"`},
		{`resource "agentlab_workspace" "w" {
  name    = "w"
  size_gb = 5
  storage = "nope"
}`, `(?s)Invalid Storage.*storage\s+= "nope".*storage "nope" is not one agentd allows workspaces on; it allows local-lvm, local-zfs, local, local-raw \(the default is local-lvm\)`},
		{`resource "agentlab_workspace" "w" {
  name    = "w"
  size_gb = 1.5
}`, `(?s)Invalid Size.*size_gb\s+= 1.5.*size_gb must be a whole number of GiB, got 1.5`},
		{`resource "agentlab_sandbox" "x" {
  name    = "x"
  profile = "yolo-ephemeral"
  ttl     = "1d"
}`, `(?s)Invalid Time Duration String Value.*ttl\s+= "1d"`},
		{`resource "agentlab_sandbox" "x" {
  name    = "x"
  profile = "yolo-ephemeral"
  ttl     = "-1h"
}`, `(?s)Invalid Lease.*ttl\s+= "-1h".*at least 1m`},
		{`resource "agentlab_session" "s" {
  name      = "42"
  profile   = "yolo-workspace"
  workspace = "w"
}`, `(?s)Invalid Name.*"42" is all digits`},
	} {
		// Terraform wraps long diagnostics: any space may be a line break.
		want := strings.ReplaceAll(tc.want, " ", `\s+`)
		steps = append(steps, resource.TestStep{Config: hcl(tc.cfg), PlanOnly: true, ExpectError: regexp.MustCompile(want)})
	}
	resource.Test(t, resource.TestCase{ProtoV6ProviderFactories: factories, CheckDestroy: noVMsLeft(d), Steps: steps})
	if sbs, err := c.Sandboxes(context.Background(), nil); err != nil || len(sbs) != 0 {
		t.Fatalf("sandboxes %+v %v", sbs, err)
	}
}

// TestAccImportByVMIDNeverBindsANameMatch rebuilds issue 14's import bug: a
// legacy sandbox named "100" and the sandbox at VMID 100. Importing "100"
// binds the VMID's sandbox; a workspace imports by its holder's VMID.
func TestAccImportByVMIDNeverBindsANameMatch(t *testing.T) {
	d, c := startAgent(t)
	ctx := context.Background()
	cfg := hcl(`
resource "agentlab_sandbox" "a" {
  name    = "acc-v"
  profile = "yolo-ephemeral"
}
resource "agentlab_workspace" "w" {
  name                = "acc-w"
  size_gb             = 5
  deletion_protection = false
}`)
	var legacy *api.Sandbox
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{Config: cfg},
			{
				PreConfig: func() {
					sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "other", Profile: "yolo-ephemeral"})
					must(t, err)
					legacy, err = c.WaitSandbox(ctx, sb.ID, 0)
					must(t, err)
				},
				Config: cfg,
				Check: func(s *terraform.State) error {
					// What an older agentd allowed: name it after the other's VMID,
					// updated last (the old lookup's favourite).
					vmid := s.RootModule().Resources["agentlab_sandbox.a"].Primary.Attributes["vmid"]
					_, err := d.Agent.Store.DB().Exec(`UPDATE sandboxes SET name = ?, updated_at = updated_at + 100000 WHERE id = ?`, vmid, legacy.ID)
					return err
				},
			},
			{ResourceName: "agentlab_sandbox.a", ImportState: true, ImportStateVerify: true, ImportStateVerifyIgnore: []string{"timeouts"},
				ImportStateIdFunc: func(s *terraform.State) (string, error) {
					return s.RootModule().Resources["agentlab_sandbox.a"].Primary.Attributes["vmid"], nil
				}},
			{ResourceName: "agentlab_workspace.w", ImportState: true, ImportStateVerify: true, ImportStateVerifyIgnore: []string{"timeouts", "deletion_protection"},
				ImportStateIdFunc: func(s *terraform.State) (string, error) {
					return s.RootModule().Resources["agentlab_workspace.w"].Primary.Attributes["holder_vmid"], nil
				}},
			{
				// The legacy sandbox is reachable by its id only, and then it is
				// not the configured one; remove it before the final destroy.
				PreConfig: func() {
					if got, err := c.Sandbox(ctx, legacy.ID); err != nil || got.Name == "other" {
						t.Fatalf("legacy row %+v %v", got, err)
					}
					_, err := c.Destroy(ctx, legacy.ID, true)
					must(t, err)
				},
				Config: cfg,
			},
		},
	})
}
