package provider_test

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// importedTTL checks the lease an import read from agentd.
func importedTTL(want string) resource.ImportStateCheckFunc {
	return func(is []*terraform.InstanceState) error {
		if len(is) != 1 || is[0].Attributes["ttl"] != want {
			return fmt.Errorf("imported ttl: want %s, got %+v", want, is)
		}
		return nil
	}
}

func err2[T any](_ T, err error) error { return err }

func apiWorkspace(name string) api.CreateWorkspaceRequest {
	return api.CreateWorkspaceRequest{Name: name, Size: "5G"}
}

// providerBlock declares the provider by its registry address, as real
// configurations do; the harness reattaches the in-process provider there
// (TF_ACC_PROVIDER_NAMESPACE=agentlab).
const providerBlock = `terraform {
  required_providers {
    agentlab = { source = "agentlab/agentlab" }
  }
}
`

// hcl prefixes a configuration with the provider block.
func hcl(cfg string) string { return providerBlock + cfg }

func tcpClientFor(tb testing.TB, d *agent.Dev) *client.Client {
	tb.Helper()
	c, err := client.New(client.Config{Endpoint: d.Info.Endpoint, Token: d.Info.Token, CACert: d.Info.CACert})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}
