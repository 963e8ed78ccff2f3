package soak

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// TestMain removes the agentd binary the tests share.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// agentdBin builds agentd once for every test of the package.
func agentdBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "soakbin"); binErr == nil {
			binPath, binErr = BuildAgentd(context.Background(), binDir)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// TestSoakBounded is the soak make test runs: a few fixed seeds, a few
// hundred operations in all, each run with a kill -9. It asserts that no
// invariant is violated; the full report is in the log either way.
func TestSoakBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: not in -short")
	}
	bin := agentdBin(t)
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			rep, err := Run(ctx, Config{Seed: seed, Ops: 100, Bin: bin, Kills: 1,
				ProvisioningTimeout: 15 * time.Second, OpTimeout: 30 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			rep.Print(&out)
			t.Log("\n" + out.String())
			if len(rep.Records) != 100 {
				t.Errorf("%d operations ran, want 100", len(rep.Records))
			}
			if !rep.OK() {
				var lines []string
				for _, v := range rep.Violations {
					lines = append(lines, v.String())
				}
				t.Errorf("seed %d: %d invariant violation(s):\n%s", seed, len(rep.Violations), strings.Join(lines, "\n"))
			}
		})
	}
}

// TestSoakCluster is the soak on a simulated three-node cluster with node
// outages: no invariant violated, and the outages were probed (I10 checked
// something).
func TestSoakCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: not in -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{Seed: 41, Ops: 150, Bin: agentdBin(t), Kills: 1, Nodes: 3,
		ProvisioningTimeout: 15 * time.Second, OpTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep.Print(&out)
	t.Log("\n" + out.String())
	made := 0
	for _, p := range rep.Probes {
		if p.Err == "" {
			made++
		}
	}
	if rep.Faults[FaultNodeOffline] == 0 || made == 0 {
		t.Errorf("%d node outages, %d probed: the run tested no node failure", rep.Faults[FaultNodeOffline], made)
	}
	for _, v := range rep.Violations {
		t.Error(v)
	}
}

func TestPlanIsSeeded(t *testing.T) {
	a := NewPlan(PlanOptions{Seed: 7, Ops: 500, Workers: 8})
	b := NewPlan(PlanOptions{Seed: 7, Ops: 500, Workers: 8})
	c := NewPlan(PlanOptions{Seed: 8, Ops: 500, Workers: 8})
	same := func(x, y *Plan) bool {
		for w := range x.Workers {
			for i := range x.Workers[w] {
				sx, sy := x.Workers[w][i], y.Workers[w][i]
				if sx.Op != sy.Op || sx.Pause != sy.Pause || (sx.Fault == nil) != (sy.Fault == nil) ||
					(sx.Fault != nil && *sx.Fault != *sy.Fault) {
					return false
				}
			}
		}
		return len(x.Kills) == len(y.Kills) && (len(x.Kills) == 0 || x.Kills[0] == y.Kills[0])
	}
	if !same(a, b) {
		t.Fatal("the same seed drew two different plans")
	}
	if same(a, c) {
		t.Fatal("seeds 7 and 8 drew the same plan")
	}
	n, faults, kinds := 0, 0, map[string]bool{}
	for _, steps := range a.Workers {
		for _, st := range steps {
			n++
			kinds[st.Op.Kind] = true
			if st.Fault != nil {
				faults++
			}
		}
	}
	if n != 500 || faults < 25 || faults > 80 || len(kinds) != len(opWeights) || len(a.Kills) != 1 {
		t.Fatalf("plan: %d ops, %d faults, %d kinds, %d kills", n, faults, len(kinds), len(a.Kills))
	}
}

func TestModel(t *testing.T) {
	m := NewModel()
	m.Created("ws-1", "w0")
	m.Wrote("ws-1", "w0", "/work/f0", "a")
	m.Snapshotted("ws-1", "w0", "snap0", Done)
	m.Wrote("ws-1", "w0", "/work/f0", "b")
	m.Wrote("ws-1", "w0", "/work/f1", "c")
	m.Restored("ws-1", "w0", "snap0", Unknown) // may or may not have rolled back
	m.Forked("ws-1", "w0", "snap0", "ws-2", "w1")
	cases := []struct {
		name  string
		files map[string]map[string]string
		bad   int
	}{
		{"rolled back", map[string]map[string]string{"ws-1": {"/work/f0": "a"}, "ws-2": {"/work/f0": "a"}}, 0},
		{"not rolled back", map[string]map[string]string{"ws-1": {"/work/f0": "b", "/work/f1": "c"}, "ws-2": {"/work/f0": "a"}}, 0},
		{"lost write", map[string]map[string]string{"ws-1": {}, "ws-2": {"/work/f0": "a"}}, 1},
		{"fork saw a later write", map[string]map[string]string{"ws-1": {"/work/f0": "a"}, "ws-2": {"/work/f0": "a", "/work/f1": "c"}}, 1},
		{"workspace lost", map[string]map[string]string{"ws-2": {"/work/f0": "a"}}, 1},
	}
	for _, c := range cases {
		live := map[string]WorkspaceFiles{}
		for id, f := range c.files {
			live[id] = WorkspaceFiles{ID: id, Files: f}
		}
		if got := m.Check(live); len(got) != c.bad {
			t.Errorf("%s: %d violations %v, want %d", c.name, len(got), got, c.bad)
		}
	}
	m.Deleted("ws-1", "w0", Unknown)
	if got := m.Check(map[string]WorkspaceFiles{"ws-2": {ID: "ws-2", Files: map[string]string{"/work/f0": "a"}}}); len(got) != 0 {
		t.Errorf("a workspace whose delete may have happened may be gone: %v", got)
	}
}
