package agent_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// Regression tests for the crash-safety defects of issue #13. Each one drives
// the agent into the state a crash, a cancel or a failed Proxmox task leaves
// and checks Proxmox's side (the simulator's ground truth), not only states.

// fullConfig fails unless the sandbox's VM carries everything provisioning
// gives it (invariant I8 of the soak): tag, description proof, cicustom
// snippet, net0 on the agent bridge with the firewall flag, the profile's
// root size, the VM firewall with its security group, and the workspace.
func fullConfig(t *testing.T, d *agent.Dev, sb *api.Sandbox, rootGB int, workspaceVol string) {
	t.Helper()
	vm, ok := d.Sim.Dump().VMs[sb.VMID]
	if !ok {
		t.Fatalf("VM %d of %s does not exist", sb.VMID, sb.Name)
	}
	cfg := vm.Config
	var missing []string
	check := func(ok bool, what string) {
		if !ok {
			missing = append(missing, what)
		}
	}
	check(strings.Contains(";"+cfg["tags"]+";", ";agentlab;"), "tag agentlab")
	check(strings.Contains(cfg["description"], "agentlab-sandbox-id: "+sb.ID), "description naming "+sb.ID)
	check(strings.Contains(cfg["description"], "agentlab-instance: "), "instance id in the description")
	check(strings.Contains(cfg["cicustom"], "agentlab-"+sb.ID+".yaml"), "cicustom snippet")
	check(strings.Contains(cfg["net0"], "bridge="+d.Config.AgentBridge) && strings.Contains(cfg["net0"], "firewall=1"), "net0 on the agent bridge with firewall=1")
	check(strings.Contains(cfg["scsi0"], fmt.Sprintf("size=%dG", rootGB)), fmt.Sprintf("scsi0 of %d GiB (%s)", rootGB, cfg["scsi0"]))
	if workspaceVol != "" {
		check(volOf(cfg["scsi1"]) == workspaceVol, "workspace "+workspaceVol+" as scsi1")
	}
	_, opts, err := pveClient(t, d).VMFirewallRules(tctx(t), sb.VMID)
	check(err == nil && fmt.Sprint(opts["enable"]) == "1", "VM firewall enabled")
	if len(missing) > 0 {
		t.Fatalf("VM %d of sandbox %s lacks: %s\nconfig: %v", sb.VMID, sb.Name, strings.Join(missing, "; "), cfg)
	}
}

func waitStep(t *testing.T, c *client.Client, name string, ok func(*api.Sandbox) bool) *api.Sandbox {
	t.Helper()
	ctx := tctx(t)
	for {
		sb, err := c.Sandbox(ctx, name)
		if err == nil && ok(sb) {
			return sb
		}
		select {
		case <-ctx.Done():
			t.Fatalf("sandbox %s never reached the wanted point (last %+v, %v)", name, sb, err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// cloning reports whether the simulator runs a clone into the sandbox's VM.
func cloning(d *agent.Dev, sb *api.Sandbox) bool {
	vm, ok := d.Sim.Dump().VMs[sb.VMID]
	return sb.VMID != 0 && ok && vm.Config["lock"] == "clone"
}

// Defect 1: a restart while the clone task runs used to skip configuration.
func TestRestartDuringCloneStillConfigures(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Speed: 4})
	ctx := tctx(t)
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "data", Size: "2G"}); err != nil {
		t.Fatal(err)
	}
	vol := holderVol(t, d, c, "data")
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "mid-clone", Profile: "yolo-workspace", Workspace: "data"}); err != nil {
		t.Fatal(err)
	}
	mid := waitStep(t, c, "mid-clone", func(sb *api.Sandbox) bool { return cloning(d, sb) })
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	c = tcpClient(t, d, d.Info.Token)
	sb, err := c.WaitSandbox(ctx, "mid-clone", 10*time.Millisecond)
	if err != nil || sb.State != api.StateRunning {
		t.Fatalf("after restart: %+v %v", sb, err)
	}
	// The resume adopts its own clone (read mid-clone it shows only PVE's
	// placeholder config): taking it for another client's VM moved the
	// sandbox to a new VMID and left the clone behind (soak seed 47, I1).
	if sb.VMID != mid.VMID {
		t.Fatalf("resumed on VM %d, not on its own clone %d", sb.VMID, mid.VMID)
	}
	if rep, err := c.Reconcile(ctx, true); err != nil || len(rep.Orphans) != 0 {
		t.Fatalf("orphans after the resume: %+v %v", rep, err)
	}
	fullConfig(t, d, sb, 30, vol)
	// And it can be stopped and destroyed (it used to be not_owned forever).
	if _, err := c.Stop(ctx, sb.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Destroy(ctx, sb.Name, false); err != nil {
		t.Fatal(err)
	}
}

// Defect 2: cancelling during the clone leaked an untagged VM. Every way of
// cancelling answers at once and leaves no VM once the clone task ends.
func TestCancelDuringCloneLeavesNothing(t *testing.T) {
	for _, how := range []string{"destroy --force", "session stop", "session delete", "session resume"} {
		t.Run(how, func(t *testing.T) {
			d, c := startDev(t, agent.DevOptions{Speed: 4})
			ctx := tctx(t)
			name := "victim"
			var cancel func() error
			if strings.HasPrefix(how, "session") {
				if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "w", Size: "1G"}); err != nil {
					t.Fatal(err)
				}
				if _, err := c.CreateSession(ctx, api.CreateSessionRequest{Name: "s", Profile: "yolo-workspace", Workspace: "w"}); err != nil {
					t.Fatal(err)
				}
				x, err := c.ResumeSession(ctx, "s")
				if err != nil || x.Sandbox == "" {
					t.Fatalf("resume: %+v %v", x, err)
				}
				name = x.Sandbox
				cancel = map[string]func() error{
					"session stop":   func() error { _, err := c.StopSession(ctx, "s"); return err },
					"session delete": func() error { _, err := c.DeleteSession(ctx, "s"); return err },
					"session resume": func() error {
						// Resume keeps a sandbox still provisioning, so the
						// replacement is stop then resume; the resume waits
						// for the destroy to release the workspace.
						if _, err := c.StopSession(ctx, "s"); err != nil {
							return err
						}
						_, err := c.ResumeSession(ctx, "s")
						return err
					},
				}[how]
			} else {
				if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: "yolo-ephemeral"}); err != nil {
					t.Fatal(err)
				}
				cancel = func() error {
					sb, err := c.Destroy(ctx, name, true)
					if err == nil && sb.State != api.StateDestroying && sb.State != api.StateDestroyed {
						return fmt.Errorf("destroy --force answered %s", sb.State)
					}
					return err
				}
			}
			victim := waitStep(t, c, name, func(sb *api.Sandbox) bool { return cloning(d, sb) })
			if err := cancel(); err != nil {
				t.Fatal(err)
			}
			if sb, err := c.WaitSandbox(ctx, victim.ID, 10*time.Millisecond); err != nil || sb.State != api.StateDestroyed {
				t.Fatalf("cancelled sandbox: %+v %v", sb, err)
			}
			// The resumed sandbox may reuse the freed VMID: only a VM naming
			// the victim is a leak.
			if vm, ok := d.Sim.Dump().VMs[victim.VMID]; ok && strings.Contains(vm.Config["description"], victim.ID) {
				t.Fatalf("VM %d of the cancelled sandbox is still there", victim.VMID)
			}
			if how == "session resume" {
				x, _ := c.Session(ctx, "s")
				sb, err := c.WaitSandbox(ctx, x.Sandbox, 10*time.Millisecond)
				if err != nil || sb.State != api.StateRunning {
					t.Fatalf("resumed sandbox %+v %v", sb, err)
				}
			}
			if rep, err := c.Reconcile(ctx, true); err != nil || len(rep.Orphans) != 0 {
				t.Fatalf("orphans %+v %v", rep, err)
			}
			l, _ := c.Events(ctx, victim.ID, 0, 0)
			var msgs []string
			for _, e := range l.Events {
				msgs = append(msgs, e.Message)
			}
			all := strings.Join(msgs, "\n")
			if strings.Contains(all, "prune will retry") || strings.Contains(all, "no IPv4 address") {
				t.Fatalf("misleading event:\n%s", all)
			}
		})
	}
}

// Defect 3: a destroy whose qmdestroy task fails must leave the workspace
// attached in Proxmox and in the database alike, and a retry finishes it.
func TestFailedDestroyKeepsWorkspaceAttached(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "keep", Size: "1G"}); err != nil {
		t.Fatal(err)
	}
	vol := holderVol(t, d, c, "keep")
	write(t, d, vol, "/work/notes", "precious")
	sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "doomed", Profile: "yolo-workspace", Workspace: "keep"})
	if err != nil {
		t.Fatal(err)
	}
	if sb, err = c.WaitSandbox(ctx, sb.Name, 10*time.Millisecond); err != nil || sb.State != api.StateRunning {
		t.Fatalf("%+v %v", sb, err)
	}
	d.Sim.FailTask("qmdestroy", "", "unable to remove VM: injected")
	_, err = c.Destroy(ctx, "doomed", false)
	wantCode(t, err, http.StatusBadGateway, api.CodeProxmox)
	got, _ := c.Sandbox(ctx, sb.ID)
	w, _ := c.Workspace(ctx, "keep")
	cfg := d.Sim.Dump().VMs[sb.VMID].Config
	if got.State != api.StateDestroying || w.AttachedSandbox != "doomed" || volOf(cfg["scsi1"]) != vol {
		t.Fatalf("after the failed destroy: sandbox %s, workspace attached to %q, VM scsi1 %q (want DESTROYING, doomed, %s)", got.State, w.AttachedSandbox, cfg["scsi1"], vol)
	}
	if _, err := c.Start(ctx, "doomed"); err == nil {
		t.Fatal("a DESTROYING sandbox started")
	}
	d.Sim.ClearFaults()
	if got, err = c.Destroy(ctx, "doomed", false); err != nil || got.State != api.StateDestroyed {
		t.Fatalf("retry: %+v %v", got, err)
	}
	if w, _ = c.Workspace(ctx, "keep"); w.AttachedSandbox != "" || read(t, d, vol, "/work/notes") != "precious" {
		t.Fatalf("workspace after destroy: %+v %q", w, read(t, d, vol, "/work/notes"))
	}
}

// Defect 4: a crash between the attach claim (journaled first) and the
// Proxmox config write used to leave a claim without the disk, forever.
func TestInterruptedAttachIsFinishedByReconcile(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	sb := create(t, c, "host")
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "late", Size: "1G"}); err != nil {
		t.Fatal(err)
	}
	vol := holderVol(t, d, c, "late")
	// What AttachWorkspace has written when agentd dies before Proxmox is asked.
	st := d.Agent.Store
	w, err := st.LookupWorkspace(ctx, "late")
	if err != nil {
		t.Fatal(err)
	}
	prev := *w
	w.AttachedSandbox, w.AttachKey, w.Step = sb.ID, "scsi1", "attach"
	if err := st.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.claimed", Message: "test"}); err != nil {
		t.Fatal(err)
	}
	rep, err := c.Reconcile(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	var acts []string
	for _, a := range rep.Actions {
		acts = append(acts, a.Sandbox+":"+a.Action)
	}
	if strings.Join(acts, ",") != "host:workspace_attached" {
		t.Fatalf("actions %v", acts)
	}
	if got := volOf(d.Sim.Dump().VMs[sb.VMID].Config["scsi1"]); got != vol {
		t.Fatalf("scsi1 %q, want %s", got, vol)
	}
	if w, _ = st.LookupWorkspace(ctx, "late"); w.Step != "" || w.AttachedSandbox != sb.ID {
		t.Fatalf("workspace row %+v", w)
	}
	// The same for a detach interrupted after its journal entry.
	prev = *w
	w.Step = "detach"
	if err := st.SaveWorkspace(ctx, w, prev, store.Event{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got := d.Sim.Dump().VMs[sb.VMID].Config["scsi1"]; got != "" {
		t.Fatalf("scsi1 %q after the finished detach", got)
	}
	if w, _ = st.LookupWorkspace(ctx, "late"); w.AttachedSandbox != "" || w.Step != "" {
		t.Fatalf("workspace row %+v", w)
	}
}

// Defect 5: session delete racing resume answered 500; now one wins and the
// other gets 409 (or 404 once the session is gone), never a 5xx.
func TestSessionDeleteRacesResume(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	const n = 6
	for i := 0; i < n; i++ {
		if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: fmt.Sprintf("rw%d", i), Size: "1G"}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CreateSession(ctx, api.CreateSessionRequest{Name: fmt.Sprintf("rs%d", i), Profile: "yolo-workspace", Workspace: fmt.Sprintf("rw%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4*n)
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("rs%d", i)
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, err := c.StopSession(ctx, name)
			errs <- err
			_, err = c.ResumeSession(ctx, name)
			errs <- err
		}()
		go func() { defer wg.Done(); _, err := c.DeleteSession(ctx, name); errs <- err }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err == nil || api.IsCode(err, api.CodeConflict) || api.IsCode(err, api.CodeInvalidState) || client.IsNotFound(err) || api.IsCode(err, api.CodeAttached) {
			continue
		}
		t.Errorf("unexpected answer: %v", err)
	}
	// Whatever won, nothing is left running for a deleted session.
	for i := 0; i < n; i++ {
		if x, err := c.Session(ctx, fmt.Sprintf("rs%d", i)); err == nil {
			t.Logf("session %s survived (resume won): %s", x.Name, x.State)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		rows, _ := d.Agent.Store.Sandboxes(ctx, store.Filter{})
		live := 0
		for _, sb := range rows {
			if ses, err := d.Agent.Store.SessionOfSandbox(ctx, sb.ID); err != nil || ses.State == store.SessionDeleted {
				if sb.State != api.StateDestroyed {
					live++
				}
			}
		}
		if live == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sandboxes of deleted sessions still live", live)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Defect 6: operations on a provisioning sandbox answer at once; nothing
// waits behind the worker.
func TestProvisioningSandboxAnswersAtOnce(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	d.Sim.HangTask("qmstart", "")
	ctx := tctx(t)
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "slow", Profile: "yolo-ephemeral"}); err != nil {
		t.Fatal(err)
	}
	waitStep(t, c, "slow", func(sb *api.Sandbox) bool { return sb.State == api.StateBooting })
	// The start task hangs for ever: a call that waited on it would hit
	// this deadline instead of answering.
	quick, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.Touch(quick, "slow"); err != nil {
		t.Fatalf("touch: %v", err)
	}
	_, err := c.Renew(quick, "slow", "1h")
	wantCode(t, err, http.StatusConflict, api.CodeInvalidState)
	if !strings.Contains(err.Error(), "BOOTING") {
		t.Fatalf("refusal does not name the state: %v", err)
	}
	_, err = c.Stop(quick, "slow")
	wantCode(t, err, http.StatusConflict, api.CodeInvalidState)
	sb, err := c.Destroy(quick, "slow", true)
	if err != nil || sb.State != api.StateDestroying {
		t.Fatalf("destroy --force: %+v %v", sb, err)
	}
	if quick.Err() != nil {
		t.Fatal("an operation waited for the provisioning worker")
	}
	d.Sim.ClearFaults()
	if sb, err = c.WaitSandbox(ctx, sb.ID, 10*time.Millisecond); err != nil || sb.State != api.StateDestroyed {
		t.Fatalf("%+v %v", sb, err)
	}
}

// Defect 8: a forced cancel is reported as what it was.
func TestForcedCancelIsReportedAsSuch(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	d.Sim.HangTask("qmstart", "")
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "cx", Profile: "yolo-ephemeral"}); err != nil {
		t.Fatal(err)
	}
	sb := waitStep(t, c, "cx", func(sb *api.Sandbox) bool { return sb.State == api.StateBooting })
	if _, err := c.Destroy(ctx, "cx", true); err != nil {
		t.Fatal(err)
	}
	d.Sim.ClearFaults()
	if _, err := c.WaitSandbox(ctx, sb.ID, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	l, _ := c.Events(ctx, sb.ID, 0, 0)
	var all []string
	for _, e := range l.Events {
		all = append(all, e.Kind+": "+e.Message)
	}
	text := strings.Join(all, "\n")
	if !strings.Contains(text, "destroy --force by request at step start") || strings.Contains(text, "no IPv4 address") {
		t.Fatalf("events:\n%s", text)
	}
	if !strings.Contains(text, "configured (tags, ") {
		t.Fatalf("the configure event does not say what was configured:\n%s", text)
	}
}

// A crash between a resume's new sandbox and the session's pointer to it:
// the restart adopts the sandbox instead of leaving it running unowned.
func TestInterruptedResumeIsAdopted(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "rw", Size: "1G"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSession(ctx, api.CreateSessionRequest{Name: "alice", Profile: "yolo-workspace", Workspace: "rw"}); err != nil {
		t.Fatal(err)
	}
	x, err := c.ResumeSession(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	st := d.Agent.Store
	row, err := st.LookupSession(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	// What Resume has written when agentd dies right after CreateFor.
	sbID := row.SandboxID
	row.SandboxID = ""
	if err := st.SaveSession(ctx, row, sbID, store.Event{}); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	c = tcpClient(t, d, d.Info.Token)
	got, err := c.Session(ctx, "alice")
	if err != nil || got.Sandbox != x.Sandbox {
		t.Fatalf("after restart: %+v %v (want sandbox %s)", got, err, x.Sandbox)
	}
	// And stopping the session really destroys it.
	if _, err := c.StopSession(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if sb, err := c.WaitSandbox(ctx, sbID, 10*time.Millisecond); err != nil || sb.State != api.StateDestroyed {
		t.Fatalf("%+v %v", sb, err)
	}
}

// A workspace delete whose qmdestroy failed stays DELETING and the loop
// finishes it once Proxmox recovers; it never hangs in DELETING.
func TestFailedWorkspaceDeleteIsRetried(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	w, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "gone", Size: "1G"})
	if err != nil {
		t.Fatal(err)
	}
	d.Sim.FailTask("qmdestroy", "", "injected")
	_, err = c.DeleteWorkspace(ctx, "gone")
	wantCode(t, err, http.StatusBadGateway, api.CodeProxmox)
	if row, _ := d.Agent.Store.LookupWorkspace(ctx, w.ID); row == nil || row.State != store.WorkspaceDeleting {
		t.Fatalf("after the failed delete: %+v", row)
	}
	d.Sim.ClearFaults()
	if err := d.Manager.ProvisioningTimeouts(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Sim.Dump().VMs[w.HolderVMID]; ok {
		t.Fatal("holder still there")
	}
	if _, err := c.Workspace(ctx, "gone"); !client.IsNotFound(err) {
		t.Fatalf("workspace still live: %v", err)
	}
}
