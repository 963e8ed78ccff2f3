package provider

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

// TestResizeWarnsPending: resizing a running sandbox warns that Proxmox
// applies the change at its next start and stores the values read back;
// a stopped sandbox takes it at once, without a warning.
func TestResizeWarnsPending(t *testing.T) {
	ctx := context.Background()
	d, err := agent.StartDev(ctx, agent.DevOptions{StateDir: t.TempDir(), ProvisioningTimeout: time.Minute,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	c, err := client.New(client.Config{Endpoint: d.Info.Endpoint, Token: d.Info.Token, CACert: d.Info.CACert})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "rs", Profile: "yolo-ephemeral"})
	if err == nil {
		sb, err = c.WaitSandbox(ctx, sb.ID, 100*time.Millisecond)
	}
	if err != nil || sb.State != api.StateRunning {
		t.Fatalf("sandbox: %+v %v", sb, err)
	}
	r := &sandboxResource{c: c}
	want := sandboxModel{sandboxObject: sandboxObject{Cores: types.Int64Value(3), MemoryMB: types.Int64Value(3072)}}
	into := sandboxModel{sandboxObject: sandboxObject{Cores: types.Int64Value(2), MemoryMB: types.Int64Value(2048)}}
	var diags diag.Diagnostics
	if _, err := r.resize(ctx, sb.ID, want, &into, &diags); err != nil {
		t.Fatal(err)
	}
	if into.Cores.ValueInt64() != 3 || into.MemoryMB.ValueInt64() != 3072 {
		t.Errorf("read back cores %v, memory %v; want 3, 3072", into.Cores, into.MemoryMB)
	}
	if len(diags) != 1 || diags.HasError() {
		t.Fatalf("want one warning, got %v", diags)
	}
	if d := diags[0].Detail(); diags[0].Summary() != "Sandbox Resize Pending" || !strings.Contains(d, "cores") || !strings.Contains(d, "next start") ||
		!strings.Contains(d, "agentd sandbox stop rs") {
		t.Errorf("warning: %s: %s", diags[0].Summary(), d)
	}

	if _, err := c.Stop(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	diags = nil
	want.Cores = types.Int64Value(4)
	if _, err := r.resize(ctx, sb.ID, want, &into, &diags); err != nil {
		t.Fatal(err)
	}
	if len(diags) != 0 || into.Cores.ValueInt64() != 4 {
		t.Errorf("stopped: cores %v, diagnostics %v; want 4 and none", into.Cores, diags)
	}
}

// TestUpdateOrder: a lease is renewed while the sandbox runs, and a resize
// happens while it is stopped whenever the apply stops it or it is stopped.
func TestUpdateOrder(t *testing.T) {
	var got []string
	step := func(name string) func() error { return func() error { got = append(got, name); return nil } }
	for _, c := range []struct {
		now  api.State
		want string
		exp  string
	}{
		{api.StateRunning, powerStopped, "renew power resize"},
		{api.StateRunning, powerPaused, "renew resize power"},
		{api.StateRunning, powerRunning, "renew resize power"},
		{api.StateStopped, powerRunning, "resize power renew"},
		{api.StateStopped, powerPaused, "resize power renew"},
		{api.StateSuspended, powerRunning, "power renew resize"},
		{api.StateSuspended, powerStopped, "power resize renew"},
		{api.StateBooting, powerRunning, "power renew resize"},
	} {
		got = nil
		for _, s := range updateOrder(c.now, c.want, step("renew"), step("power"), step("resize")) {
			_ = s()
		}
		if strings.Join(got, " ") != c.exp {
			t.Errorf("%s → %s: %v, want %s", c.now, c.want, got, c.exp)
		}
	}
}
