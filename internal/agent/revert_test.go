package agent_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// withWorkspace creates workspace ws and a RUNNING sandbox name using it.
func withWorkspace(t *testing.T, c *client.Client, name string) *api.Sandbox {
	t.Helper()
	ctx := tctx(t)
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "ws", Size: "5G"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: "yolo-workspace", Workspace: "ws"}); err != nil {
		t.Fatal(err)
	}
	sb, err := c.WaitSandbox(ctx, name, 10*time.Millisecond)
	if err != nil || sb.State != api.StateRunning {
		t.Fatalf("create: %+v %v", sb, err)
	}
	return sb
}

func countKind(t *testing.T, c *client.Client, ref, kind string) int {
	t.Helper()
	l, err := c.Events(tctx(t), ref, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range l.Events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// TestCleanSnapshotAndRevert: provisioning takes "clean" before the
// workspace is plugged and before the first boot (the snapshot's config has
// no workspace disk, the workspace volume carries no snapshot); revert of a
// running sandbox discards the root disk's changes, keeps the workspace's,
// plugs the workspace in again, boots back to RUNNING at the same address
// with a fresh bootstrap; a stopped sandbox stays STOPPED and gets its
// bootstrap at the next start.
func TestCleanSnapshotAndRevert(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	sb := withWorkspace(t, c, "rev")
	vm := vms(d)[sb.VMID]
	if len(vm.Snapshots) != 1 || vm.Snapshots[0] != "clean" {
		t.Fatalf("snapshots after provisioning: %v", vm.Snapshots)
	}
	wsVol := holderVol(t, d, c, "ws")
	if v := d.Sim.Dump().Volumes[wsVol]; len(v.Snapshots) != 0 {
		t.Fatalf("the clean snapshot reached the workspace volume: %+v", v)
	}
	if volOf(vm.Config["scsi1"]) != wsVol {
		t.Fatalf("workspace not attached after the clean snapshot: %v", vm.Config)
	}
	if n := countKind(t, c, "rev", "bootstrap.written"); n != 1 {
		t.Fatalf("bootstrap written %d times at create", n)
	}
	root := volOf(vm.Config["scsi0"])
	write(t, d, root, "/etc/dirty", "yes")
	write(t, d, wsVol, "/work/result.txt", "keep me")

	pinned, err := c.HostKey(ctx, "rev")
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Revert(ctx, "rev", api.RevertRequest{})
	if err != nil || got.State != api.StateBooting {
		t.Fatalf("revert: %+v %v", got, err)
	}
	if got, err = c.WaitSandbox(ctx, "rev", 10*time.Millisecond); err != nil || got.State != api.StateRunning || got.IP != sb.IP {
		t.Fatalf("after revert: %+v %v (was %s)", got, err, sb.IP)
	}
	vm = vms(d)[sb.VMID]
	if read(t, d, root, "/etc/dirty") != "<missing>" {
		t.Fatal("revert kept the root disk's changes")
	}
	if read(t, d, wsVol, "/work/result.txt") != "keep me" {
		t.Fatal("revert lost the workspace's data")
	}
	if volOf(vm.Config["scsi1"]) != wsVol || !vm.Running {
		t.Fatalf("after revert the VM is %v with config %v", vm.Running, vm.Config)
	}
	for k, v := range vm.Config {
		if strings.HasPrefix(k, "unused") {
			t.Fatalf("revert left %s = %s", k, v)
		}
	}
	if w, err := d.Agent.Store.LookupWorkspace(ctx, "ws"); err != nil || w.AttachedSandbox != sb.ID || w.Step != "" {
		t.Fatalf("workspace row after revert: %+v %v", w, err)
	}
	if v := d.Sim.Dump().Volumes[wsVol]; len(v.Snapshots) != 0 {
		t.Fatalf("revert snapshotted the workspace: %+v", v)
	}
	if n := countKind(t, c, "rev", "bootstrap.written"); n != 2 || !hasKind(t, c, "rev", "sandbox.reverted") {
		t.Fatalf("after a revert: %d bootstraps, reverted event %v", n, hasKind(t, c, "rev", "sandbox.reverted"))
	}
	// A real guest reverted to before its first boot makes new SSH host keys:
	// the old pin is gone and the new key is pinned, not refused.
	regenerated := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEbYDuLO4ZG1lE8Vf0vRxcC5e3RTZ0p2WSaeH1oV0wy3 root@rev\n"
	d.Sim.SetGuestFile(sb.VMID, pvesim.HostKeyPath, []byte(regenerated))
	hk, err := c.HostKey(ctx, "rev")
	if err != nil || hk.Fingerprint == pinned.Fingerprint || !hk.Verified || hk.Key != strings.Join(strings.Fields(regenerated)[:2], " ") {
		t.Fatalf("host key after revert: %+v %v (pinned before: %s)", hk, err, pinned.Fingerprint)
	}
	if !hasKind(t, c, "rev", "sandbox.host_key_forgotten") {
		t.Fatal("no sandbox.host_key_forgotten event")
	}
	// The clean snapshot is still there: revert again, from STOPPED.
	if _, err := c.Stop(ctx, "rev"); err != nil {
		t.Fatal(err)
	}
	write(t, d, root, "/etc/dirty", "again")
	if got, err = c.Revert(ctx, "rev", api.RevertRequest{}); err != nil || got.State != api.StateStopped {
		t.Fatalf("revert stopped: %+v %v", got, err)
	}
	if read(t, d, root, "/etc/dirty") != "<missing>" || vms(d)[sb.VMID].Running || volOf(vms(d)[sb.VMID].Config["scsi1"]) != wsVol {
		t.Fatalf("stopped revert: %+v", vms(d)[sb.VMID])
	}
	if _, err := c.Start(ctx, "rev"); err != nil {
		t.Fatal(err)
	}
	if got, err = c.WaitSandbox(ctx, "rev", 10*time.Millisecond); err != nil || got.State != api.StateRunning {
		t.Fatalf("start after revert: %+v %v", got, err)
	}
	if n := countKind(t, c, "rev", "bootstrap.written"); n != 3 {
		t.Fatalf("the start after a stopped revert wrote %d bootstraps in all, want 3", n)
	}
	// A hibernated sandbox is refused (resume or stop it first).
	if _, err := c.Hibernate(ctx, "rev"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Revert(ctx, "rev", api.RevertRequest{})
	wantCode(t, err, 409, api.CodeInvalidState)
}

// TestRevertStorages: on every storage type of the simulator. LVM-thin and
// qcow2 on dir roll back past newer snapshots and keep them; ZFS refuses,
// naming the newer ones, and with delete_newer deletes them first; raw on
// dir cannot snapshot, so it has no clean snapshot and revert says why.
// A profile with behavior.clean_snapshot: false gets the same 404, naming
// the key.
func TestRevertStorages(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	var prof strings.Builder
	for _, st := range []string{"local-lvm", "local-zfs", "local", "local-raw"} {
		prof.WriteString("---\nname: on-" + st + "\ntemplate_vmid: 9000\nstorage:\n  clone: full\n  storage: " + st + "\n  root_size_gb: 20\n")
	}
	prof.WriteString("---\nname: no-clean\ntemplate_vmid: 9000\nbehavior:\n  clean_snapshot: false\n")
	if err := os.WriteFile(filepath.Join(d.Config.ProfilesDir, "storages.yaml"), []byte(prof.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	c = tcpClient(t, d, d.Info.Token)
	for _, st := range []string{"local-lvm", "local-zfs", "local", "local-raw", "no-clean"} {
		t.Run(st, func(t *testing.T) {
			name := "r-" + strings.TrimPrefix(st, "local-")
			profileName := "on-" + st
			if st == "no-clean" {
				profileName = st
			}
			sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: profileName})
			if err != nil {
				t.Fatal(err)
			}
			if sb, err = c.WaitSandbox(ctx, sb.Name, 10*time.Millisecond); err != nil || sb.State != api.StateRunning {
				t.Fatalf("%+v %v", sb, err)
			}
			root := volOf(vms(d)[sb.VMID].Config["scsi0"])
			write(t, d, root, "/etc/dirty", "yes")
			switch st {
			case "local-raw", "no-clean":
				_, err := c.Revert(ctx, name, api.RevertRequest{})
				wantCode(t, err, 404, api.CodeSnapshotNotFound)
				why := "cannot snapshot"
				if st == "no-clean" {
					why = "behavior.clean_snapshot: false"
				}
				if !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), "re-create") {
					t.Fatalf("no-clean refusal does not say why and what to do: %v", err)
				}
				if read(t, d, root, "/etc/dirty") != "yes" || !vms(d)[sb.VMID].Running {
					t.Fatal("a refused revert changed the sandbox")
				}
				return
			}
			if _, err := c.CreateSandboxSnapshot(ctx, name, api.CreateSandboxSnapshotRequest{Name: "later"}); err != nil {
				t.Fatal(err)
			}
			if st == "local-zfs" {
				_, err := c.Revert(ctx, name, api.RevertRequest{})
				wantCode(t, err, 409, api.CodeUnsupported)
				if !strings.Contains(err.Error(), "ZFS") || !strings.Contains(err.Error(), "later") || !strings.Contains(err.Error(), "--delete-newer") {
					t.Fatalf("ZFS refusal: %v", err)
				}
				if cur, _ := c.Sandbox(ctx, name); cur.State != api.StateRunning || read(t, d, root, "/etc/dirty") != "yes" {
					t.Fatalf("a refused revert changed the sandbox: %+v", cur)
				}
			}
			if _, err := c.Revert(ctx, name, api.RevertRequest{DeleteNewer: st == "local-zfs"}); err != nil {
				t.Fatal(err)
			}
			if got, err := c.WaitSandbox(ctx, name, 10*time.Millisecond); err != nil || got.State != api.StateRunning {
				t.Fatalf("after revert: %+v %v", got, err)
			}
			if read(t, d, root, "/etc/dirty") != "<missing>" {
				t.Fatal("revert kept the root disk's changes")
			}
			want := "clean,later"
			if st == "local-zfs" {
				want = "clean"
			}
			if snaps := strings.Join(vms(d)[sb.VMID].Snapshots, ","); snaps != want {
				t.Fatalf("snapshots after revert on %s: %s, want %s", st, snaps, want)
			}
		})
	}
}

// TestRevertInterruptedBetweenDetachAndReattach: agentd dies while the
// rollback task runs, after the workspace was unplugged and before it is
// plugged again. The claim was journaled as an attach, so the row never
// claims a detached workspace for good: reconcile's attachment repair
// plugs it back into the reverted VM, and the sandbox starts with it. A
// rollback task that fails plugs it back at once and reports the error.
func TestRevertInterruptedBetweenDetachAndReattach(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	sb := withWorkspace(t, c, "crash")
	wsVol := holderVol(t, d, c, "ws")
	root := volOf(vms(d)[sb.VMID].Config["scsi0"])
	write(t, d, root, "/etc/dirty", "yes")
	write(t, d, wsVol, "/work/result.txt", "keep me")

	// A failed rollback task: the workspace is plugged back at once.
	d.Sim.FailTask("qmrollback", strconv.Itoa(sb.VMID), "injected rollback failure")
	_, err := c.Revert(ctx, "crash", api.RevertRequest{})
	if err == nil || !strings.Contains(err.Error(), "injected rollback failure") {
		t.Fatalf("revert with a failing rollback: %v", err)
	}
	d.Sim.ClearFaults()
	if volOf(vms(d)[sb.VMID].Config["scsi1"]) != wsVol || read(t, d, root, "/etc/dirty") != "yes" {
		t.Fatalf("after a failed rollback: %v", vms(d)[sb.VMID].Config)
	}
	// It was running before the failed revert: it runs again.
	if cur, err := c.WaitSandbox(ctx, "crash", 10*time.Millisecond); err != nil || cur.State != api.StateRunning {
		t.Fatalf("after a failed revert: %+v %v", cur, err)
	}
	if w, _ := d.Agent.Store.LookupWorkspace(ctx, "ws"); w.Step != "" || w.AttachedSandbox != sb.ID {
		t.Fatalf("workspace row after a failed rollback: %+v", w)
	}

	// The re-attach fails after the rollback (its config write refused, as
	// when agentd dies there): armed while the rollback task runs.
	d.Sim.SlowTask("qmrollback", strconv.Itoa(sb.VMID), time.Second)
	done := make(chan error, 1)
	go func() { _, err := c.Revert(ctx, "crash", api.RevertRequest{}); done <- err }()
	deadline := time.Now().Add(20 * time.Second)
	for vms(d)[sb.VMID].Config["lock"] != "rollback" {
		if time.Now().After(deadline) {
			t.Fatalf("the rollback never started: %v", vms(d)[sb.VMID].Config)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := vms(d)[sb.VMID].Config["scsi1"]; got != "" {
		t.Fatalf("the workspace is still plugged during the rollback: %s", got)
	}
	if w, _ := d.Agent.Store.LookupWorkspace(ctx, "ws"); w.Step != "attach" || w.AttachedSandbox != sb.ID {
		t.Fatalf("journal during the rollback: %+v", w)
	}
	if err := d.Sim.FailEndpoint("POST", fmt.Sprintf("/qemu/%d/config$", sb.VMID), 500, "injected: agentd died"); err != nil {
		t.Fatal(err)
	}
	err = <-done
	if err == nil || !strings.Contains(err.Error(), "reconcile retries it") {
		t.Fatalf("revert whose re-attach fails: %v", err)
	}
	d.Sim.ClearFaults()
	if got := vms(d)[sb.VMID].Config["scsi1"]; got != "" || read(t, d, root, "/etc/dirty") != "<missing>" {
		t.Fatalf("after the rollback without re-attach: %v", vms(d)[sb.VMID].Config)
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	c = tcpClient(t, d, d.Info.Token)
	rep, err := c.Reconcile(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	var acts []string
	for _, a := range rep.Actions {
		acts = append(acts, a.Sandbox+":"+a.Action)
	}
	if !strings.Contains(strings.Join(acts, ","), "crash:workspace_attached") {
		t.Fatalf("reconcile actions %v", acts)
	}
	vm := vms(d)[sb.VMID]
	if volOf(vm.Config["scsi1"]) != wsVol || read(t, d, root, "/etc/dirty") != "<missing>" || read(t, d, wsVol, "/work/result.txt") != "keep me" {
		t.Fatalf("after the repair: %v", vm.Config)
	}
	if w, _ := d.Agent.Store.LookupWorkspace(ctx, "ws"); w.Step != "" || w.AttachedSandbox != sb.ID {
		t.Fatalf("workspace row after the repair: %+v", w)
	}
	cur, err := c.Sandbox(ctx, "crash")
	if err != nil || cur.State != api.StateStopped {
		t.Fatalf("sandbox after the crash: %+v %v", cur, err)
	}
	if _, err := c.Start(ctx, "crash"); err != nil {
		t.Fatal(err)
	}
	if cur, err = c.WaitSandbox(ctx, "crash", 10*time.Millisecond); err != nil || cur.State != api.StateRunning || cur.Workspace != "ws" {
		t.Fatalf("start after the repair: %+v %v", cur, err)
	}
}
