package agent_test

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/config"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// waitRunning polls tightly so the poll interval does not dominate latency.
func waitRunning(ctx context.Context, c *client.Client, name string) (*api.Sandbox, error) {
	for {
		sb, err := c.Sandbox(ctx, name)
		if err != nil {
			return nil, err
		}
		if !sb.State.InFlight() {
			if sb.State != api.StateRunning {
				return sb, fmt.Errorf("%s: %s %s", name, sb.State, sb.Error)
			}
			return sb, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*p)]
}

// BenchmarkCreateToRunning measures create → RUNNING through the HTTPS API at
// zero task time: the agent's own overhead (store writes, Proxmox calls, polling).
func BenchmarkCreateToRunning(b *testing.B) {
	d, c := startDev(b, agent.DevOptions{})
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("b%d", i)
		start := time.Now()
		if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: "yolo-ephemeral"}); err != nil {
			b.Fatal(err)
		}
		if _, err := waitRunning(ctx, c, name); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		b.StopTimer()
		if _, err := c.Destroy(ctx, name, false); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	total, _ := d.Sim.RequestCount()
	b.ReportMetric(float64(percentile(lat, 0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(total)/float64(b.N), "pve-req/op")
}

// BenchmarkConcurrentCreates100 measures the makespan of 100 concurrent
// creates on one node at realistic task and boot times (divided by speed),
// against the ideal schedule under the node's limits: PVE holds only a
// shared lock on the template, but every clone's two storage commands take
// the node's storage lock in turn, and agentd runs at most
// placement.max_inflight_per_node clones at once (more would time out on
// that lock). So the last sandbox finishes no sooner than
// max(ceil(n/cap) × clone, n × 2 × lock hold) after the start, plus its own
// config, resize, clean snapshot, start, guest boot and DHCP.
func BenchmarkConcurrentCreates100(b *testing.B) {
	const n, speed = 100, 4.0
	rd := pvesim.RealisticDurations()
	scale := func(t time.Duration) time.Duration { return time.Duration(float64(t) / speed) }
	capPerNode := config.Default().Placement.MaxInFlightPerNode
	clones := max(time.Duration(math.Ceil(float64(n)/float64(capPerNode))*float64(scale(rd.ByType["qmclone"]))), n*2*scale(rd.StorageLock))
	ideal := clones + scale(rd.ByType["qmconfig"]+rd.ByType["resize"]+rd.ByType["qmsnapshot"]+rd.ByType["qmstart"]+20*time.Second+5*time.Second)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		_, c := startDev(b, agent.DevOptions{Speed: speed, ProvisioningTimeout: 10 * time.Minute})
		ctx := context.Background()
		b.StartTimer()
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for j := 0; j < n; j++ {
			wg.Add(1)
			go func(j int) {
				defer wg.Done()
				name := fmt.Sprintf("c%d", j)
				if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: "yolo-ephemeral"}); err != nil {
					errs <- err
					return
				}
				for {
					sb, err := c.Sandbox(ctx, name)
					if err != nil {
						errs <- err
						return
					}
					if !sb.State.InFlight() {
						if sb.State != api.StateRunning {
							errs <- fmt.Errorf("%s: %s", sb.State, sb.Error)
						}
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}(j)
		}
		wg.Wait()
		makespan := time.Since(start)
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		b.ReportMetric(makespan.Seconds(), "makespan-s")
		b.ReportMetric(ideal.Seconds(), "ideal-s")
		b.ReportMetric(makespan.Seconds()/ideal.Seconds(), "x-ideal")
	}
}

// BenchmarkReconcile measures one reconcile cycle (wall time and Proxmox
// requests) with N VMs, each with a RUNNING row.
func BenchmarkReconcile(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("vms=%d", n), func(b *testing.B) {
			d, _ := startDev(b, agent.DevOptions{Hooks: agent.Hooks{NoLoops: true}})
			ctx := context.Background()
			for i := 0; i < n; i++ {
				id := 1000 + i
				sbID := fmt.Sprintf("sbx-%012d", id)
				if err := d.Sim.AddVM("pve", id, map[string]string{"name": fmt.Sprintf("r%d", i), "tags": "agentlab", "memory": "512",
					"description": "agentlab-sandbox-id: " + sbID}, false); err != nil {
					b.Fatal(err)
				}
				sb := &store.Sandbox{Sandbox: api.Sandbox{ID: sbID, Name: fmt.Sprintf("r%d", i), Profile: "yolo-ephemeral",
					State: api.StateStopped, VMID: id, Node: "pve"}, Request: "{}"}
				if err := d.Agent.Store.CreateSandbox(ctx, sb, store.Event{}); err != nil {
					b.Fatal(err)
				}
			}
			// The first cycle proves every row (no listing to compare with
			// yet); measure the steady state after it.
			first, _ := d.Sim.RequestCount()
			if _, err := d.Manager.Reconcile(ctx, false); err != nil {
				b.Fatal(err)
			}
			before, _ := d.Sim.RequestCount()
			b.ReportMetric(float64(before-first), "pve-req/first-cycle")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				rep, err := d.Manager.Reconcile(ctx, false)
				if err != nil || rep.Checked != n || len(rep.Actions) != 0 {
					b.Fatalf("%v checked=%d actions=%d", err, rep.Checked, len(rep.Actions))
				}
			}
			b.StopTimer()
			after, _ := d.Sim.RequestCount()
			b.ReportMetric(float64(after-before)/float64(b.N), "pve-req/cycle")
		})
	}
}

// BenchmarkCreateSeenByClient measures create → RUNNING as a client sees it
// at zero task time: with the long-poll the CLI and the provider use
// (client.WaitSandbox), and with a plain poll at the CLI's former 200 ms.
func BenchmarkCreateSeenByClient(b *testing.B) {
	for _, mode := range []string{"long-poll", "poll-200ms"} {
		b.Run(mode, func(b *testing.B) {
			_, c := startDev(b, agent.DevOptions{})
			ctx := context.Background()
			lat := make([]time.Duration, 0, b.N)
			for i := 0; i < b.N; i++ {
				name := fmt.Sprintf("s%d", i)
				start := time.Now()
				if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: "yolo-ephemeral"}); err != nil {
					b.Fatal(err)
				}
				var sb *api.Sandbox
				var err error
				if mode == "long-poll" {
					sb, err = c.WaitSandbox(ctx, name, 200*time.Millisecond)
				} else {
					for sb, err = c.Sandbox(ctx, name); err == nil && sb.State.Settling(); sb, err = c.Sandbox(ctx, name) {
						time.Sleep(200 * time.Millisecond)
					}
				}
				if err != nil || sb.State != api.StateRunning {
					b.Fatalf("%s: %v %+v", name, err, sb)
				}
				lat = append(lat, time.Since(start))
				b.StopTimer()
				if _, err := c.Destroy(ctx, name, false); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(percentile(lat, 0.5).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
		})
	}
}

// BenchmarkPauseResume measures, at realistic task and boot times (speed 1),
// the time from `sandbox pause` to the RAM being freed (the VM not running,
// its config naming the vmstate volume and lock suspended) and from
// `sandbox resume` to RUNNING, and how the lease behaved: the remaining
// lease before the pause and after the resume, and what the round trip
// consumed of it (with lease_counts_while_paused off only the time the
// sandbox was not hibernated counts). Run with -benchtime=3x: one iteration
// takes tens of seconds.
func BenchmarkPauseResume(b *testing.B) {
	const speed = 1.0
	d, c := startDev(b, agent.DevOptions{Speed: speed, ProvisioningTimeout: 10 * time.Minute})
	ctx := context.Background()
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "nap", Profile: "yolo-ephemeral", TTL: "2h"}); err != nil {
		b.Fatal(err)
	}
	sb, err := waitRunning(ctx, c, "nap")
	if err != nil {
		b.Fatal(err)
	}
	var freed, running, consumed []time.Duration
	var leaseBefore, leaseAfter time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cur, err := c.Sandbox(ctx, "nap")
		if err != nil {
			b.Fatal(err)
		}
		leaseBefore = time.Until(*cur.LeaseExpiresAt)
		start := time.Now()
		if _, err := c.Hibernate(ctx, "nap"); err != nil {
			b.Fatal(err)
		}
		for {
			v := d.Sim.Dump().VMs[sb.VMID]
			if !v.Running && v.Config["vmstate"] != "" && v.Config["lock"] == "suspended" {
				break
			}
			time.Sleep(time.Millisecond)
		}
		freed = append(freed, time.Since(start))
		start = time.Now()
		if _, err := c.Resume(ctx, "nap"); err != nil {
			b.Fatal(err)
		}
		cur, err = waitRunning(ctx, c, "nap")
		if err != nil {
			b.Fatal(err)
		}
		running = append(running, time.Since(start))
		leaseAfter = time.Until(*cur.LeaseExpiresAt)
		consumed = append(consumed, leaseBefore-leaseAfter)
	}
	b.StopTimer()
	b.ReportMetric(percentile(freed, 0.5).Seconds(), "pause-to-freed-s")
	b.ReportMetric(percentile(running, 0.5).Seconds(), "resume-to-running-s")
	b.ReportMetric(percentile(consumed, 0.5).Seconds(), "lease-consumed-s")
	b.ReportMetric(leaseBefore.Seconds(), "lease-before-s")
	b.ReportMetric(leaseAfter.Seconds(), "lease-after-s")
}
