package soak

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// TestPoolClaimSurvivesKill9: agentd serve (a process) gets SIGKILL while a
// claim is half done: the member's VM renamed, the guest's hostname written
// and its answer never delivered. The restarted agentd finishes the claim on
// the same VM, the pool refills, and the invariants hold on the simulator's
// ground truth: no VM both pooled and claimed, none lost, none leaked.
func TestPoolClaimSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: not in -short")
	}
	bin := agentdBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "poolk9") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	env, err := StartEnv(ctx, dir, EnvOptions{Bin: bin, Speed: 20, ProvisioningTimeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	c := env.Client
	// What the simulator holds before agentd made anything (the template).
	st, err := env.Sim.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	two := 2
	waitReady := func() {
		t.Helper()
		for {
			p, err := c.Pool(ctx, "yolo-ephemeral")
			if err == nil && p.Ready == 2 && p.Building == 0 {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("pool never ready: %+v %v", p, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if _, err := c.SetPool(ctx, "yolo-ephemeral", api.SetPoolRequest{MinReady: &two, Max: &two}); err != nil {
		t.Fatal(err)
	}
	waitReady()
	ep := endpoints["exec"]
	if err := env.Sim.Do(ctx, "lose-reply", Hook{Method: ep.method, Path: ep.path, Times: 1, Hang: true}, nil); err != nil {
		t.Fatal(err)
	}
	sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "k9", Profile: "yolo-ephemeral"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		cur, err := c.Sandbox(ctx, sb.ID)
		if err == nil && cur.Step == "claim" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the claim never reached its step: %+v %v", cur, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The hostname request is in flight (its reply withheld): kill now.
	time.Sleep(100 * time.Millisecond)
	if err := env.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := env.StartServe(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := c.WaitSandbox(ctx, sb.ID, 20*time.Millisecond)
	if err != nil || got.State != api.StateRunning || got.VMID != sb.VMID || got.Name != "k9" {
		t.Fatalf("after the restart: %+v %v (claimed VM %d)", got, err, sb.VMID)
	}
	waitReady()
	waitQuiet(ctx, env, 20*time.Second)
	w, err := Gather(ctx, env, st.VMs)
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	for _, v := range append(append(append(CheckI1(w), CheckI2(w)...), CheckI8(w)...), CheckI9(w)...) {
		bad = append(bad, v.String())
	}
	if len(bad) > 0 {
		t.Fatalf("invariants after kill -9 mid-claim:\n%s", strings.Join(bad, "\n"))
	}
}
