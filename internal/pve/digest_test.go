package pve_test

import (
	"errors"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// TestConfigureIfUnchanged: the synchronous config write lands only on the
// config whose digest it carries. A change in between (another client, or a
// VM replaced at the VMID) makes Proxmox refuse it, classified ErrModified,
// with nothing written; with the current digest it writes at once (no task).
func TestConfigureIfUnchanged(t *testing.T) {
	sim, c := newSim(t, pvesim.Options{})
	ctx := ctx(t)
	if err := c.Clone(ctx, tmpl, 100, pve.CloneOptions{Name: "d", Description: "digest test"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := c.Config(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	proven, _ := cfg["digest"].(string)
	if len(proven) != 40 {
		t.Fatalf("config digest %q, want a SHA-1", proven)
	}
	// Someone else edits the VM after our read.
	if err := c.Configure(ctx, 100, pve.Option{Name: "description", Value: "not yours any more"}); err != nil {
		t.Fatal(err)
	}
	before, _ := sim.RequestCount()
	err = c.ConfigureIfUnchanged(ctx, 100, proven, pve.Option{Name: "cores", Value: 3}, pve.Option{Name: "tags", Value: "agentlab"})
	if !errors.Is(err, pve.ErrModified) {
		t.Fatalf("write with a stale digest: %v, want ErrModified", err)
	}
	after, _ := sim.RequestCount()
	if after-before != 1 {
		t.Fatalf("a refused write made %d requests, want 1", after-before)
	}
	cfg, err = c.Config(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if cfg["cores"] == float64(3) || cfg["tags"] != nil {
		t.Fatalf("the refused write changed the VM: %v", cfg)
	}
	before, _ = sim.RequestCount()
	if err := c.ConfigureIfUnchanged(ctx, 100, cfg["digest"].(string), pve.Option{Name: "cores", Value: 3}, pve.Option{Name: "tags", Value: "agentlab"}); err != nil {
		t.Fatal(err)
	}
	after, _ = sim.RequestCount()
	if after-before != 1 {
		t.Fatalf("a synchronous write made %d requests, want 1 (no task to poll)", after-before)
	}
	cfg, err = c.Config(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if cfg["cores"] != float64(3) || cfg["tags"] != "agentlab" {
		t.Fatalf("after the write: cores %v tags %v", cfg["cores"], cfg["tags"])
	}
}
