package agent_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// TestAttack18RevertToSnapshotHoldingWorkspace: an operator re-takes "clean"
// in Proxmox (qm snapshot) while the workspace is plugged in, so the
// snapshot's config names the workspace volume. A rollback to it would roll
// the workspace back too (PVE rolls back every volume of the snapshot's
// config), and plug it in again behind the claim's back. Revert must refuse
// and keep the workspace's data and its attachment as they were.
func TestAttack18RevertToSnapshotHoldingWorkspace(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	sb := withWorkspace(t, c, "oob")
	pc := pveClient(t, d)
	wsVol := holderVol(t, d, c, "ws")
	write(t, d, wsVol, "/work/result.txt", "old")
	if err := pc.DeleteSnapshot(ctx, sb.VMID, "clean"); err != nil {
		t.Fatal(err)
	}
	if err := pc.CreateVMSnapshot(ctx, sb.VMID, "clean", "taken by hand", false); err != nil {
		t.Fatal(err)
	}
	write(t, d, wsVol, "/work/result.txt", "new")

	_, err := c.Revert(ctx, "oob", api.RevertRequest{})
	wantCode(t, err, http.StatusConflict, api.CodeAttached)
	if !strings.Contains(err.Error(), "clean") || !strings.Contains(err.Error(), wsVol) {
		t.Fatalf("the refusal names neither the snapshot nor the volume: %v", err)
	}
	if got := read(t, d, wsVol, "/work/result.txt"); got != "new" {
		t.Fatalf("revert rolled the workspace back: %q", got)
	}
	vm := vms(d)[sb.VMID]
	if volOf(vm.Config["scsi1"]) != wsVol {
		t.Fatalf("workspace no longer attached after the refused revert: %v", vm.Config)
	}
	if got, err := c.WaitSandbox(ctx, "oob", 10*time.Millisecond); err != nil || got.State != api.StateRunning {
		t.Fatalf("after the refused revert: %+v %v", got, err)
	}
}

// TestAttack18RestoreSnapshotHoldingWorkspace: the same for a snapshot of
// the sandbox's own list taken by hand while the workspace was attached,
// restored after the workspace was detached: the rollback would plug the
// workspace back into the sandbox (attached while the database says it is
// free) with its old contents.
func TestAttack18RestoreSnapshotHoldingWorkspace(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	sb := withWorkspace(t, c, "oob2")
	pc := pveClient(t, d)
	wsVol := holderVol(t, d, c, "ws")
	write(t, d, wsVol, "/work/result.txt", "old")
	if err := pc.CreateVMSnapshot(ctx, sb.VMID, "byhand", "", false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DetachWorkspace(ctx, "ws"); err != nil {
		t.Fatal(err)
	}
	write(t, d, wsVol, "/work/result.txt", "new")

	_, err := c.RestoreSandboxSnapshot(ctx, "oob2", "byhand")
	wantCode(t, err, http.StatusConflict, api.CodeAttached)
	if got := read(t, d, wsVol, "/work/result.txt"); got != "new" {
		t.Fatalf("restore rolled the workspace back: %q", got)
	}
	for k, v := range vms(d)[sb.VMID].Config {
		if strings.Contains(v, wsVol) {
			t.Fatalf("restore plugged the detached workspace in again as %s = %s", k, v)
		}
	}
	if w, err := c.Workspace(ctx, "ws"); err != nil || w.AttachedSandbox != "" {
		t.Fatalf("workspace after the refused restore: %+v %v", w, err)
	}
}

// TestAttack18StopOfHibernatedKeepsLeaseCredit: the lease stands still while
// a sandbox is hibernated. Stopping a hibernated sandbox (to free its vmstate
// volume) must not hand it back its pre-hibernation deadline: hibernated
// with 1h left, stopped after 5h asleep, it still has that hour, and lease
// GC must not destroy it at once.
func TestAttack18StopOfHibernatedKeepsLeaseCredit(t *testing.T) {
	d, c, clk, _ := startLoopsDev(t)
	ctx := tctx(t)
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "sleeper", Profile: "yolo-ephemeral", TTL: "1h"}); err != nil {
		t.Fatal(err)
	}
	if sb, err := c.WaitSandbox(ctx, "sleeper", 10*time.Millisecond); err != nil || sb.State != api.StateRunning {
		t.Fatalf("%+v %v", sb, err)
	}
	if _, err := c.Hibernate(ctx, "sleeper"); err != nil {
		t.Fatal(err)
	}
	clk.Add(5 * time.Hour)
	if err := d.Manager.LeaseGC(ctx); err != nil {
		t.Fatal(err)
	}
	if st := state(t, c, "sleeper"); st != api.StateSuspended {
		t.Fatalf("hibernated sandbox reaped while its lease stood still: %s", st)
	}
	if _, err := c.Stop(ctx, "sleeper"); err != nil {
		t.Fatal(err)
	}
	sb, err := c.WaitSandbox(ctx, "sleeper", 10*time.Millisecond)
	if err != nil || sb.State != api.StateStopped {
		t.Fatalf("stop of the hibernated sandbox: %+v %v", sb, err)
	}
	if sb.LeaseExpiresAt == nil || sb.LeaseExpiresAt.Sub(clk.Now()) < 59*time.Minute {
		t.Fatalf("stopped after 5h hibernated with 1h left, the lease ends at %v (now %v)", sb.LeaseExpiresAt, clk.Now())
	}
	if err := d.Manager.LeaseGC(ctx); err != nil {
		t.Fatal(err)
	}
	if st := state(t, c, "sleeper"); st != api.StateStopped {
		t.Fatalf("lease GC right after the stop: %s", st)
	}
}

// TestAttack18RevertWhoseAnswerIsLost: Proxmox performs the rollback but its
// answer never arrives (a dropped connection; the same as agentd dying right
// after the task ran). The disks are from before the first boot, so the
// guest needs its bootstrap again and makes new SSH host keys: the next
// start must deliver the bootstrap, and the old pin must not lock ssh out
// for good (a pin is never replaced, so host_key_changed would be final).
func TestAttack18RevertWhoseAnswerIsLost(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	sb := withWorkspace(t, c, "lost")
	vm := vms(d)[sb.VMID]
	root, wsVol := volOf(vm.Config["scsi0"]), holderVol(t, d, c, "ws")
	write(t, d, root, "/etc/dirty", "yes")
	write(t, d, wsVol, "/work/result.txt", "keep me")
	if _, err := c.HostKey(ctx, "lost"); err != nil {
		t.Fatal(err)
	}
	if err := d.Sim.LoseReply("POST", `/snapshot/clean/rollback$`, 1, false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Revert(ctx, "lost", api.RevertRequest{}); err == nil {
		t.Fatal("revert reported success without Proxmox's answer")
	}
	if read(t, d, root, "/etc/dirty") != "<missing>" {
		t.Fatal("the simulator did not roll back: the attack did not happen")
	}
	// Whatever the revert left, reconcile and a start bring it back.
	if _, err := c.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	got, err := c.WaitSandbox(ctx, "lost", 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if got.State == api.StateStopped {
		if _, err := c.Start(ctx, "lost"); err != nil {
			t.Fatal(err)
		}
		got, err = c.WaitSandbox(ctx, "lost", 10*time.Millisecond)
	}
	if err != nil || got.State != api.StateRunning {
		t.Fatalf("after the lost revert answer: %+v %v", got, err)
	}
	if read(t, d, wsVol, "/work/result.txt") != "keep me" || volOf(vms(d)[sb.VMID].Config["scsi1"]) != wsVol {
		t.Fatalf("workspace after the lost revert answer: %v", vms(d)[sb.VMID].Config)
	}
	if n := countKind(t, c, "lost", "bootstrap.written"); n != 2 {
		t.Fatalf("the reverted guest got %d bootstraps in all, want 2 (one at create, one after the rollback)", n)
	}
	regenerated := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEbYDuLO4ZG1lE8Vf0vRxcC5e3RTZ0p2WSaeH1oV0wy3 root@lost\n"
	d.Sim.SetGuestFile(sb.VMID, pvesim.HostKeyPath, []byte(regenerated))
	if hk, err := c.HostKey(ctx, "lost"); err != nil || !hk.Verified {
		t.Fatalf("host key of the reverted guest: %+v %v", hk, err)
	}
}

// deleteVolume removes a volume through the Proxmox API, as an operator's
// pvesm free would, behind agentd's back.
func deleteVolume(t *testing.T, d *agent.Dev, volid string) {
	t.Helper()
	sid, _, _ := strings.Cut(volid, ":")
	id, secret := d.Sim.Token()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(d.Sim.CAPEM()))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest("DELETE", d.Sim.URL()+"/nodes/pve/storage/"+sid+"/content/"+url.PathEscape(volid), nil)
	req.Header.Set("Authorization", "PVEAPIToken="+id+"="+secret)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for i := 0; i < 200 && volumeExists(d, volid); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if resp.StatusCode != 200 || volumeExists(d, volid) {
		t.Fatalf("delete %s: %s", volid, resp.Status)
	}
}

// TestAttack18ResumeWithoutVMState: the vmstate volume of a hibernated
// sandbox is removed out of band, so Proxmox cannot resume it. The resume
// must fail saying so, and the sandbox must not be stuck: destroy still
// works, leaves no VM, and keeps the workspace and its data.
func TestAttack18ResumeWithoutVMState(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	sb := withWorkspace(t, c, "nostate")
	wsVol := holderVol(t, d, c, "ws")
	write(t, d, wsVol, "/work/result.txt", "keep me")
	if _, err := c.Hibernate(ctx, "nostate"); err != nil {
		t.Fatal(err)
	}
	vmstate := vms(d)[sb.VMID].Config["vmstate"]
	deleteVolume(t, d, vmstate)

	if _, err := c.Resume(ctx, "nostate"); err != nil {
		t.Fatal(err)
	}
	got, err := c.WaitSandbox(ctx, "nostate", 10*time.Millisecond)
	if err != nil || got.State == api.StateRunning || !strings.Contains(got.Error, vmstate) {
		t.Fatalf("after a resume without its vmstate: %+v %v (want an error naming %s)", got, err, vmstate)
	}
	got, err = c.Destroy(ctx, "nostate", false)
	if err == nil && got.State != api.StateDestroyed {
		got, err = c.WaitSandbox(ctx, got.ID, 10*time.Millisecond)
	}
	if err != nil || got.State != api.StateDestroyed {
		t.Fatalf("destroy after the failed resume: %+v %v", got, err)
	}
	if _, left := vms(d)[sb.VMID]; left {
		t.Fatal("VM left after destroy")
	}
	if read(t, d, wsVol, "/work/result.txt") != "keep me" {
		t.Fatal("workspace data lost")
	}
	if w, err := c.Workspace(ctx, "ws"); err != nil || w.AttachedSandbox != "" {
		t.Fatalf("workspace after destroy: %+v %v", w, err)
	}
}

// TestAttack18LeaseRenewedWhileGCWaits: lease GC lists an expired sandbox,
// then waits for its lock (a snapshot holds it); meanwhile the lease is
// renewed. Once GC gets the lock it must judge the row it now holds, not the
// listing: a renewed sandbox is not destroyed.
func TestAttack18LeaseRenewedWhileGCWaits(t *testing.T) {
	d, c, clk, _ := startLoopsDev(t)
	ctx := tctx(t)
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "renewed", Profile: "yolo-ephemeral", TTL: "1h"}); err != nil {
		t.Fatal(err)
	}
	sb, err := c.WaitSandbox(ctx, "renewed", 10*time.Millisecond)
	if err != nil || sb.State != api.StateRunning {
		t.Fatalf("%+v %v", sb, err)
	}
	clk.Add(61 * time.Minute)
	d.Sim.HangTaskTimes("qmsnapshot", strconv.Itoa(sb.VMID), 1)
	snapDone := make(chan error, 1)
	go func() {
		_, err := c.CreateSandboxSnapshot(ctx, "renewed", api.CreateSandboxSnapshotRequest{Name: "held"})
		snapDone <- err
	}()
	// The snapshot request now holds the sandbox's lock, its task hung.
	time.Sleep(200 * time.Millisecond)
	gcDone := make(chan error, 1)
	go func() { gcDone <- d.Manager.LeaseGC(ctx) }()
	// Give GC the time to list the row and queue for its lock (if it has not
	// yet, it reads the renewed row and the test passes for that reason).
	time.Sleep(200 * time.Millisecond)
	row, err := d.Agent.Store.Sandbox(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	exp := clk.Now().Add(time.Hour).UTC()
	row.LeaseExpiresAt = &exp
	if err := d.Agent.Store.Save(ctx, row, row.State, store.Event{Kind: "sandbox.lease_renewed", Message: "renewed while GC waited"}); err != nil {
		t.Fatal(err)
	}
	d.Sim.ReleaseHungTasks()
	<-snapDone
	if err := <-gcDone; err != nil {
		t.Fatal(err)
	}
	if st := state(t, c, "renewed"); st != api.StateRunning {
		t.Fatalf("a sandbox renewed while lease GC waited for its lock is %s", st)
	}
}

// TestAttack18TouchWhileIdleStopWaits: the same race for idle stop: a touch
// (agentd sandbox ssh records one) that commits while idle stop waits for
// the sandbox's lock keeps it running.
func TestAttack18TouchWhileIdleStopWaits(t *testing.T) {
	d, c, clk, _ := startLoopsDev(t)
	ctx := tctx(t)
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "touched", Profile: "yolo-ephemeral", TTL: "4h"}); err != nil {
		t.Fatal(err)
	}
	sb, err := c.WaitSandbox(ctx, "touched", 10*time.Millisecond)
	if err != nil || sb.State != api.StateRunning {
		t.Fatalf("%+v %v", sb, err)
	}
	d.Sim.SetCPU(sb.VMID, 0.01)
	clk.Add(31 * time.Minute)
	d.Sim.HangTaskTimes("qmsnapshot", strconv.Itoa(sb.VMID), 1)
	snapDone := make(chan error, 1)
	go func() {
		_, err := c.CreateSandboxSnapshot(ctx, "touched", api.CreateSandboxSnapshotRequest{Name: "held"})
		snapDone <- err
	}()
	time.Sleep(200 * time.Millisecond)
	idleDone := make(chan error, 1)
	go func() { idleDone <- d.Manager.IdleStop(ctx) }()
	time.Sleep(200 * time.Millisecond)
	row, err := d.Agent.Store.Sandbox(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	now := clk.Now().UTC()
	row.LastUsedAt = &now
	if err := d.Agent.Store.Save(ctx, row, row.State, store.Event{Kind: "sandbox.touched", Message: "touched while idle stop waited"}); err != nil {
		t.Fatal(err)
	}
	d.Sim.ReleaseHungTasks()
	<-snapDone
	if err := <-idleDone; err != nil {
		t.Fatal(err)
	}
	if st := state(t, c, "touched"); st != api.StateRunning {
		t.Fatalf("a sandbox touched while idle stop waited for its lock is %s", st)
	}
}
