// Command soak runs AgentLab's seeded chaos soak (internal/soak) and prints
// its report; it exits 1 when any invariant is violated. make soak runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/soak"
)

func main() {
	var (
		seeds   = flag.String("seed", "1", "seed, or comma-separated seeds (one run each)")
		ops     = flag.Int("ops", 1000, "operations per run")
		workers = flag.Int("workers", 8, "concurrent workers")
		kills   = flag.Int("kills", 0, "kill -9 of agentd per run (0: 3 per 1000 operations; -1: none)")
		rate    = flag.Float64("fault-rate", 0.1, "share of operations preceded by an injected fault")
		bin     = flag.String("agentd", "", "agentd binary (default: go build ./agentd)")
		speed   = flag.Float64("speed", 20, "agentd sim --speed")
		prov    = flag.Duration("provisioning-timeout", 20*time.Second, "agentd provisioning_timeout")
		opTO    = flag.Duration("op-timeout", 45*time.Second, "an answer later than this is a hang (I7)")
		keep    = flag.Bool("keep", false, "keep each run's directory (agentd.log, database)")
		verbose = flag.Bool("v", false, "log every operation")
		lockSh  = flag.Float64("lock-share", 0, "share of faults that are vm-lock (0: the usual mix, 1 in 10)")
		nodes   = flag.Int("nodes", 1, "simulated cluster nodes (agentd sim --nodes); more than 1 adds node-offline faults and creates pinned to nodes")
		lockAt  = flag.String("lock-at", "", "VMs vm-lock faults aim at: sandbox, holder or sandbox,holder (default: any of agentd's)")
	)
	flag.Parse()
	for _, k := range strings.Split(*lockAt, ",") {
		if k := strings.TrimSpace(k); k != "" && k != "sandbox" && k != "holder" {
			fatal(fmt.Errorf("-lock-at %q: %q is not a VM kind; use sandbox, holder or sandbox,holder", *lockAt, k))
		}
	}
	if *nodes < 1 {
		fatal(fmt.Errorf("-nodes %d: at least 1", *nodes))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *bin == "" {
		dir, err := os.MkdirTemp("", "soakbin")
		if err != nil {
			fatal(err)
		}
		defer os.RemoveAll(dir)
		if *bin, err = soak.BuildAgentd(ctx, dir); err != nil {
			fatal(err)
		}
	}
	failed := 0
	start := time.Now()
	total := 0
	for _, s := range strings.Split(*seeds, ",") {
		seed, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
		if err != nil {
			fatal(fmt.Errorf("-seed %q: %w", s, err))
		}
		cfg := soak.Config{Seed: seed, Ops: *ops, Workers: *workers, Kills: *kills, FaultRate: *rate, Bin: *bin,
			Speed: *speed, ProvisioningTimeout: *prov, OpTimeout: *opTO, Keep: *keep, LockShare: *lockSh, LockAt: *lockAt, Nodes: *nodes}
		if *verbose {
			cfg.OpLog = os.Stderr
		}
		rep, err := soak.Run(ctx, cfg)
		if err != nil {
			fatal(fmt.Errorf("seed %d: %w", seed, err))
		}
		rep.Print(os.Stdout)
		fmt.Println()
		total += len(rep.Records)
		if !rep.OK() {
			failed++
		}
	}
	fmt.Printf("%d operations over %d seed(s) in %s; %d run(s) with violations\n", total,
		len(strings.Split(*seeds, ",")), time.Since(start).Round(time.Second), failed)
	if failed > 0 {
		os.Exit(1)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "soak:", err)
	os.Exit(2)
}
