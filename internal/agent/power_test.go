package agent_test

import (
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/config"
)

// TestSandboxHibernate: hibernate frees the VM (vmstate volume, lock
// suspended, not running), the lease clock stands still while it sleeps,
// start resumes it at its address with the lease moved on by the pause,
// stop and destroy of a hibernated sandbox work, and exec and snapshots are
// refused while it sleeps.
func TestSandboxHibernate(t *testing.T) {
	d, c, clk, _ := startLoopsDev(t)
	ctx := tctx(t)
	sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "sleepy", Profile: "yolo-ephemeral", TTL: "2h"})
	if err != nil {
		t.Fatal(err)
	}
	if sb, err = c.WaitSandbox(ctx, sb.Name, 10*time.Millisecond); err != nil || sb.State != api.StateRunning {
		t.Fatalf("%+v %v", sb, err)
	}
	lease := *sb.LeaseExpiresAt
	got, err := c.Hibernate(ctx, "sleepy")
	if err != nil || got.State != api.StateSuspended || got.PausedAt == nil || got.IP != "" {
		t.Fatalf("hibernate: %+v %v", got, err)
	}
	vm := vms(d)[sb.VMID]
	vmstate := vm.Config["vmstate"]
	if vm.Running || vm.Config["lock"] != "suspended" || !strings.HasPrefix(vmstate, strings.SplitN(vm.Config["scsi0"], ":", 2)[0]+":") || !volumeExists(d, vmstate) {
		t.Fatalf("hibernated VM: running %v config %v", vm.Running, vm.Config)
	}
	if again, err := c.Hibernate(ctx, "sleepy"); err != nil || again.State != api.StateSuspended {
		t.Fatalf("hibernate twice: %+v %v", again, err)
	}
	_, err = c.Exec(ctx, "sleepy", api.ExecRequest{Command: []string{"true"}})
	wantCode(t, err, 409, api.CodeInvalidState)
	_, err = c.CreateSandboxSnapshot(ctx, "sleepy", api.CreateSandboxSnapshotRequest{Name: "s1"})
	wantCode(t, err, 409, api.CodeInvalidState)

	// Three hours asleep: past the lease's wall-clock end, but the clock stood still.
	clk.Add(3 * time.Hour)
	if err := d.Manager.LeaseGC(ctx); err != nil {
		t.Fatal(err)
	}
	if st := state(t, c, "sleepy"); st != api.StateSuspended {
		t.Fatalf("lease expired while hibernated: %s", st)
	}
	if _, err := c.Start(ctx, "sleepy"); err != nil {
		t.Fatal(err)
	}
	got, err = c.WaitSandbox(ctx, "sleepy", 10*time.Millisecond)
	if err != nil || got.State != api.StateRunning || got.IP != sb.IP || got.PausedAt != nil {
		t.Fatalf("resume: %+v %v", got, err)
	}
	if want := lease.Add(3 * time.Hour); got.LeaseExpiresAt == nil || got.LeaseExpiresAt.Sub(want).Abs() > time.Second {
		t.Fatalf("lease after resume: %v, want %v (moved on by the pause)", got.LeaseExpiresAt, want)
	}
	vm = vms(d)[sb.VMID]
	if !vm.Running || vm.Config["lock"] != "" || vm.Config["vmstate"] != "" || volumeExists(d, vmstate) {
		t.Fatalf("resumed VM: running %v config %v", vm.Running, vm.Config)
	}
	if !strings.Contains(lastEvent(t, c, "sleepy").Message, "resumed after 3h0m0s hibernated") {
		t.Fatalf("event: %+v", lastEvent(t, c, "sleepy"))
	}

	// Stop of a hibernated sandbox resumes, then shuts it down.
	if _, err := c.Hibernate(ctx, "sleepy"); err != nil {
		t.Fatal(err)
	}
	if got, err = c.Stop(ctx, "sleepy"); err != nil || got.State != api.StateStopped || got.PausedAt != nil {
		t.Fatalf("stop while hibernated: %+v %v", got, err)
	}
	if vm = vms(d)[sb.VMID]; vm.Running || vm.Config["vmstate"] != "" {
		t.Fatalf("stopped VM: %v", vm.Config)
	}
	_, err = c.Hibernate(ctx, "sleepy")
	wantCode(t, err, 409, api.CodeInvalidState)

	// Destroy of a hibernated sandbox purges the VM with its state.
	if _, err := c.Start(ctx, "sleepy"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitSandbox(ctx, "sleepy", 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Hibernate(ctx, "sleepy"); err != nil {
		t.Fatal(err)
	}
	vmstate = vms(d)[sb.VMID].Config["vmstate"]
	if got, err = c.Destroy(ctx, "sleepy", false); err != nil || got.State != api.StateDestroyed {
		t.Fatalf("destroy while hibernated: %+v %v", got, err)
	}
	if _, left := vms(d)[sb.VMID]; left || volumeExists(d, vmstate) {
		t.Fatalf("VM or vmstate left after destroy")
	}
}

// TestLeaseCountsWhilePaused: with lease_counts_while_paused the lease of a
// hibernated sandbox runs on and expires it.
func TestLeaseCountsWhilePaused(t *testing.T) {
	clk := &fakeClock{t: time.Now().UTC().Truncate(time.Second)}
	d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{Now: clk.Now, Conntrack: (&fakeConntrack{}).list, NoLoops: true},
		Configure: func(cfg *config.Config) { cfg.LeaseCountsWhilePaused = true }})
	ctx := tctx(t)
	sb, _ := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "counted", Profile: "yolo-ephemeral", TTL: "1h"})
	if sb, err := c.WaitSandbox(ctx, sb.Name, 10*time.Millisecond); err != nil || sb.State != api.StateRunning {
		t.Fatalf("%+v %v", sb, err)
	}
	if _, err := c.Hibernate(ctx, "counted"); err != nil {
		t.Fatal(err)
	}
	clk.Add(61 * time.Minute)
	if err := d.Manager.LeaseGC(ctx); err != nil {
		t.Fatal(err)
	}
	if st := state(t, c, "counted"); st != api.StateDestroyed {
		t.Fatalf("hibernated sandbox past its lease: %s", st)
	}
}

// TestSandboxResize: cores and memory of a running sandbox are pending until
// the next start, the disk grows at once and never shrinks, the config is
// read back; a stopped sandbox takes everything at once.
func TestSandboxResize(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	sb := create(t, c, "big")
	res, err := c.Resize(ctx, "big", api.ResizeRequest{Cores: 8, MemoryMB: 8192, DiskGB: 60})
	if err != nil || res.Cores != 8 || res.MemoryMB != 8192 || res.DiskGB != 60 || strings.Join(res.Pending, ",") != "cores,memory_mb" {
		t.Fatalf("resize running: %+v %v", res, err)
	}
	if cfg := vms(d)[sb.VMID].Config; cfg["cores"] != "8" || cfg["memory"] != "8192" || !strings.Contains(cfg["scsi0"], "size=60G") {
		t.Fatalf("config: %v", cfg)
	}
	_, err = c.Resize(ctx, "big", api.ResizeRequest{DiskGB: 20})
	wantCode(t, err, 400, api.CodeInvalidField)
	if !strings.Contains(err.Error(), "can only grow") {
		t.Fatalf("shrink: %v", err)
	}
	for _, bad := range []api.ResizeRequest{{}, {Cores: -1}, {Cores: 1000}, {MemoryMB: 100}, {DiskGB: -5}} {
		_, err := c.Resize(ctx, "big", bad)
		wantCode(t, err, 400, api.CodeInvalidField)
	}
	if _, err := c.Stop(ctx, "big"); err != nil {
		t.Fatal(err)
	}
	res, err = c.Resize(ctx, "big", api.ResizeRequest{Cores: 2})
	if err != nil || res.Cores != 2 || len(res.Pending) != 0 || res.Sandbox.State != api.StateStopped {
		t.Fatalf("resize stopped: %+v %v", res, err)
	}
	if !hasKind(t, c, "big", "sandbox.resized") {
		t.Fatal("no sandbox.resized event")
	}
}
