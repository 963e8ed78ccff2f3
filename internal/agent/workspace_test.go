package agent_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
)

func pveClient(t testing.TB, d *agent.Dev) *pve.Client {
	t.Helper()
	id, secret := d.Sim.Token()
	pc, err := pve.New(pve.Config{URL: d.Sim.URL(), TokenID: id, Secret: secret, Node: "pve", CAPEM: d.Sim.CAPEM()})
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

func volOf(cfgVal string) string { return strings.SplitN(cfgVal, ",", 2)[0] }

// holderVol is the workspace volume as its holder names it right now.
func holderVol(t testing.TB, d *agent.Dev, c *client.Client, ws string) string {
	t.Helper()
	w, err := c.Workspace(tctx(t), ws)
	if err != nil {
		t.Fatal(err)
	}
	v := volOf(d.Sim.Dump().VMs[w.HolderVMID].Config["scsi0"])
	if v == "" || v != w.Volume {
		t.Fatalf("holder volume %q, API says %q", v, w.Volume)
	}
	return v
}

func read(t testing.TB, d *agent.Dev, vol, path string) string {
	t.Helper()
	s, ok, err := d.Sim.ReadFile(vol, path)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return "<missing>"
	}
	return s
}

func write(t testing.TB, d *agent.Dev, vol, path, content string) {
	t.Helper()
	if err := d.Sim.WriteFile(vol, path, content); err != nil {
		t.Fatal(err)
	}
}

func volumeExists(d *agent.Dev, vol string) bool {
	_, ok := d.Sim.Dump().Volumes[vol]
	return ok
}

func resume(t testing.TB, c *client.Client, name string) *api.Session {
	t.Helper()
	ctx := tctx(t)
	if _, err := c.ResumeSession(ctx, name); err != nil {
		t.Fatal(err)
	}
	s, err := c.WaitSession(ctx, name, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestWorkspacePersistsAcrossSandboxes is the promise: the workspace persists,
// the sandbox root does not. It runs on every storage type.
func TestWorkspacePersistsAcrossSandboxes(t *testing.T) {
	for _, storage := range []string{"local-lvm", "local-zfs", "local", "local-raw"} {
		t.Run(storage, func(t *testing.T) {
			d, c := startDev(t, agent.DevOptions{})
			ctx := tctx(t)
			canSnap := storage != "local-raw"
			if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "ws", Size: "10G", Storage: storage}); err != nil {
				t.Fatal(err)
			}
			vol := holderVol(t, d, c, "ws")
			if _, err := c.CreateSession(ctx, api.CreateSessionRequest{Name: "s", Profile: "yolo-workspace", Workspace: "ws"}); err != nil {
				t.Fatal(err)
			}
			a := resume(t, c, "s")
			if a.State != "RUNNING" || a.Workspace != "ws" {
				t.Fatalf("session %+v", a)
			}
			if got := volOf(vms(d)[a.SandboxVMID].Config["scsi1"]); got != vol {
				t.Fatalf("sandbox A scsi1 = %q, want the holder's %q", got, vol)
			}
			write(t, d, vol, "/work/a.txt", "from A")

			// Refused while attached, and nothing changes.
			_, err := c.CreateSnapshot(ctx, "ws", api.CreateSnapshotRequest{Name: "early"})
			wantCode(t, err, http.StatusConflict, api.CodeAttached)
			_, err = c.DeleteWorkspace(ctx, "ws")
			wantCode(t, err, http.StatusConflict, api.CodeReserved)
			_, err = c.ForkWorkspace(ctx, "ws", api.ForkRequest{Name: "copy"})
			wantCode(t, err, http.StatusConflict, api.CodeAttached)
			if snaps, _ := c.Snapshots(ctx, "ws"); len(snaps) != 0 {
				t.Fatalf("snapshots after refusals: %v", snaps)
			}
			// Another sandbox cannot take it.
			_, err = c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "thief", Profile: "yolo-workspace", Workspace: "ws"})
			wantCode(t, err, http.StatusConflict, api.CodeAttached)

			// Stop the session: sandbox A is destroyed, the volume is not.
			if s, err := c.StopSession(ctx, "s"); err != nil || s.State != "STOPPED" {
				t.Fatalf("stop %+v %v", s, err)
			}
			if _, ok := vms(d)[a.SandboxVMID]; ok {
				t.Fatal("sandbox A's VM survived stop")
			}
			if !volumeExists(d, vol) || read(t, d, vol, "/work/a.txt") != "from A" {
				t.Fatal("workspace data lost when sandbox A was destroyed")
			}
			if canSnap {
				if _, err := c.CreateSnapshot(ctx, "ws", api.CreateSnapshotRequest{Name: "s1"}); err != nil {
					t.Fatal(err)
				}
			} else {
				_, err := c.CreateSnapshot(ctx, "ws", api.CreateSnapshotRequest{Name: "s1"})
				wantCode(t, err, http.StatusConflict, api.CodeUnsupported)
				if !strings.Contains(err.Error(), "does not support snapshots") {
					t.Fatal(err)
				}
			}

			// Resume: sandbox B sees A's data through the same volume.
			b := resume(t, c, "s")
			if b.Sandbox == a.Sandbox || b.State != "RUNNING" {
				t.Fatalf("resume did not make a fresh sandbox: %+v", b)
			}
			if got := volOf(vms(d)[b.SandboxVMID].Config["scsi1"]); got != vol || read(t, d, got, "/work/a.txt") != "from A" {
				t.Fatalf("sandbox B does not see A's data via %q", got)
			}
			write(t, d, vol, "/work/b.txt", "from B")

			// Destroying the sandbox directly, and pruning a failed one, keep the data.
			if _, err := c.Destroy(ctx, b.Sandbox, false); err != nil {
				t.Fatal(err)
			}
			d.Sim.FailTask("qmstart", "", "kvm: no memory")
			failed := resume(t, c, "s")
			d.Sim.ClearFaults()
			if failed.State != "FAILED" {
				t.Fatalf("%+v", failed)
			}
			if res, err := c.Prune(ctx); err != nil || len(res.Destroyed) != 1 {
				t.Fatalf("prune %+v %v", res, err)
			}
			if !volumeExists(d, vol) || read(t, d, vol, "/work/b.txt") != "from B" {
				t.Fatal("workspace data lost by destroy or prune")
			}
			if w, _ := c.Workspace(ctx, "ws"); w.AttachedSandbox != "" || w.Session != "s" {
				t.Fatalf("after prune: %+v", w)
			}

			if canSnap {
				// Restore brings back the snapshot's data (s1 had only a.txt).
				if _, err := c.RestoreSnapshot(ctx, "ws", "s1"); err != nil {
					t.Fatal(err)
				}
				if read(t, d, vol, "/work/b.txt") != "<missing>" || read(t, d, vol, "/work/a.txt") != "from A" {
					t.Fatal("restore did not bring back the snapshot's content")
				}
			}

			// Fork: starts with the parent's data, then diverges.
			if _, err := c.ForkWorkspace(ctx, "ws", api.ForkRequest{Name: "fork"}); err != nil {
				t.Fatal(err)
			}
			fvol := holderVol(t, d, c, "fork")
			if fvol == vol || read(t, d, fvol, "/work/a.txt") != "from A" {
				t.Fatalf("fork %s does not start with the parent's data", fvol)
			}
			write(t, d, fvol, "/work/a.txt", "changed in fork")
			if read(t, d, vol, "/work/a.txt") != "from A" {
				t.Fatal("writing the fork changed the parent")
			}

			// Delete needs the session gone; the session's delete keeps the workspace.
			if _, err := c.DeleteSession(ctx, "s"); err != nil {
				t.Fatal(err)
			}
			if !volumeExists(d, vol) {
				t.Fatal("deleting the session deleted the workspace")
			}
			if _, err := c.DeleteWorkspace(ctx, "ws"); err != nil {
				t.Fatal(err)
			}
			if volumeExists(d, vol) {
				t.Fatal("workspace delete left its volume")
			}
			if _, err := c.Workspace(ctx, "ws"); !client.IsNotFound(err) {
				t.Fatalf("deleted workspace: %v", err)
			}
		})
	}
}

func TestSnapshotRulesPerStorage(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	for _, st := range []string{"local-zfs", "local-lvm"} {
		name := "w-" + strings.TrimPrefix(st, "local-")
		if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: name, Size: "5G", Storage: st}); err != nil {
			t.Fatal(err)
		}
		vol := holderVol(t, d, c, name)
		write(t, d, vol, "f", "1")
		c.CreateSnapshot(ctx, name, api.CreateSnapshotRequest{Name: "one"})
		write(t, d, vol, "f", "2")
		c.CreateSnapshot(ctx, name, api.CreateSnapshotRequest{Name: "two"})
		write(t, d, vol, "f", "3")
		_, err := c.RestoreSnapshot(ctx, name, "one")
		if st == "local-zfs" {
			wantCode(t, err, http.StatusConflict, api.CodeUnsupported)
			if !strings.Contains(err.Error(), "delete the newer snapshot(s) first: two") || read(t, d, vol, "f") != "3" {
				t.Fatalf("ZFS restore: %v, f=%s", err, read(t, d, vol, "f"))
			}
			// Fork from a snapshot needs copy-from-snapshot, which ZFS lacks.
			_, err = c.ForkWorkspace(ctx, name, api.ForkRequest{Name: "zf", FromSnapshot: "one"})
			wantCode(t, err, http.StatusConflict, api.CodeUnsupported)
			if _, err := c.Workspace(ctx, "zf"); !client.IsNotFound(err) {
				t.Fatalf("failed fork left a workspace: %v", err)
			}
			if err := c.DeleteSnapshot(ctx, name, "two"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.RestoreSnapshot(ctx, name, "one"); err != nil || read(t, d, vol, "f") != "1" {
				t.Fatalf("restore after deleting the newer one: %v", err)
			}
		} else {
			if err != nil || read(t, d, vol, "f") != "1" {
				t.Fatalf("LVM-thin restore to an older snapshot: %v", err)
			}
			if _, err := c.ForkWorkspace(ctx, name, api.ForkRequest{Name: "lf", FromSnapshot: "two"}); err != nil {
				t.Fatal(err)
			}
			if got := read(t, d, holderVol(t, d, c, "lf"), "f"); got != "2" {
				t.Fatalf("fork from snapshot two has f=%s", got)
			}
		}
	}
	_, err := c.RestoreSnapshot(ctx, "w-lvm", "nope")
	wantCode(t, err, http.StatusNotFound, api.CodeSnapshotNotFound)
	_, err = c.CreateSnapshot(ctx, "w-lvm", api.CreateSnapshotRequest{Name: "one"})
	wantCode(t, err, http.StatusConflict, api.CodeConflict)
	_, err = c.CreateSnapshot(ctx, "w-lvm", api.CreateSnapshotRequest{Name: "9bad"})
	wantCode(t, err, http.StatusBadRequest, api.CodeInvalidField)
	_, err = c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "w-lvm", Size: "5G"})
	wantCode(t, err, http.StatusConflict, api.CodeConflict)
	_, err = c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "big", Size: "lots"})
	wantCode(t, err, http.StatusBadRequest, api.CodeInvalidField)
	_, err = c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "nowhere", Size: "5G", Storage: "ceph"})
	if err == nil || !strings.Contains(err.Error(), "ceph") {
		t.Fatalf("unknown storage: %v", err)
	}
	if _, err := c.Workspace(ctx, "nowhere"); !client.IsNotFound(err) {
		t.Fatalf("failed create left a row: %v", err)
	}
	_, err = c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "elsewhere", Size: "5G", Node: "pve2"})
	wantCode(t, err, http.StatusBadRequest, api.CodeInvalidField)
	if !strings.Contains(err.Error(), `node "pve2" is not a node agentd uses (nodes: pve)`) {
		t.Fatalf("a node of no cluster: %v", err)
	}
	// Grow in place; shrinking is refused.
	if w, err := c.ResizeWorkspace(ctx, "w-lvm", api.ResizeWorkspaceRequest{SizeGB: 8}); err != nil || w.SizeGB != 8 {
		t.Fatalf("%+v %v", w, err)
	}
	_, err = c.ResizeWorkspace(ctx, "w-lvm", api.ResizeWorkspaceRequest{SizeGB: 4})
	wantCode(t, err, http.StatusBadRequest, api.CodeInvalidField)
}

func TestAttachDetachAndCheck(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	pc := pveClient(t, d)
	c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "ws", Size: "5G"})
	vol := holderVol(t, d, c, "ws")
	sb := create(t, c, "plain")
	other := create(t, c, "other")
	if w, err := c.AttachWorkspace(ctx, "ws", "plain"); err != nil || w.AttachedSandbox != "plain" {
		t.Fatalf("%+v %v", w, err)
	}
	if got := volOf(vms(d)[sb.VMID].Config["scsi1"]); got != vol {
		t.Fatalf("scsi1 = %q", got)
	}
	_, err := c.AttachWorkspace(ctx, "ws", "other")
	wantCode(t, err, http.StatusConflict, api.CodeAttached)
	if res, err := c.CheckWorkspace(ctx, "ws"); err != nil || !res.OK {
		t.Fatalf("clean check: %+v %v", res, err)
	}
	// Injected mismatches, each reported.
	pc.DetachVolume(ctx, sb.VMID, "scsi1")
	pc.AttachVolume(ctx, other.VMID, "scsi2", vol)
	codes := func() string {
		res, err := c.CheckWorkspace(ctx, "ws")
		if err != nil {
			t.Fatal(err)
		}
		var cs []string
		for _, f := range res.Findings {
			cs = append(cs, f.Code)
		}
		return strings.Join(cs, ",")
	}
	if got := codes(); got != "not_attached_in_proxmox,attached_in_proxmox_only" {
		t.Fatalf("findings %s", got)
	}
	pc.DetachVolume(ctx, other.VMID, "scsi2")
	pc.AttachVolume(ctx, sb.VMID, "scsi1", vol)
	w, _ := c.Workspace(ctx, "ws")
	pc.Start(ctx, w.HolderVMID)
	if got := codes(); got != "holder_running" {
		t.Fatalf("findings %s", got)
	}
	pc.Stop(ctx, w.HolderVMID)
	// Detach, then the holder disappears out of band.
	if w, err := c.DetachWorkspace(ctx, "ws"); err != nil || w.AttachedSandbox != "" {
		t.Fatalf("%+v %v", w, err)
	}
	if _, ok := vms(d)[sb.VMID].Config["scsi1"]; ok {
		t.Fatal("detach left scsi1")
	}
	pc.Destroy(ctx, w.HolderVMID)
	if got := codes(); got != "holder_missing" {
		t.Fatalf("findings %s", got)
	}
	// Detach refuses a key that holds another disk.
	c2 := "ws2"
	c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: c2, Size: "5G"})
	c.AttachWorkspace(ctx, c2, "other")
	pc.Configure(ctx, other.VMID, pve.Option{Name: "scsi1", Value: "local-lvm:1"})
	_, err = c.DetachWorkspace(ctx, c2)
	if err == nil || !strings.Contains(err.Error(), "left alone") {
		t.Fatalf("detach of a foreign disk: %v", err)
	}
}

// TestSessionResumeIsIdempotentAndForks covers session create variants,
// resume of a running session, and fork.
func TestSessionResumeIsIdempotentAndForks(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	_, err := c.CreateSession(ctx, api.CreateSessionRequest{Name: "s", Profile: "yolo-workspace", Workspace: "new:s-ws"})
	wantCode(t, err, http.StatusBadRequest, api.CodeInvalidField)
	if _, err := c.CreateSession(ctx, api.CreateSessionRequest{Name: "s", Profile: "yolo-workspace", Workspace: "new:s-ws", WorkspaceSize: "20G"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSession(ctx, api.CreateSessionRequest{Name: "s", Profile: "yolo-workspace", Workspace: "new:s-ws", WorkspaceSize: "20G"}); err != nil {
		t.Fatalf("retry of the same create: %v", err)
	}
	_, err = c.CreateSession(ctx, api.CreateSessionRequest{Name: "t", Profile: "yolo-workspace", Workspace: "s-ws"})
	wantCode(t, err, http.StatusConflict, api.CodeReserved)
	first := resume(t, c, "s")
	again := resume(t, c, "s")
	if again.Sandbox != first.Sandbox {
		t.Fatalf("resume of a running session replaced its sandbox: %s → %s", first.Sandbox, again.Sandbox)
	}
	write(t, d, holderVol(t, d, c, "s-ws"), "x", "parent")
	_, err = c.ForkSession(ctx, "s", api.ForkSessionRequest{Name: "f"})
	wantCode(t, err, http.StatusConflict, api.CodeAttached)
	c.StopSession(ctx, "s")
	f, err := c.ForkSession(ctx, "s", api.ForkSessionRequest{Name: "f", Profile: "interactive-dev"})
	if err != nil || f.Workspace != "f" || f.Profile != "interactive-dev" || f.State != "STOPPED" {
		t.Fatalf("fork %+v %v", f, err)
	}
	fr := resume(t, c, "f")
	if got := read(t, d, volOf(vms(d)[fr.SandboxVMID].Config["scsi1"]), "x"); got != "parent" {
		t.Fatalf("forked session sees %q", got)
	}
	list, _ := c.Sessions(ctx)
	if len(list) != 2 {
		t.Fatalf("sessions %+v", list)
	}
	var evs api.EventList
	if err := c.Do(ctx, "GET", "/v1/sessions/s/events", nil, &evs); err != nil || len(evs.Events) < 3 || evs.Events[0].Kind != "session.created" {
		t.Fatalf("session events %+v %v", evs, err)
	}
}

// TestWorkspaceSurvivesRestartMidProvisioning: a restart while a session's
// sandbox is provisioning resumes it with the workspace attached.
func TestWorkspaceSurvivesRestartMidProvisioning(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "ws", Size: "5G"})
	vol := holderVol(t, d, c, "ws")
	c.CreateSession(ctx, api.CreateSessionRequest{Name: "s", Profile: "yolo-workspace", Workspace: "ws"})
	d.Sim.HangTask("qmstart", "")
	c.ResumeSession(ctx, "s")
	for {
		s, _ := c.Session(ctx, "s")
		if s.State == "BOOTING" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.Sim.ClearFaults()
	if err := d.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	c = tcpClient(t, d, d.Info.Token)
	s, err := c.WaitSession(ctx, "s", 10*time.Millisecond)
	if err != nil || s.State != "RUNNING" || volOf(vms(d)[s.SandboxVMID].Config["scsi1"]) != vol {
		t.Fatalf("%+v %v", s, err)
	}
}
