package provider_test

import (
	"strconv"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func err2[T any](_ T, err error) error { return err }

func apiWorkspace(name string) api.CreateWorkspaceRequest {
	return api.CreateWorkspaceRequest{Name: name, Size: "5G"}
}
