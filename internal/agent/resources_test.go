package agent_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
)

// TestSandboxCoresAndMemory: a create may override the profile's cores and
// memory (the VM is configured with them before its first boot); the API
// reports what Proxmox has, after a create, a resize, and a change made
// outside agentd (found by reconcile's config read); an override is part of
// the request's identity for idempotent retries; bad values name the field.
func TestSandboxCoresAndMemory(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	pc := pveClient(t, d)
	prof, err := c.Profile(ctx, "yolo-ephemeral")
	if err != nil {
		t.Fatal(err)
	}
	big := api.CreateSandboxRequest{Name: "big", Profile: "yolo-ephemeral", Cores: 6, MemoryMB: 3072}
	if _, err := c.CreateSandbox(ctx, big); err != nil {
		t.Fatal(err)
	}
	sb, err := c.WaitSandbox(ctx, "big", time.Millisecond)
	if err != nil || sb.State != api.StateRunning || sb.Cores != 6 || sb.MemoryMB != 3072 {
		t.Fatalf("create with overrides: %+v %v", sb, err)
	}
	if cfg := vms(d)[sb.VMID].Config; cfg["cores"] != "6" || cfg["memory"] != "3072" {
		t.Fatalf("VM config %v", cfg)
	}
	if n := countKind(t, c, "big", "sandbox.resized"); n != 0 {
		t.Fatalf("the overrides took %d resizes; they belong in the first configuration", n)
	}
	// Retry: the same request is the same sandbox, other overrides a conflict.
	if again, err := c.CreateSandbox(ctx, big); err != nil || again.ID != sb.ID {
		t.Fatalf("retry: %+v %v", again, err)
	}
	other := big
	other.Cores = 5
	if _, err := c.CreateSandbox(ctx, other); !api.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), "cores/memory_mb overrides 6/3072, not 5/3072") {
		t.Fatalf("retry with other cores: %v", err)
	}
	// No override, or one equal to the profile: the profile's values.
	for _, req := range []api.CreateSandboxRequest{{Name: "plain", Profile: "yolo-ephemeral"},
		{Name: "same", Profile: "yolo-ephemeral", Cores: prof.Cores, MemoryMB: prof.MemoryMB}} {
		c.CreateSandbox(ctx, req)
		p, err := c.WaitSandbox(ctx, req.Name, time.Millisecond)
		if err != nil || p.Cores != prof.Cores || p.MemoryMB != prof.MemoryMB {
			t.Fatalf("%s: %+v %v (profile %d/%d)", req.Name, p, err, prof.Cores, prof.MemoryMB)
		}
	}
	// A resize is read back into the row.
	if _, err := c.Resize(ctx, "big", api.ResizeRequest{Cores: 8}); err != nil {
		t.Fatal(err)
	}
	if sb, _ = c.Sandbox(ctx, "big"); sb.Cores != 8 || sb.MemoryMB != 3072 {
		t.Fatalf("after resize: %d/%d", sb.Cores, sb.MemoryMB)
	}
	// Changed in Proxmox behind agentd's back: reconcile's proof reads it.
	if err := pc.Configure(ctx, sb.VMID, pve.Option{Name: "cores", Value: 3}, pve.Option{Name: "memory", Value: "2048"}); err != nil {
		t.Fatal(err)
	}
	rep, err := d.Manager.Reconcile(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range rep.Actions {
		found = found || a.Sandbox == "big" && a.Action == "resized" && a.Cores == 3 && a.MemoryMB == 2048
	}
	if sb, _ = c.Sandbox(ctx, "big"); !found || sb.Cores != 3 || sb.MemoryMB != 2048 {
		t.Fatalf("after an out-of-band change: %d/%d, actions %+v", sb.Cores, sb.MemoryMB, rep.Actions)
	}
	if rep, _ = d.Manager.Reconcile(ctx, false); len(rep.Actions) != 0 {
		t.Fatalf("a second reconcile still acts: %+v", rep.Actions)
	}
	for _, tc := range []struct {
		req   api.CreateSandboxRequest
		field string
	}{
		{api.CreateSandboxRequest{Name: "x1", Profile: "yolo-ephemeral", Cores: 999}, "cores"},
		{api.CreateSandboxRequest{Name: "x2", Profile: "yolo-ephemeral", Cores: -1}, "cores"},
		{api.CreateSandboxRequest{Name: "x3", Profile: "yolo-ephemeral", MemoryMB: 100}, "memory_mb"},
	} {
		_, err := c.CreateSandbox(ctx, tc.req)
		if ae, ok := err.(*api.Error); !ok || ae.Status != http.StatusBadRequest || ae.Field != tc.field {
			t.Errorf("%+v: %v, want a 400 on %s", tc.req, err, tc.field)
		}
	}
}
