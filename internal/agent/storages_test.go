package agent_test

import (
	"net/http"
	"slices"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// TestStoragesAPI: GET /v1/storages lists exactly the storages a workspace
// request is allowed to name (the default first), so a client can check a
// storage before it asks: each listed one is accepted, any other refused.
func TestStoragesAPI(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	got, err := c.Storages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]string{d.Config.WorkspaceStorage}, d.Config.WorkspaceStorages...)
	if got.Default != d.Config.WorkspaceStorage || !slices.Equal(got.Storages, want) {
		t.Fatalf("storages: %+v, want default %s and %v", got, d.Config.WorkspaceStorage, want)
	}
	for _, s := range got.Storages {
		w, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "w-" + s, Size: "1G", Storage: s})
		if err != nil || w.Storage != s {
			t.Errorf("listed storage %s refused: %+v %v", s, w, err)
		}
	}
	_, err = c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "w-other", Size: "1G", Storage: "other"})
	wantCode(t, err, http.StatusBadRequest, api.CodeInvalidField)
	// The socket (the CLI's default) answers the same list.
	if sl, err := socketClient(t, d).Storages(ctx); err != nil || !slices.Equal(sl.Storages, want) {
		t.Fatalf("over the socket: %+v %v", sl, err)
	}
}
