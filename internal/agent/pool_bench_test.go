package agent_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/config"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// benchPool sets the pool of poolProfile and waits until n members are ready.
func benchPool(b *testing.B, c *client.Client, minReady, max, n int) {
	b.Helper()
	ctx := context.Background()
	if _, err := c.SetPool(ctx, poolProfile, api.SetPoolRequest{MinReady: intp(minReady), Max: intp(max)}); err != nil {
		b.Fatal(err)
	}
	for {
		p, err := c.Pool(ctx, poolProfile)
		if err != nil {
			b.Fatal(err)
		}
		if p.Ready >= n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkPoolClaimSeenByClient measures create → RUNNING as a client sees
// it (client.WaitSandbox, the long-poll) when the pool has a ready member,
// at zero task time and at realistic task times divided by 4 (the claim
// writes the VM's config, a qmconfig task, and runs hostnamectl through the
// guest agent). Every create must be a claim; the pool refills between
// iterations (outside the timer).
func BenchmarkPoolClaimSeenByClient(b *testing.B) {
	for _, speed := range []float64{0, 4} {
		b.Run(fmt.Sprintf("speed=%g", speed), func(b *testing.B) {
			_, c := startDev(b, agent.DevOptions{Speed: speed, ProvisioningTimeout: 5 * time.Minute})
			ctx := context.Background()
			benchPool(b, c, 4, 8, 4)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				benchPool(b, c, 4, 8, 1)
				before, err := c.Pool(ctx, poolProfile)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: fmt.Sprintf("w%d", i), Profile: poolProfile})
				if err != nil {
					b.Fatal(err)
				}
				if sb, err = c.WaitSandbox(ctx, sb.ID, 200*time.Millisecond); err != nil || sb.State != api.StateRunning {
					b.Fatalf("%v %+v", err, sb)
				}
				lat = append(lat, time.Since(start))
				b.StopTimer()
				after, _ := c.Pool(ctx, poolProfile)
				if after.Claimed != before.Claimed+1 {
					b.Fatalf("create %d was not a claim (claimed %d → %d)", i, before.Claimed, after.Claimed)
				}
				if _, err := c.Destroy(ctx, sb.ID, false); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(float64(percentile(lat, 0.5).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
		})
	}
}

// BenchmarkPoolBurst100 sends 100 concurrent creates against a pool of 20
// ready members at realistic task and boot times divided by 4: the first 20
// are claims, the rest cold creates (or claims of members the refill made
// ready meanwhile). It reports how many were served from the initial pool,
// from the refill and cold, failures (the benchmark fails on any), the
// makespan against the ideal (one cold critical path, PVE holding only a
// shared lock on the template) and the claims' p50 as clients saw it.
func BenchmarkPoolBurst100(b *testing.B) {
	const n, pool, speed = 100, 20, 4.0
	rd := pvesim.RealisticDurations()
	scale := func(t time.Duration) time.Duration { return time.Duration(float64(t) / speed) }
	ideal := scale(rd.ByType["qmclone"] + rd.ByType["qmconfig"] + rd.ByType["resize"] + rd.ByType["qmstart"] + 20*time.Second + 5*time.Second)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		d, c := startDev(b, agent.DevOptions{Speed: speed, ProvisioningTimeout: 10 * time.Minute})
		ctx := context.Background()
		benchPool(b, c, pool, pool, pool)
		members := map[string]bool{}
		for _, sb := range pooledRows(b, d) {
			members[sb.ID] = true
		}
		before, _ := c.Pool(ctx, poolProfile)
		b.StartTimer()
		start := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var instant []time.Duration
		var failed []error
		fromPool := 0
		for j := 0; j < n; j++ {
			wg.Add(1)
			go func(j int) {
				defer wg.Done()
				t0 := time.Now()
				sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: fmt.Sprintf("burst-%d", j), Profile: poolProfile})
				if err == nil {
					sb, err = c.WaitSandbox(ctx, sb.ID, 200*time.Millisecond)
				}
				if err == nil && sb.State != api.StateRunning {
					err = fmt.Errorf("%s: %s %s", sb.Name, sb.State, sb.Error)
				}
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					failed = append(failed, err)
				case members[sb.ID]:
					fromPool++
					instant = append(instant, time.Since(t0))
				}
			}(j)
		}
		wg.Wait()
		makespan := time.Since(start)
		b.StopTimer()
		for _, err := range failed {
			b.Error(err)
		}
		after, _ := c.Pool(ctx, poolProfile)
		claims := int(after.Claimed - before.Claimed)
		b.ReportMetric(float64(fromPool), "from-pool")
		b.ReportMetric(float64(claims-fromPool), "from-refill")
		b.ReportMetric(float64(n-claims-len(failed)), "cold")
		b.ReportMetric(float64(len(failed)), "failed")
		b.ReportMetric(makespan.Seconds(), "makespan-s")
		b.ReportMetric(ideal.Seconds(), "ideal-s")
		b.ReportMetric(makespan.Seconds()/ideal.Seconds(), "x-ideal")
		if len(instant) > 0 {
			b.ReportMetric(float64(percentile(instant, 0.5).Microseconds())/1000, "claim-p50-ms")
			b.ReportMetric(float64(percentile(instant, 0.99).Microseconds())/1000, "claim-p99-ms")
		}
	}
}

// BenchmarkPoolRefill fills an empty pool of 10 at realistic task and boot
// times divided by 4 with pool_clone_concurrency 1, 2 and 4 on one node and
// reports members ready per minute, in simulated time and converted back to
// realistic time (÷ 4): the per-node clone limit bounds the clone step only,
// boots overlap.
func BenchmarkPoolRefill(b *testing.B) {
	const members, speed = 10, 4.0
	for _, k := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("clones-per-node=%d", k), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				_, c := startDev(b, agent.DevOptions{Speed: speed, ProvisioningTimeout: 10 * time.Minute,
					Configure: func(cfg *config.Config) { cfg.PoolCloneConcurrency = k }})
				b.StartTimer()
				start := time.Now()
				benchPool(b, c, members, members, members)
				took := time.Since(start)
				b.StopTimer()
				b.ReportMetric(took.Seconds(), "fill-s")
				b.ReportMetric(float64(members)/took.Minutes(), "ready/min-sim")
				b.ReportMetric(float64(members)/took.Minutes()/speed, "ready/min-realistic")
			}
		})
	}
}

// BenchmarkPoolClaimRequests counts the Proxmox requests of one claim at
// zero task time (the pool is set so that the claim triggers no refill:
// min_ready 0, max 1, with one member ready).
func BenchmarkPoolClaimRequests(b *testing.B) {
	d, c := startDev(b, agent.DevOptions{Hooks: agent.Hooks{NoLoops: true}})
	ctx := context.Background()
	var reqs int64
	for i := 0; i < b.N; i++ {
		benchPool(b, c, 1, 1, 1)
		if _, err := c.SetPool(ctx, poolProfile, api.SetPoolRequest{MinReady: intp(0), Max: intp(1)}); err != nil {
			b.Fatal(err)
		}
		// SetPool's fill runs in the background: let it finish first.
		if err := d.Loops.RunNow(ctx, "pool"); err != nil {
			b.Fatal(err)
		}
		before, _ := d.Sim.RequestCount()
		sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: fmt.Sprintf("r%d", i), Profile: poolProfile})
		if err != nil {
			b.Fatal(err)
		}
		if sb, err = c.WaitSandbox(ctx, sb.ID, 200*time.Millisecond); err != nil || sb.State != api.StateRunning {
			b.Fatalf("%v %+v", err, sb)
		}
		// The claim's kick: a fill that finds nothing to do but ping.
		if err := d.Loops.RunNow(ctx, "pool"); err != nil {
			b.Fatal(err)
		}
		after, _ := d.Sim.RequestCount()
		reqs += int64(after - before)
		if _, err := c.Destroy(ctx, sb.ID, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(reqs)/float64(b.N), "pve-req/claim")
}
