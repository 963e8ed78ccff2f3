package agent_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/config"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// BenchmarkClusterCreates measures 1,000 concurrent creates over a
// simulated 10-node cluster at realistic task and boot times ÷ 10 (the
// storage lock's hold and PVE's 10 s lock timeout compressed alike), run
// with -benchtime=1x. AGENTLAB_BENCH_CREATES overrides the count.
//
// It reports:
//   - x-ideal: makespan / ideal, the figure issue 20 sets (≤ 1.2), ideal
//     being the tightest schedule anyone could reach under the limits: a
//     sandbox holds its node's clone slot (placement.max_inflight_per_node)
//     for the clone only, and every clone's two storage commands (the
//     linked clone of the base disk, the cloud-init volume) hold the
//     node's storage lock in turn; config, resize, the clean snapshot, the
//     start (its own slots) and the boot overlap other sandboxes' clones.
//     So ideal = max(slots, lock) with
//     slots = ceil(n/(N×cap)) × clone + config + resize + snapshot + start + boot,
//     lock  = ceil(n/N) × 2 × storage-lock hold + config + resize + snapshot + start + boot.
//   - x-rounds: makespan / the looser ceil(n/(N×cap)) × (clone + start +
//     boot), as if every round of clones waited for its boots.
//   - imbalance: max / min memory configured on the sandboxes' VMs per
//     node after the run (sizes alternate between 512 and 576 MiB).
//   - lock-timeouts: storage lock waits that gave up in the simulator plus
//     tasks that ended with "got timeout"; must be 0.
func BenchmarkClusterCreates(b *testing.B) {
	const nodes, speed = 10, 10.0
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("AGENTLAB_BENCH_CREATES")); err == nil && v > 0 {
		n = v
	}
	rd := pvesim.RealisticDurations()
	scale := func(t time.Duration) time.Duration { return time.Duration(float64(t) / speed) }
	clone, start := scale(rd.ByType["qmclone"]), scale(rd.ByType["qmstart"])
	between := scale(rd.ByType["qmconfig"] + rd.ByType["resize"] + rd.ByType["qmsnapshot"])
	boot := scale(20*time.Second + 5*time.Second)
	capPerNode := config.Default().Placement.MaxInFlightPerNode
	rounds := math.Ceil(float64(n) / float64(nodes*capPerNode))
	loose := time.Duration(rounds * float64(clone+start+boot))
	slots := time.Duration(rounds*float64(clone)) + between + start + boot
	lock := time.Duration(math.Ceil(float64(n)/nodes)*float64(2*scale(rd.StorageLock))) + between + start + boot
	ideal := max(slots, lock)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		d, c := startDev(b, agent.DevOptions{Nodes: nodes, Speed: speed, ProvisioningTimeout: 30 * time.Minute,
			Configure: func(cfg *config.Config) {
				// 100 one-core sandboxes per 16-CPU node.
				cfg.Placement.CPUOvercommit = 8
				cfg.MaxSandboxes, cfg.MaxSandboxesPerProfile = 2*n, 2*n
			}})
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
				mem := 512 + 64*(j%2)
				if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: "yolo-ephemeral", MemoryMB: mem, Cores: 1}); err != nil {
					errs <- err
					return
				}
				sb, err := c.WaitSandbox(ctx, name, 50*time.Millisecond)
				if err == nil && sb.State != api.StateRunning {
					err = fmt.Errorf("%s: %s %s", name, sb.State, sb.Error)
				}
				if err != nil {
					errs <- err
				}
			}(j)
		}
		wg.Wait()
		makespan := time.Since(start)
		b.StopTimer()
		close(errs)
		failed := 0
		for err := range errs {
			if failed < 5 {
				b.Log(err)
			}
			failed++
		}
		timeouts := d.Sim.StorageLockTimeouts()
		dump := d.Sim.Dump()
		for _, tk := range dump.Tasks {
			if strings.Contains(tk.ExitStatus, "got timeout") || strings.Contains(tk.ExitStatus, "lock request timeout") {
				timeouts++
			}
		}
		perNode := map[string]int64{}
		for _, v := range dump.VMs {
			if v.Config["template"] == "1" {
				continue
			}
			m, _ := strconv.ParseInt(v.Config["memory"], 10, 64)
			perNode[v.Node] += m
		}
		lo, hi := int64(math.MaxInt64), int64(0)
		for _, m := range perNode {
			lo, hi = min(lo, m), max(hi, m)
		}
		imbalance := math.Inf(1)
		if len(perNode) == nodes && lo > 0 {
			imbalance = float64(hi) / float64(lo)
		}
		logSteps(b, d)
		b.ReportMetric(makespan.Seconds(), "makespan-s")
		b.ReportMetric(ideal.Seconds(), "ideal-s")
		b.ReportMetric(makespan.Seconds()/ideal.Seconds(), "x-ideal")
		b.ReportMetric(makespan.Seconds()/loose.Seconds(), "x-rounds")
		b.ReportMetric(imbalance, "imbalance")
		b.ReportMetric(float64(timeouts), "lock-timeouts")
		b.ReportMetric(float64(failed), "failed")
		b.StartTimer()
	}
}

// logSteps logs the mean time of each provisioning step and of each
// Proxmox endpoint (agentd's own metrics), to see where a slow run goes.
func logSteps(b *testing.B, d *agent.Dev) {
	fams, err := d.Agent.Metrics.Registry.Gather()
	if err != nil {
		b.Log(err)
		return
	}
	for _, f := range fams {
		name := f.GetName()
		if name != "agentd_provision_step_duration_seconds" && name != "agentd_proxmox_request_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			h := m.GetHistogram()
			if h.GetSampleCount() < 100 {
				continue
			}
			labels := []string{}
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetValue())
			}
			b.Logf("%s %s: n=%d mean=%.0fms", strings.TrimPrefix(name, "agentd_"), strings.Join(labels, " "), h.GetSampleCount(), 1000*h.GetSampleSum()/float64(h.GetSampleCount()))
		}
	}
}

// BenchmarkReconcileCluster measures one steady-state reconcile cycle on a
// simulated 10-node cluster with 5,000 VMs (500 per node), each with a
// STOPPED row: the listing stays one /cluster/resources request however
// many nodes there are (counted by the simulator), plus the audit's
// config reads (reconcile_audit_per_cycle: audit-0 makes none, audit-100
// is the default), and its wall time.
func BenchmarkReconcileCluster(b *testing.B) {
	for _, audit := range []int{0, 100} {
		b.Run(fmt.Sprintf("audit-%d", audit), func(b *testing.B) { benchReconcileCluster(b, audit) })
	}
}

func benchReconcileCluster(b *testing.B, audit int) {
	const nodes, n = 10, 5000
	d, _ := startDev(b, agent.DevOptions{Nodes: nodes, Hooks: agent.Hooks{NoLoops: true},
		Configure: func(c *config.Config) { c.ReconcileAuditPerCycle = audit }})
	ctx := context.Background()
	names := d.Sim.Nodes()
	for i := 0; i < n; i++ {
		id, node := 1000+i, names[i%nodes]
		sbID := fmt.Sprintf("sbx-%012d", id)
		if err := d.Sim.AddVM(node, id, map[string]string{"name": fmt.Sprintf("r%d", i), "tags": "agentlab", "memory": "512",
			"description": "agentlab-sandbox-id: " + sbID}, false); err != nil {
			b.Fatal(err)
		}
		sb := &store.Sandbox{Sandbox: api.Sandbox{ID: sbID, Name: fmt.Sprintf("r%d", i), Profile: "yolo-ephemeral",
			State: api.StateStopped, VMID: id, Node: node}, Request: "{}"}
		if err := d.Agent.Store.CreateSandbox(ctx, sb, store.Event{}); err != nil {
			b.Fatal(err)
		}
	}
	// The first cycle proves every row; measure the steady state after it.
	if _, err := d.Manager.Reconcile(ctx, false); err != nil {
		b.Fatal(err)
	}
	before, byPathBefore := d.Sim.RequestCount()
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		rep, err := d.Manager.Reconcile(ctx, false)
		lat = append(lat, time.Since(start))
		if err != nil || rep.Checked != n || len(rep.Actions) != 0 {
			b.Fatalf("%v checked=%d actions=%d", err, rep.Checked, len(rep.Actions))
		}
	}
	b.StopTimer()
	after, byPath := d.Sim.RequestCount()
	for path, c := range byPath {
		if c != byPathBefore[path] {
			b.Logf("%s: %d per cycle", path, (c-byPathBefore[path])/int64(b.N))
		}
	}
	b.ReportMetric(float64(after-before)/float64(b.N), "pve-req/cycle")
	b.ReportMetric(float64(percentile(lat, 0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
}
