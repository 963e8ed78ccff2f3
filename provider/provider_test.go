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
	return startAgentWith(t, agent.DevOptions{})
}

// startAgentWith is startAgent with options (Nodes for a simulated cluster);
// the state dir, timeout and log are the test's.
func startAgentWith(t *testing.T, o agent.DevOptions) (*agent.Dev, *client.Client) {
	t.Helper()
	o.StateDir, o.ProvisioningTimeout, o.Log = t.TempDir(), time.Minute, slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := agent.StartDev(context.Background(), o)
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

// noVMsLeft is the CheckDestroy of every test: nothing but the template (and,
// in a simulated cluster, its copies 9001.. on the further nodes).
func noVMsLeft(d *agent.Dev) resource.TestCheckFunc {
	return func(*terraform.State) error {
		templates := len(d.Sim.Nodes())
		for id, v := range d.Sim.Dump().VMs {
			if id < pvesim.FixtureTemplateID || id >= pvesim.FixtureTemplateID+templates {
				return fmt.Errorf("VM %d (%s) left behind", id, v.Config["name"])
			}
		}
		return nil
	}
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

// TestAccProviderWrongToken: a refused token fails the plan with the token
// error, on both CLIs.
func TestAccProviderWrongToken(t *testing.T) {
	startAgent(t)
	t.Setenv("AGENTLAB_TOKEN", strings.Repeat("x", 40))
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories,
		Steps: []resource.TestStep{{
			Config:      providerBlock + `data "agentlab_host" "h" {}`,
			ExpectError: regexp.MustCompile(`(?s)Invalid agentd Token.*invalid\s+token.*token\s+attribute.*AGENTLAB_TOKEN.*token_file`),
		}},
	})
}
