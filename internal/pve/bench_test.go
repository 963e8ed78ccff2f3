package pve_test

import (
	"context"
	"testing"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// BenchmarkCycle measures the simulator's throughput for a whole sandbox cycle
// (clone → start → status → stop → destroy) at zero task time.
func BenchmarkCycle(b *testing.B) {
	sim, c := newSim(b, pvesim.Options{})
	ctx := context.Background()
	before, _ := sim.RequestCount()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		id := 100 + i%1000
		if err := c.Clone(ctx, tmpl, id, pve.CloneOptions{Name: "bench"}); err != nil {
			b.Fatal(err)
		}
		if err := c.Start(ctx, id); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Status(ctx, id); err != nil {
			b.Fatal(err)
		}
		if err := c.Stop(ctx, id); err != nil {
			b.Fatal(err)
		}
		if err := c.Destroy(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	after, _ := sim.RequestCount()
	reqs := float64(after - before)
	b.ReportMetric(reqs/float64(b.N), "req/cycle")
	b.ReportMetric(reqs/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "cycles/s")
}

// BenchmarkOverhead compares internal/pve calls with the bare go-proxmox request
// they make; the difference is this package's overhead per operation.
func BenchmarkOverhead(b *testing.B) {
	sim, c := newSim(b, pvesim.Options{})
	ctx := context.Background()
	raw := proxmoxClient(sim)
	path := "/nodes/pve/qemu/9000/status/current"
	b.Run("status/pve", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := c.Status(ctx, tmpl); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("status/go-proxmox", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			var v proxmox.VirtualMachine
			if err := raw.Get(ctx, path, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("config/pve", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := c.Config(ctx, tmpl); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("config/go-proxmox", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			var m map[string]any
			if err := raw.Get(ctx, "/nodes/pve/qemu/9000/config", &m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("start+stop-task/pve", func(b *testing.B) {
		_ = c.Clone(ctx, tmpl, 900, pve.CloneOptions{})
		for i := 0; i < b.N; i++ {
			if err := c.Start(ctx, 900); err != nil {
				b.Fatal(err)
			}
			if err := c.Stop(ctx, 900); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("start+stop-task/go-proxmox", func(b *testing.B) {
		vm := &proxmox.VirtualMachine{}
		vm.New(raw, "pve", 900)
		for i := 0; i < b.N; i++ {
			t, err := vm.Start(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := t.Ping(ctx); err != nil || !t.IsSuccessful {
				b.Fatal(err)
			}
			t, err = vm.Stop(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := t.Ping(ctx); err != nil || !t.IsSuccessful {
				b.Fatal(err)
			}
		}
	})
}
