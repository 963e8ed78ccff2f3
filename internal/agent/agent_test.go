package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

func startDev(t testing.TB, o agent.DevOptions) (*agent.Dev, *client.Client) {
	t.Helper()
	if o.StateDir == "" {
		o.StateDir = t.TempDir()
	}
	if o.ProvisioningTimeout == 0 {
		o.ProvisioningTimeout = 20 * time.Second
	}
	d, err := agent.StartDev(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	c, err := client.New(client.Config{Endpoint: d.Info.Endpoint, Token: d.Info.Token, CACert: d.Info.CACert})
	if err != nil {
		t.Fatal(err)
	}
	return d, c
}

func tctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestSmokeLifecycle(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "one", Profile: "yolo-ephemeral"})
	if err != nil {
		t.Fatal(err)
	}
	sb, err = c.WaitSandbox(ctx, sb.Name, 20*time.Millisecond)
	if err != nil || sb.State != api.StateRunning {
		t.Fatalf("%+v %v", sb, err)
	}
	t.Logf("%+v", sb)
	if _, err := c.Stop(ctx, "one"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(ctx, "one"); err != nil {
		t.Fatal(err)
	}
	sb, err = c.WaitSandbox(ctx, "one", 20*time.Millisecond)
	if err != nil || sb.State != api.StateRunning {
		t.Fatalf("%+v %v", sb, err)
	}
	if sb, err = c.Destroy(ctx, "one", false); err != nil || sb.State != api.StateDestroyed {
		t.Fatalf("%+v %v", sb, err)
	}
	_ = d
}
