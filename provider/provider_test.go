package provider_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
	"github.com/agentlab/terraform-provider-agentlab/provider"
)

var factories = map[string]func() (tfprotov6.ProviderServer, error){
	"agentlab": providerserver.NewProtocol6WithError(provider.New("test")()),
}

// startAgent runs agentd on the simulator in this test process and points
// the provider at it through the same variables `agentd dev` prints.
func startAgent(t *testing.T) (*agent.Dev, *client.Client) {
	t.Helper()
	d, err := agent.StartDev(context.Background(), agent.DevOptions{StateDir: t.TempDir(), ProvisioningTimeout: time.Minute,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	t.Setenv("AGENTLAB_ENDPOINT", d.Info.Endpoint)
	t.Setenv("AGENTLAB_TOKEN", d.Info.Token)
	t.Setenv("AGENTLAB_CA_CERT", d.Info.CACert)
	c, err := client.New(client.Config{Endpoint: d.Info.Endpoint, Token: d.Info.Token, CACert: d.Info.CACert})
	if err != nil {
		t.Fatal(err)
	}
	return d, c
}

// noVMsLeft is the CheckDestroy of every test: nothing but the template.
func noVMsLeft(d *agent.Dev) resource.TestCheckFunc {
	return func(*terraform.State) error {
		for id, v := range d.Sim.Dump().VMs {
			if id != pvesim.FixtureTemplateID {
				return fmt.Errorf("VM %d (%s) left behind", id, v.Config["name"])
			}
		}
		return nil
	}
}

func TestAccSandbox(t *testing.T) {
	d, c := startAgent(t)
	ctx := context.Background()
	cfg := func(extra string) string {
		return hcl(`
resource "agentlab_workspace" "w" {
  name                = "acc-ws"
  size_gb             = 5
  deletion_protection = false
}
resource "agentlab_sandbox" "a" {
  name    = "acc-a"
  profile = "yolo-ephemeral"
  ttl     = "2h"
  tags    = ["team-a"]
` + extra + `
}`)
	}
	var firstID string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{
				Config: cfg(""),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "state", "RUNNING"),
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "power_state", "running"),
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "ttl", "2h"),
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "keepalive", "false"),
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "node", "pve"),
					resource.TestMatchResourceAttr("agentlab_sandbox.a", "ip", regexp.MustCompile(`^10\.77\.`)),
					resource.TestMatchResourceAttr("agentlab_sandbox.a", "id", regexp.MustCompile(`^sbx-`)),
					resource.TestCheckResourceAttrSet("agentlab_sandbox.a", "lease_expires_at"),
					resource.TestCheckTypeSetElemAttr("agentlab_sandbox.a", "tags.*", "team-a"),
					func(s *terraform.State) error {
						firstID = s.RootModule().Resources["agentlab_sandbox.a"].Primary.ID
						vmid := s.RootModule().Resources["agentlab_sandbox.a"].Primary.Attributes["vmid"]
						if v := d.Sim.Dump().VMs[atoi(vmid)]; !v.Running || v.Config["tags"] != "agentlab;team-a" {
							return fmt.Errorf("VM %s in Proxmox: %+v", vmid, v)
						}
						return nil
					},
				),
			},
			// Import by name and by VMID reproduces the state.
			// An imported lease has agentd's seconds in Go's spelling (2h0m0s), the same duration as the configured 2h.
			{ResourceName: "agentlab_sandbox.a", ImportState: true, ImportStateId: "acc-a", ImportStateVerify: true, ImportStateVerifyIgnore: []string{"timeouts", "ttl"},
				ImportStateCheck: importedTTL("2h0m0s")},
			{ResourceName: "agentlab_sandbox.a", ImportState: true, ImportStateIdFunc: func(s *terraform.State) (string, error) {
				return s.RootModule().Resources["agentlab_sandbox.a"].Primary.Attributes["vmid"], nil
			}, ImportStateVerify: true, ImportStateVerifyIgnore: []string{"timeouts", "ttl"}, ImportStateCheck: importedTTL("2h0m0s")},
			// Power state and lease change in place.
			{
				Config:           cfg(`power_state = "stopped"`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("agentlab_sandbox.a", plancheck.ResourceActionUpdate)}},
				Check:            resource.TestCheckResourceAttr("agentlab_sandbox.a", "state", "STOPPED"),
			},
			{
				Config: strings.Replace(cfg(`workspace = agentlab_workspace.w.name`), `"2h"`, `"4h"`, 1),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "state", "RUNNING"),
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "ttl", "4h"),
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "workspace", "acc-ws"),
					func(s *terraform.State) error {
						if id := s.RootModule().Resources["agentlab_sandbox.a"].Primary.ID; id != firstID {
							return fmt.Errorf("in-place changes replaced the sandbox: %s → %s", firstID, id)
						}
						return nil
					},
				),
			},
			// Idle stop out of band and a detached workspace: drift the plan repairs in place.
			{
				PreConfig: func() {
					must(t, err2(c.Stop(ctx, "acc-a")))
					must(t, err2(c.DetachWorkspace(ctx, "acc-ws")))
				},
				Config:           strings.Replace(cfg(`workspace = agentlab_workspace.w.name`), `"2h"`, `"4h"`, 1),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("agentlab_sandbox.a", plancheck.ResourceActionUpdate)}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "state", "RUNNING"),
					resource.TestCheckResourceAttr("agentlab_sandbox.a", "workspace", "acc-ws"),
					func(*terraform.State) error {
						if w, err := c.Workspace(ctx, "acc-ws"); err != nil || w.AttachedSandbox != "acc-a" {
							return fmt.Errorf("workspace not re-attached: %+v %v", w, err)
						}
						return nil
					},
				),
			},
			// Destroyed out of band: the plan recreates it.
			{
				PreConfig: func() {
					must(t, err2(c.DetachWorkspace(ctx, "acc-ws")))
					must(t, err2(c.Destroy(ctx, "acc-a", false)))
				},
				Config:           cfg(""),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("agentlab_sandbox.a", plancheck.ResourceActionCreate)}},
				Check: func(s *terraform.State) error {
					if id := s.RootModule().Resources["agentlab_sandbox.a"].Primary.ID; id == firstID {
						return fmt.Errorf("sandbox not recreated (%s)", id)
					}
					return nil
				},
			},
			// Changing the profile replaces it.
			{
				Config:           strings.Replace(cfg(""), "yolo-ephemeral", "interactive-dev", 1),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("agentlab_sandbox.a", plancheck.ResourceActionDestroyBeforeCreate)}},
				Check:            resource.TestCheckResourceAttr("agentlab_sandbox.a", "profile", "interactive-dev"),
			},
		},
	})
}

func TestAccSandboxErrors(t *testing.T) {
	d, _ := startAgent(t)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{
				Config:      providerBlock + `resource "agentlab_sandbox" "x" {` + "\n" + `name = "x"` + "\n" + `profile = "nope"` + "\n}",
				ExpectError: regexp.MustCompile(`(?s)Invalid Profile.*profile "nope" does not exist`),
			},
			{
				Config:      providerBlock + `resource "agentlab_sandbox" "x" {` + "\n" + `name = "x"` + "\n" + `profile = "yolo-ephemeral"` + "\n" + `power_state = "paused"` + "\n}",
				ExpectError: regexp.MustCompile(`power_state`),
			},
			{
				PreConfig:   func() { d.Sim.FailTask("qmstart", "", "kvm: out of memory") },
				Config:      providerBlock + `resource "agentlab_sandbox" "x" {` + "\n" + `name = "x"` + "\n" + `profile = "yolo-ephemeral"` + "\n}",
				ExpectError: regexp.MustCompile(`(?s)Unable to Create Sandbox.*is FAILED: start: start VM \d+: task.*kvm: out\s+of\s+memory`),
			},
			{
				// The failed (tainted) sandbox is replaced once the fault is gone.
				PreConfig: func() { d.Sim.ClearFaults() },
				Config:    providerBlock + `resource "agentlab_sandbox" "x" {` + "\n" + `name = "x"` + "\n" + `profile = "yolo-ephemeral"` + "\n}",
				Check:     resource.TestCheckResourceAttr("agentlab_sandbox.x", "state", "RUNNING"),
			},
		},
	})
}

func TestAccWorkspaceSnapshotSession(t *testing.T) {
	d, c := startAgent(t)
	ctx := context.Background()
	cfg := func(size int, running bool) string {
		return hcl(fmt.Sprintf(`
resource "agentlab_workspace" "w" {
  name                = "team-a"
  size_gb             = %d
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
}`, size, running))
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy:             noVMsLeft(d),
		Steps: []resource.TestStep{
			{
				Config: cfg(10, true),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_workspace.w", "storage", "local-lvm"),
					resource.TestCheckResourceAttrSet("agentlab_workspace.w", "holder_vmid"),
					resource.TestCheckResourceAttr("agentlab_workspace_snapshot.s1", "id", "team-a/baseline"),
					resource.TestCheckResourceAttrSet("agentlab_workspace_snapshot.s1", "created_at"),
					resource.TestCheckResourceAttr("agentlab_session.alice", "state", "RUNNING"),
					resource.TestCheckResourceAttr("agentlab_session.alice", "sandbox", "alice-1"),
					resource.TestMatchResourceAttr("agentlab_session.alice", "ip", regexp.MustCompile(`^10\.77\.`)),
				),
			},
			{ResourceName: "agentlab_workspace.w", ImportState: true, ImportStateId: "team-a", ImportStateVerify: true, ImportStateVerifyIgnore: []string{"timeouts", "attached_sandbox", "deletion_protection"}},
			{ResourceName: "agentlab_workspace_snapshot.s1", ImportState: true, ImportStateId: "team-a/baseline", ImportStateVerify: true, ImportStateVerifyIgnore: []string{"timeouts"}},
			{ResourceName: "agentlab_session.alice", ImportState: true, ImportStateId: "alice", ImportStateVerify: true, ImportStateVerifyIgnore: []string{"timeouts"}},
			// Grow in place; stop the session (sandbox destroyed, workspace kept).
			{
				Config:           cfg(12, false),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("agentlab_workspace.w", plancheck.ResourceActionUpdate)}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("agentlab_workspace.w", "size_gb", "12"),
					resource.TestCheckResourceAttr("agentlab_session.alice", "state", "STOPPED"),
					resource.TestCheckResourceAttr("agentlab_session.alice", "sandbox_vmid", "0"),
				),
			},
			{Config: cfg(12, true), Check: resource.TestCheckResourceAttr("agentlab_session.alice", "sandbox", "alice-2")},
			// The session's sandbox destroyed out of band: the plan resumes it.
			{
				PreConfig: func() {
					s, err := c.Session(ctx, "alice")
					must(t, err)
					must(t, err2(c.Destroy(ctx, s.Sandbox, false)))
				},
				Config:           cfg(12, true),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("agentlab_session.alice", plancheck.ResourceActionUpdate)}},
				Check:            resource.TestCheckResourceAttr("agentlab_session.alice", "state", "RUNNING"),
			},
			// Shrinking is refused at plan time; nothing changes.
			{Config: cfg(8, true), ExpectError: regexp.MustCompile(`Workspace Cannot Shrink`)},
		},
	})
}

func TestAccDataSources(t *testing.T) {
	d, c := startAgent(t)
	ctx := context.Background()
	_, err := c.CreateWorkspace(ctx, apiWorkspace("cli-ws"))
	must(t, err)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		CheckDestroy: func(s *terraform.State) error {
			if _, err := c.DeleteWorkspace(ctx, "cli-ws"); err != nil {
				return err
			}
			return noVMsLeft(d)(s)
		},
		Steps: []resource.TestStep{{
			Config: providerBlock + `
data "agentlab_host" "h" {}
data "agentlab_profiles" "all" {}
data "agentlab_profile" "dev" { name = "interactive-dev" }
data "agentlab_workspace" "w" { name = "cli-ws" }
resource "agentlab_sandbox" "s" {
  name    = "ds"
  profile = data.agentlab_profiles.all.names[1]
}
data "agentlab_sandbox" "s" { name = agentlab_sandbox.s.vmid }
`,
			Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckResourceAttr("data.agentlab_host.h", "proxmox_reachable", "true"),
				resource.TestCheckResourceAttr("data.agentlab_host.h", "proxmox_version", "9.1.2"),
				resource.TestCheckResourceAttr("data.agentlab_host.h", "node", "pve"),
				resource.TestCheckResourceAttr("data.agentlab_profiles.all", "names.#", "3"),
				resource.TestCheckResourceAttr("data.agentlab_profiles.all", "profiles.2.name", "yolo-workspace"),
				resource.TestCheckResourceAttr("data.agentlab_profiles.all", "profiles.2.workspace_required", "true"),
				resource.TestCheckResourceAttr("data.agentlab_profile.dev", "cores", "6"),
				resource.TestCheckResourceAttr("data.agentlab_profile.dev", "template_vmid", "9000"),
				resource.TestCheckResourceAttr("data.agentlab_workspace.w", "size_gb", "5"),
				resource.TestMatchResourceAttr("data.agentlab_workspace.w", "volume", regexp.MustCompile(`^local-lvm:vm-\d+-disk-0$`)),
				resource.TestCheckResourceAttr("data.agentlab_sandbox.s", "name", "ds"),
				resource.TestCheckResourceAttr("data.agentlab_sandbox.s", "profile", "yolo-ephemeral"),
				resource.TestCheckResourceAttrPair("data.agentlab_sandbox.s", "ip", "agentlab_sandbox.s", "ip"),
				// None is null, as in the resources.
				resource.TestCheckNoResourceAttr("data.agentlab_sandbox.s", "workspace"),
				resource.TestCheckNoResourceAttr("agentlab_sandbox.s", "workspace"),
				resource.TestCheckNoResourceAttr("data.agentlab_workspace.w", "attached_sandbox"),
				resource.TestCheckNoResourceAttr("data.agentlab_workspace.w", "session"),
			),
		}},
	})
}

// TestAccProviderExample runs examples/provider/provider.tf (the Unix socket,
// no token) against a live agent's socket.
func TestAccProviderExample(t *testing.T) {
	d, _ := startAgent(t)
	cfg := strings.Replace(readFile(t, "examples/provider/provider.tf"), "/run/agentd/agentd.sock", d.Info.Socket, 1)
	t.Setenv("AGENTLAB_TOKEN", "")
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{{
			Config: providerBlock + cfg + "\ndata \"agentlab_host\" \"h\" {}\n",
			Check:  resource.TestCheckResourceAttr("data.agentlab_host.h", "proxmox_reachable", "true"),
		}},
	})
}

func TestAccProviderConfigErrors(t *testing.T) {
	t.Setenv("AGENTLAB_ENDPOINT", "")
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{
			{
				Config:      providerBlock + `provider "agentlab" { endpoint = "http://127.0.0.1:1" }` + "\n" + `data "agentlab_host" "h" {}`,
				ExpectError: regexp.MustCompile(`(?s)Invalid agentd Endpoint.*unix:// or https://`),
			},
			{
				Config:      providerBlock + `provider "agentlab" { endpoint = "unix:///nonexistent/agentd.sock" }` + "\n" + `data "agentlab_host" "h" {}`,
				ExpectError: regexp.MustCompile(`(?s)Unable to Reach agentd.*agentd dev`),
			},
		},
	})
}
