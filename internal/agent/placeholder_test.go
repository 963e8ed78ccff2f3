package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// While a clone runs, Proxmox's config of the target is clone_vm's
// placeholder ("# qmclone temporary file", lock clone): no name, tag or
// description of ours yet. An agent stopped during a fork's clone abandons
// the fork and removes its holder; it used to read the placeholder, take the
// VM for someone else's and leave it, so the clone landed afterwards as a
// copy of the workspace's data that nothing accounted for. The proof must
// wait for the real config instead.
func TestStopDuringForkCloneLeavesNoCopy(t *testing.T) {
	reqLog := filepath.Join(t.TempDir(), "requests.jsonl")
	d, c := startDev(t, agent.DevOptions{Speed: 4, LogRequests: reqLog})
	ctx := tctx(t)
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "src", Size: "1G"}); err != nil {
		t.Fatal(err)
	}
	src, err := c.Workspace(ctx, "src")
	if err != nil {
		t.Fatal(err)
	}
	srcVol := holderVol(t, d, c, "src")
	write(t, d, srcVol, "/work/kept.txt", "copied")
	// A clone long enough for the stop to land while it runs.
	d.Sim.SlowTask("qmclone", "", 10*time.Second)
	forkDone := make(chan error, 1)
	go func() {
		_, err := c.ForkWorkspace(context.Background(), "src", api.ForkRequest{Name: "copy"})
		forkDone <- err
	}()
	forkVMID := 0
	for forkVMID == 0 {
		for id, vm := range d.Sim.Dump().VMs {
			if id != src.HolderVMID && vm.Config["lock"] == "clone" {
				forkVMID = id
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("the fork's clone never started")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if desc := d.Sim.Dump().VMs[forkVMID].Config["description"]; strings.Contains(desc, "agentlab") {
		t.Fatalf("VM %d mid-clone shows description %q; the simulator must show clone_vm's placeholder", forkVMID, desc)
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-forkDone; err == nil {
		t.Fatal("the fork interrupted by the stop answered success")
	}
	if placeholderReads(t, reqLog, forkVMID) == 0 {
		t.Fatalf("nothing read VM %d: the abandon did not prove the holder it removes", forkVMID)
	}
	c = tcpClient(t, d, d.Info.Token)
	if w, err := c.Workspace(ctx, "copy"); err == nil {
		t.Fatalf("abandoned fork still listed: %+v", w)
	}
	if vm, ok := d.Sim.Dump().VMs[forkVMID]; ok {
		t.Fatalf("the abandoned fork's clone stayed as VM %d: %v", forkVMID, vm.Config)
	}
	if rep, err := c.Reconcile(ctx, true); err != nil || len(rep.Orphans) != 0 || len(rep.Actions) != 0 {
		t.Fatalf("reconcile after the abandoned fork: %+v %v", rep, err)
	}
	if got := read(t, d, srcVol, "/work/kept.txt"); got != "copied" {
		t.Fatalf("source data %q", got)
	}
}

// placeholderReads counts answered config reads of vmid in the request log.
func placeholderReads(t *testing.T, file string, vmid int) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	path := fmt.Sprintf(`"path":"/api2/json/nodes/pve/qemu/%d/config"`, vmid)
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, `"method":"GET"`) && strings.Contains(line, path) && !strings.Contains(line, "no reply") {
			n++
		}
	}
	return n
}

// Soak seed 46 (with the placeholder simulated): the clone request's answer
// is lost, provisioning fails while PVE's clone still runs, and the cleanup
// and the later destroy read the placeholder, call the VM foreign and mark
// the sandbox LOST with the workspace still claimed by it (I5: attached to a
// LOST sandbox whose VM has no scsi1). Both must wait for the real config,
// find the VM ours and remove it, releasing the workspace.
func TestLostCloneAnswerDuringSlowCloneIsCleanedUp(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Speed: 4})
	ctx := tctx(t)
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "w", Size: "1G"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Sim.LoseReply("POST", `^/nodes/[^/]+/qemu/\d+/clone$`, 1, false); err != nil {
		t.Fatal(err)
	}
	d.Sim.SlowTask("qmclone", "", 3*time.Second)
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "sb", Profile: "yolo-workspace", Workspace: "w"}); err != nil {
		t.Fatal(err)
	}
	sb := waitStep(t, c, "sb", func(sb *api.Sandbox) bool { return !sb.State.InFlight() })
	if sb.State == api.StateLost {
		t.Fatalf("sandbox LOST on its own clone: %s", sb.Error)
	}
	if sb, err := c.Destroy(ctx, "sb", false); err != nil || sb.State != api.StateDestroyed {
		t.Fatalf("destroy: %+v %v", sb, err)
	}
	if w, err := c.Workspace(ctx, "w"); err != nil || w.AttachedSandbox != "" || w.State != "READY" {
		t.Fatalf("workspace after destroy: %+v %v", w, err)
	}
	for id, vm := range d.Sim.Dump().VMs {
		if strings.Contains(vm.Config["description"], sb.ID) || strings.Contains(vm.Config["description"], "qmclone") {
			t.Fatalf("VM %d of the failed sandbox is still there: %v", id, vm.Config)
		}
	}
	if rep, err := c.Reconcile(ctx, true); err != nil || len(rep.Orphans) != 0 {
		t.Fatalf("reconcile: %+v %v", rep, err)
	}
}
