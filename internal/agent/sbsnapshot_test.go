package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// TestSandboxSnapshots: create (disk-only and with memory), list, restore and
// delete on the default (LVM-thin, linked clone) sandbox: a restore discards
// later writes and may go back past newer snapshots, a memory snapshot
// resumes the VM and a disk-only one leaves the sandbox STOPPED; then the
// refusals (bad name, unknown snapshot, duplicate, memory of a stopped VM).
func TestSandboxSnapshots(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	sb := create(t, c, "snappy")
	root := volOf(vms(d)[sb.VMID].Config["scsi0"])
	write(t, d, root, "/etc/state", "v1")
	if _, err := c.CreateSandboxSnapshot(ctx, "snappy", api.CreateSandboxSnapshotRequest{Name: "disk1", Description: "first"}); err != nil {
		t.Fatal(err)
	}
	write(t, d, root, "/etc/state", "v2")
	warm, err := c.CreateSandboxSnapshot(ctx, "snappy", api.CreateSandboxSnapshotRequest{Name: "warm", WithMemory: true})
	if err != nil || !warm.WithMemory || warm.Parent != "disk1" {
		t.Fatalf("memory snapshot: %+v %v", warm, err)
	}
	write(t, d, root, "/etc/state", "v3")
	snaps, err := c.SandboxSnapshots(ctx, "snappy")
	// clean is the one provisioning took before the first boot.
	if err != nil || len(snaps) != 3 || snaps[0].Name != "clean" || snaps[1].Name != "disk1" || snaps[1].WithMemory || snaps[1].Description != "first" || !snaps[2].WithMemory {
		t.Fatalf("list: %+v %v", snaps, err)
	}

	got, err := c.RestoreSandboxSnapshot(ctx, "snappy", "warm")
	if err != nil || got.State != api.StateRunning || got.IP != sb.IP || read(t, d, root, "/etc/state") != "v2" || !vms(d)[sb.VMID].Running {
		t.Fatalf("restore with memory: %+v %v, file %q", got, err, read(t, d, root, "/etc/state"))
	}
	// LVM-thin (the template's storage) rolls back to any snapshot.
	got, err = c.RestoreSandboxSnapshot(ctx, "snappy", "disk1")
	if err != nil || got.State != api.StateStopped || got.IP != "" || read(t, d, root, "/etc/state") != "v1" || vms(d)[sb.VMID].Running {
		t.Fatalf("disk-only restore: %+v %v", got, err)
	}
	if _, err := c.CreateSandboxSnapshot(ctx, "snappy", api.CreateSandboxSnapshotRequest{Name: "hot", WithMemory: true}); !api.IsCode(err, api.CodeInvalidField) {
		t.Fatalf("memory of a stopped sandbox: %v", err)
	}
	// A memory snapshot restored into a STOPPED sandbox boots it through the start path.
	if _, err := c.Start(ctx, "snappy"); err != nil {
		t.Fatal(err)
	}
	if got, err = c.WaitSandbox(ctx, "snappy", 10*time.Millisecond); err != nil || got.State != api.StateRunning {
		t.Fatalf("start: %+v %v", got, err)
	}
	if _, err := c.CreateSandboxSnapshot(ctx, "snappy", api.CreateSandboxSnapshotRequest{Name: "warm2", WithMemory: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stop(ctx, "snappy"); err != nil {
		t.Fatal(err)
	}
	if got, err = c.RestoreSandboxSnapshot(ctx, "snappy", "warm2"); err != nil || got.State != api.StateBooting {
		t.Fatalf("memory restore of a stopped sandbox: %+v %v", got, err)
	}
	if got, err = c.WaitSandbox(ctx, "snappy", 10*time.Millisecond); err != nil || got.State != api.StateRunning || got.IP != sb.IP {
		t.Fatalf("after boot: %+v %v", got, err)
	}
	if !hasKind(t, c, "snappy", "sandbox.snapshot_restored") || !hasKind(t, c, "snappy", "sandbox.snapshot_created") {
		t.Fatal("snapshot events missing")
	}

	_, err = c.CreateSandboxSnapshot(ctx, "snappy", api.CreateSandboxSnapshotRequest{Name: "warm2"})
	wantCode(t, err, 409, api.CodeConflict)
	_, err = c.CreateSandboxSnapshot(ctx, "snappy", api.CreateSandboxSnapshotRequest{Name: "bad name!"})
	wantCode(t, err, 400, api.CodeInvalidField)
	_, err = c.RestoreSandboxSnapshot(ctx, "snappy", "nosuch")
	wantCode(t, err, 404, api.CodeSnapshotNotFound)
	wantCode(t, c.DeleteSandboxSnapshot(ctx, "snappy", "nosuch"), 404, api.CodeSnapshotNotFound)
}

// TestSandboxSnapshotRefusedWithWorkspace: while a workspace is attached a
// VM snapshot would cover the holder's volume, so create and restore are
// refused and nothing is snapshotted; detached, both work, and the
// workspace's own snapshot chain never saw a sandbox snapshot.
func TestSandboxSnapshotRefusedWithWorkspace(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	sb := create(t, c, "holder-test")
	if _, err := c.CreateSandboxSnapshot(ctx, sb.Name, api.CreateSandboxSnapshotRequest{Name: "before"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "ws", Size: "5G"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AttachWorkspace(ctx, "ws", sb.Name); err != nil {
		t.Fatal(err)
	}
	vol := holderVol(t, d, c, "ws")
	_, err := c.CreateSandboxSnapshot(ctx, sb.Name, api.CreateSandboxSnapshotRequest{Name: "after"})
	wantCode(t, err, 409, api.CodeAttached)
	if !strings.Contains(err.Error(), "workspace ws") || !strings.Contains(err.Error(), "agentd workspace detach ws") {
		t.Fatalf("refusal: %v", err)
	}
	_, err = c.RestoreSandboxSnapshot(ctx, sb.Name, "before")
	wantCode(t, err, 409, api.CodeAttached)
	if v := d.Sim.Dump().Volumes[vol]; len(v.Snapshots) != 0 {
		t.Fatalf("workspace volume got snapshots: %+v", v)
	}
	// Delete is allowed: PVE deletes from the disks the snapshot recorded.
	if err := c.DeleteSandboxSnapshot(ctx, sb.Name, "before"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DetachWorkspace(ctx, "ws"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSandboxSnapshot(ctx, sb.Name, api.CreateSandboxSnapshotRequest{Name: "detached"}); err != nil {
		t.Fatal(err)
	}
	if v := d.Sim.Dump().Volumes[vol]; len(v.Snapshots) != 0 {
		t.Fatalf("workspace volume got snapshots: %+v", v)
	}
}

// TestSandboxSnapshotStorages: full-clone profiles on every storage type:
// LVM-thin and qcow2 on dir roll back to any snapshot, ZFS only to the most
// recent one (409 naming the newer snapshots), raw on dir cannot snapshot at
// all (a clear 409).
func TestSandboxSnapshotStorages(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	var prof strings.Builder
	for _, st := range []string{"local-lvm", "local-zfs", "local", "local-raw"} {
		prof.WriteString("---\nname: on-" + st + "\ntemplate_vmid: 9000\nstorage:\n  clone: full\n  storage: " + st + "\n  root_size_gb: 20\n")
	}
	if err := os.WriteFile(filepath.Join(d.Config.ProfilesDir, "storages.yaml"), []byte(prof.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	c = tcpClient(t, d, d.Info.Token)
	for _, st := range []string{"local-lvm", "local-zfs", "local", "local-raw"} {
		t.Run(st, func(t *testing.T) {
			sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "s-" + strings.TrimPrefix(st, "local-"), Profile: "on-" + st})
			if err != nil {
				t.Fatal(err)
			}
			if sb, err = c.WaitSandbox(ctx, sb.Name, 10*time.Millisecond); err != nil || sb.State != api.StateRunning {
				t.Fatalf("%+v %v", sb, err)
			}
			_, err = c.CreateSandboxSnapshot(ctx, sb.Name, api.CreateSandboxSnapshotRequest{Name: "one"})
			if st == "local-raw" {
				wantCode(t, err, 409, api.CodeUnsupported)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.CreateSandboxSnapshot(ctx, sb.Name, api.CreateSandboxSnapshotRequest{Name: "two"}); err != nil {
				t.Fatal(err)
			}
			if st == "local-zfs" {
				_, err := c.RestoreSandboxSnapshot(ctx, sb.Name, "one")
				wantCode(t, err, 409, api.CodeUnsupported)
				if !strings.Contains(err.Error(), "ZFS") || !strings.Contains(err.Error(), ": two") {
					t.Fatalf("ZFS rule: %v", err)
				}
				if err := c.DeleteSandboxSnapshot(ctx, sb.Name, "two"); err != nil {
					t.Fatal(err)
				}
			}
			if got, err := c.RestoreSandboxSnapshot(ctx, sb.Name, "one"); err != nil || got.State != api.StateStopped {
				t.Fatalf("older snapshot on %s: %+v %v", st, got, err)
			}
		})
	}
}
