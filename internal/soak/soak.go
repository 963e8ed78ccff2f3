// Package soak is AgentLab's seeded chaos soak: agentd sim and agentd serve
// as separate processes, random operations from several workers over a small
// pool of sandboxes, workspaces, sessions and snapshots, Proxmox faults
// injected through the simulator's hooks, kill -9 of agentd at random points,
// and afterwards a check of invariants I1..I9 (issues #13, #19) against the
// simulator's ground truth. The seed fixes the whole plan: operations, their
// arguments, faults and kill points (not the interleaving of the workers).
package soak

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// Config is one soak run.
type Config struct {
	Seed      uint64
	Ops       int
	Workers   int     // default 8
	Kills     int     // kill -9 count; 0: 3 per 1000 operations (at least 1); <0: none
	FaultRate float64 // default 0.1
	Bin       string  // agentd binary; built into the run directory when empty
	// Dir is where the run directory is made (default os.TempDir()); keep it
	// short, the agent's Unix socket lives there.
	Dir                 string
	Keep                bool          // keep the run directory (logs, database)
	Speed               float64       // agentd sim --speed; default 20
	ProvisioningTimeout time.Duration // default 20s
	OpTimeout           time.Duration // an answer later than this is a hang (I7); default 45s
	OpLog               io.Writer     // one line per operation, when set
	// LockShare, when > 0, is the share of faults that are vm-lock.
	LockShare float64
	// LockAt narrows the VMs vm-lock faults aim at: "" any VM of agentd's,
	// "sandbox" sandbox VMs (pool members included), "holder" workspace
	// holders, "sandbox,holder" both but no other. Locks on the VMs an
	// operation is about to touch find more lock handling than locks on
	// whatever VM the pick lands on.
	LockAt string
	// Nodes > 1 runs on a simulated cluster of that many nodes, with
	// node-offline faults and creates pinned to nodes.
	Nodes int
}

// Report is what a run found.
type Report struct {
	Config        Config
	Dir           string
	Wall          time.Duration
	Settle        time.Duration // from the last operation to the check
	Records       []Record
	Faults        map[string]int
	FaultsSkipped map[string]int
	Kills         []time.Duration
	Probes        []NodeProbe // checks made while a node was offline
	// PoolClaims is how many creates took a warm-pool member (pool.set ops).
	PoolClaims    int64
	Violations    []Violation
	HarnessErrors []string
}

// OK reports whether the run found no violation.
func (r *Report) OK() bool { return len(r.Violations) == 0 }

// Run executes one seeded soak.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.ProvisioningTimeout <= 0 {
		cfg.ProvisioningTimeout = 20 * time.Second
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = 45 * time.Second
	}
	kills := cfg.Kills
	if kills < 0 {
		kills = 0
	} else if kills == 0 {
		kills = max(1, cfg.Ops*3/1000)
	}
	start := time.Now()
	dir, err := os.MkdirTemp(cfg.Dir, "soak")
	if err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	if !cfg.Keep {
		defer os.RemoveAll(dir)
	}
	env, err := StartEnv(ctx, dir, EnvOptions{Bin: cfg.Bin, Speed: cfg.Speed, ProvisioningTimeout: cfg.ProvisioningTimeout, Nodes: cfg.Nodes})
	if err != nil {
		return nil, err
	}
	defer env.Close()
	foreign, err := Plant(ctx, env.Sim)
	if err != nil {
		return nil, err
	}
	if err := preparePool(ctx, env); err != nil {
		return nil, err
	}
	plan := NewPlan(PlanOptions{Seed: cfg.Seed, Ops: cfg.Ops, Workers: cfg.Workers, Kills: kills, FaultRate: cfg.FaultRate, LockShare: cfg.LockShare,
		Nodes: env.Nodes})
	if kills == 0 {
		plan.Kills = nil
	}
	r := &runner{env: env, plan: plan, model: NewModel(), inj: NewInjector(env.Sim, foreign, cfg.LockAt), opTimeout: cfg.OpTimeout, log: cfg.OpLog}
	r.inj.nodes, r.inj.probe = env.Nodes, r.probeNode
	r.inj.workspaces = func(ctx context.Context) ([]api.Workspace, error) { return env.Client.Workspaces(ctx) }
	r.run(ctx)
	quiet := time.Now()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := settle(ctx, env, r); err != nil {
		r.harnessErr("settle: %v", err)
	}
	w, err := Gather(ctx, env, r.inj.Foreign())
	if err != nil {
		if serr := env.SimExited(); serr != nil {
			err = serr
		}
		return nil, fmt.Errorf("read the final state: %w", err)
	}
	w.Records, w.QuietSince, w.OpTimeout = r.sortedRecords(), quiet, cfg.OpTimeout
	w.Probes = r.nodeProbes()
	rep := &Report{Config: cfg, Dir: dir, Records: w.Records, Violations: Check(w, r.model),
		Settle: time.Since(quiet), HarnessErrors: r.errs}
	rep.Faults, rep.FaultsSkipped = r.inj.Counts()
	rep.Kills = r.kills
	rep.Probes = w.Probes
	if pools, err := env.Client.Pools(ctx); err == nil {
		for _, p := range pools {
			rep.PoolClaims += p.Claimed
		}
	}
	rep.Wall = time.Since(start)
	return rep, nil
}

// settle is the end of the run as an operator would do it: clear every
// fault, restart agentd, reconcile, wait until nothing is in flight (at most
// provisioning_timeout and a margin), prune (orphans included) and wait again.
func settle(ctx context.Context, env *Env, r *runner) error {
	if err := r.inj.Clear(ctx); err != nil {
		return err
	}
	if err := env.Stop(); err != nil {
		r.harnessErr("SIGTERM of agentd serve: %v", err)
	}
	if err := env.StartServe(ctx); err != nil {
		return err
	}
	if _, err := env.Client.Reconcile(ctx, false); err != nil {
		r.harnessErr("reconcile: %v", err)
	}
	waitQuiet(ctx, env, env.ProvTime+15*time.Second)
	// Proxmox tasks no row waits for may still run (a holder create whose
	// answer an outage cut off, resumed when its node came back): the VM
	// they make is locked until they end, and the orphan pruning rightly
	// leaves a locked VM alone.
	waitTasks(ctx, env, env.ProvTime)
	if _, err := env.Client.PruneWith(ctx, api.PruneRequest{Orphans: true}); err != nil {
		r.harnessErr("prune --orphans: %v", err)
	}
	if _, err := env.Client.Reconcile(ctx, false); err != nil {
		r.harnessErr("reconcile after prune: %v", err)
	}
	waitQuiet(ctx, env, 5*time.Second)
	return r.inj.Clear(ctx)
}

// waitTasks polls until the simulator runs no task (bounded by limit).
func waitTasks(ctx context.Context, env *Env, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		st, err := env.Sim.State(ctx)
		running := err != nil
		if st != nil {
			for _, t := range st.Tasks {
				running = running || t.Running
			}
		}
		if !running {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitQuiet polls until no sandbox or workspace is in a transitional state.
func waitQuiet(ctx context.Context, env *Env, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		busy := false
		if sbs, err := env.Client.Sandboxes(ctx, url.Values{"pooled": {"true"}}); err != nil {
			busy = true
		} else {
			for _, sb := range sbs {
				// DESTROYING too: a destroy resumed by the last restart
				// is still finishing, and a check then reads its claim on
				// a workspace that the VM it is removing never got (seed
				// 103 -kills 6 reported that as I5).
				busy = busy || sb.State.Settling()
			}
		}
		if wss, err := env.Client.Workspaces(ctx); err != nil {
			busy = true
		} else {
			for _, ws := range wss {
				busy = busy || ws.State != "READY"
			}
		}
		if !busy {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// preparePool gives yolo-ephemeral a ready pool before the first operation,
// so the warm-up's creates claim members while the pool refills (pool.set
// operations resize or empty it later).
func preparePool(ctx context.Context, env *Env) error {
	minReady, max := 3, 4
	if _, err := env.Client.SetPool(ctx, "yolo-ephemeral", api.SetPoolRequest{MinReady: &minReady, Max: &max}); err != nil {
		return fmt.Errorf("set up the warm pool: %w", err)
	}
	deadline := time.Now().Add(env.ProvTime)
	for time.Now().Before(deadline) {
		if p, err := env.Client.Pool(ctx, "yolo-ephemeral"); err == nil && p.Ready >= minReady {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("the warm pool of yolo-ephemeral was not ready within %s", env.ProvTime)
}
