package agent_test

// The adversarial ownership matrix of issue #14: for every operation that
// writes to Proxmox, a VM that is not provably the object's is planted at its
// VMID out of band, through the simulator, and the operation must refuse
// (409 not_owned where an answer is due), change nothing in the simulator
// (full state dump compared before and after), mark the object LOST and
// record an event. Orphan pruning must destroy only VMs this installation
// provably created.

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// plant is what is put at the object's VMID behind agentd's back.
type plant string

const (
	// (a) the object's VM deleted, another (untagged) VM created at its VMID.
	plantForeign plant = "foreign-untagged"
	// (b) a VM tagged and named like ours whose description names an id
	// this database never issued.
	plantTaggedUnknown plant = "tagged-unknown-id"
	// (c) a VM tagged and named like ours naming the right object id, but
	// created by another agentd installation (another instance id).
	plantOtherInstance plant = "other-instance"
	// (d) the object's own VM with its tag removed.
	plantTagRemoved plant = "tag-removed"
)

var allPlants = []plant{plantForeign, plantTaggedUnknown, plantOtherInstance, plantTagRemoved}

const otherInstance = "ai-0ther0ther0ther0"

// rig is an agentd with the loops off, a fake clock and a fake conntrack.
type rig struct {
	t        *testing.T
	d        *agent.Dev
	c        *client.Client
	pc       *pve.Client
	clk      *fakeClock
	instance string
}

func newRig(t *testing.T) *rig {
	d, c, clk, _ := startLoopsDev(t)
	inst, err := d.Agent.Store.InstanceID(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, d: d, c: c, pc: pveClient(t, d), clk: clk, instance: inst}
}

// plantAt puts p at vmid, where agentd's object (kind, id, name) lives.
func (o *rig) plantAt(p plant, kind owner.Kind, id, name string, vmid int) {
	t, ctx := o.t, tctx(o.t)
	t.Helper()
	vmName := name
	if kind == owner.Holder {
		vmName = "ws-" + name
	}
	cur, ok := vms(o.d)[vmid]
	if !ok {
		t.Fatalf("no VM %d to plant over", vmid)
	}
	if p == plantTagRemoved {
		// A hibernated VM is locked: its tag goes as root's skiplock would.
		lock := cur.Config["lock"]
		if lock != "" {
			if err := o.d.Sim.SetLock(vmid, ""); err != nil {
				t.Fatal(err)
			}
		}
		if err := o.pc.Configure(ctx, vmid, pve.Option{Name: "tags", Value: "prod"}); err != nil {
			t.Fatal(err)
		}
		if lock != "" {
			if err := o.d.Sim.SetLock(vmid, lock); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	if cur.Running {
		if err := o.pc.Stop(ctx, vmid); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.pc.Destroy(ctx, vmid); err != nil {
		t.Fatal(err)
	}
	cfg := map[string]string{"name": "intruder", "memory": "512", "scsi0": "local-lvm:4"}
	switch p {
	case plantTaggedUnknown:
		unknown := "sbx-0bad0bad0bad"
		if kind == owner.Holder {
			unknown = "ws-0bad0bad0bad"
		}
		cfg["name"], cfg["tags"] = vmName, kind.Tag()
		cfg["description"] = owner.Proof{Kind: kind, ID: unknown, Name: name, Instance: o.instance, VMID: vmid}.Description()
	case plantOtherInstance:
		cfg["name"], cfg["tags"] = vmName, kind.Tag()
		cfg["description"] = owner.Proof{Kind: kind, ID: id, Name: name, Instance: otherInstance, VMID: vmid}.Description()
	}
	if err := o.d.Sim.AddVM("pve", vmid, cfg, false); err != nil {
		t.Fatal(err)
	}
	if cur.Running {
		if err := o.pc.Start(ctx, vmid); err != nil {
			t.Fatal(err)
		}
	}
	// Something lives on the planted disk: a restore or a copy would show.
	write(t, o.d, volOf(vms(o.d)[vmid].Config["scsi0"]), "/theirs.txt", "not agentd's")
}

// simState is the simulator's full state without task and request noise.
type simState struct {
	VMs     map[int]pvesim.VMState
	Volumes map[string]pvesim.VolumeState
}

func (o *rig) state() simState {
	s := o.d.Sim.Dump()
	return simState{VMs: s.VMs, Volumes: s.Volumes}
}

// unchanged fails unless after equals before; with allowNew, VMs and
// volumes that did not exist before may have appeared (a legitimate new
// sandbox), everything that existed must be exactly as it was.
func unchanged(t *testing.T, before, after simState, allowNew bool) {
	t.Helper()
	var diffs []string
	for id, b := range before.VMs {
		a, ok := after.VMs[id]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("VM %d removed", id))
		case !reflect.DeepEqual(a, b):
			for k, v := range b.Config {
				if a.Config[k] != v {
					diffs = append(diffs, fmt.Sprintf("VM %d %s: %q -> %q", id, k, v, a.Config[k]))
				}
			}
			for k, v := range a.Config {
				if _, had := b.Config[k]; !had {
					diffs = append(diffs, fmt.Sprintf("VM %d %s: added %q", id, k, v))
				}
			}
			if a.Running != b.Running || !reflect.DeepEqual(a.Snapshots, b.Snapshots) {
				diffs = append(diffs, fmt.Sprintf("VM %d running %v -> %v, snapshots %v -> %v", id, b.Running, a.Running, b.Snapshots, a.Snapshots))
			}
		}
	}
	for id := range after.VMs {
		if _, ok := before.VMs[id]; !ok && !allowNew {
			diffs = append(diffs, fmt.Sprintf("VM %d created: %v", id, after.VMs[id].Config))
		}
	}
	for id, b := range before.Volumes {
		if a, ok := after.Volumes[id]; !ok {
			diffs = append(diffs, "volume "+id+" removed")
		} else if !reflect.DeepEqual(a, b) {
			diffs = append(diffs, fmt.Sprintf("volume %s: %+v -> %+v", id, b, a))
		}
	}
	for id := range after.Volumes {
		if _, ok := before.Volumes[id]; !ok && !allowNew {
			diffs = append(diffs, "volume "+id+" created")
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		t.Fatalf("the simulator changed:\n  %s", strings.Join(diffs, "\n  "))
	}
}

// noSharedVolume fails if two VMs other than its owner (a workspace's
// holder) reference one volume (issue #13 I5).
func noSharedVolume(t *testing.T, s simState) {
	t.Helper()
	users := map[string][]int{}
	for id, v := range s.VMs {
		for k, val := range v.Config {
			if !isDiskKey(k) {
				continue
			}
			vol := volOf(val)
			if vs, ok := s.Volumes[vol]; ok && vs.Owner != id && !vs.Base {
				users[vol] = append(users[vol], id)
			}
		}
	}
	for vol, ids := range users {
		if len(ids) > 1 {
			sort.Ints(ids)
			t.Fatalf("volume %s is referenced by VMs %v", vol, ids)
		}
	}
}

func isDiskKey(key string) bool {
	for _, p := range []string{"scsi", "virtio", "sata", "ide"} {
		if rest, ok := strings.CutPrefix(key, p); ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
			return true
		}
	}
	return false
}

func isNotOwned(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Status == http.StatusConflict && ae.Code == api.CodeNotOwned
}

// hasEvent reports whether an event of kind (prefix match on any of kinds)
// was recorded for the filter after id after.
func (o *rig) hasEvent(f store.EventFilter, after int64, kinds ...string) bool {
	evs, err := o.d.Agent.Store.Events(tctx(o.t), f, after, 0)
	if err != nil {
		o.t.Fatal(err)
	}
	for _, e := range evs {
		for _, k := range kinds {
			if e.Kind == k {
				return true
			}
		}
	}
	return false
}

func (o *rig) lastEventID() int64 {
	evs, err := o.d.Agent.Store.Events(tctx(o.t), store.EventFilter{}, 0, 1)
	if err != nil || len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].ID
}

func (o *rig) sandbox(ref string) *api.Sandbox {
	o.t.Helper()
	sb, err := o.c.Sandbox(tctx(o.t), ref)
	if err != nil {
		o.t.Fatal(err)
	}
	return sb
}

// settle waits until no sandbox is in flight or being destroyed.
func (o *rig) settle() {
	o.t.Helper()
	ctx := tctx(o.t)
	all, err := o.c.Sandboxes(ctx, nil)
	if err != nil {
		o.t.Fatal(err)
	}
	for _, sb := range all {
		if _, err := o.c.WaitSandbox(ctx, sb.ID, 10*time.Millisecond); err != nil {
			o.t.Fatal(err)
		}
	}
}

// sbCase is one sandbox operation of the matrix.
type sbCase struct {
	name    string
	ttl     string // lease of the sandbox (default 0: none)
	stopped bool   // the sandbox is STOPPED when the VM is planted
	ws      string // "attached": created with workspace ws; "detached": ws exists, detached
	session bool   // the sandbox is session s's (yolo-workspace, workspace ws)
	before  func(o *rig, sb *api.Sandbox)
	op      func(o *rig, sb *api.Sandbox) error
	// answer: "not_owned" (409 expected), "ok" (must succeed) or "any"
	// (a loop: its error is not an answer to anyone).
	answer string
	// want is the sandbox's state afterwards.
	want api.State
	// allowNew: the operation legitimately creates a new sandbox VM.
	allowNew bool
	// answerFor overrides answer per plant ("attached": 409 attached).
	answerFor map[plant]string
}

func sandboxCases() []sbCase {
	return []sbCase{
		{name: "start", stopped: true, answer: "not_owned", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error { _, err := o.c.Start(tctx(o.t), sb.Name); return err }},
		{name: "stop", answer: "not_owned", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error { _, err := o.c.Stop(tctx(o.t), sb.Name); return err }},
		{name: "destroy", answer: "not_owned", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error { _, err := o.c.Destroy(tctx(o.t), sb.Name, false); return err }},
		{name: "destroy-stopped", stopped: true, answer: "not_owned", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error { _, err := o.c.Destroy(tctx(o.t), sb.Name, false); return err }},
		// Force retires the row and leaves the VM alone.
		{name: "destroy-force", ws: "attached", answer: "ok", want: api.StateDestroyed,
			op: func(o *rig, sb *api.Sandbox) error { _, err := o.c.Destroy(tctx(o.t), sb.Name, true); return err }},
		{name: "attach-workspace", ws: "detached", answer: "not_owned", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error {
				_, err := o.c.AttachWorkspace(tctx(o.t), "ws", sb.Name)
				return err
			}},
		{name: "detach-workspace", ws: "attached", answer: "not_owned", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error { _, err := o.c.DetachWorkspace(tctx(o.t), "ws"); return err }},
		{name: "exec", answer: "not_owned", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error {
				_, err := o.c.Exec(tctx(o.t), sb.Name, api.ExecRequest{Command: []string{"true"}})
				return err
			}},
		{name: "snapshot-create", answer: "not_owned", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error {
				_, err := o.c.CreateSandboxSnapshot(tctx(o.t), sb.Name, api.CreateSandboxSnapshotRequest{Name: "s1"})
				return err
			}},
		{name: "snapshot-restore", stopped: true, answer: "not_owned", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error {
				_, err := o.c.RestoreSandboxSnapshot(tctx(o.t), sb.Name, "s1")
				return err
			}},
		{name: "snapshot-delete", answer: "not_owned", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error { return o.c.DeleteSandboxSnapshot(tctx(o.t), sb.Name, "s1") }},
		{name: "snapshot-list", answer: "not_owned", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error { _, err := o.c.SandboxSnapshots(tctx(o.t), sb.Name); return err }},
		{name: "hibernate", answer: "not_owned", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error { _, err := o.c.Hibernate(tctx(o.t), sb.Name); return err }},
		{name: "resize", answer: "not_owned", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error {
				_, err := o.c.Resize(tctx(o.t), sb.Name, api.ResizeRequest{Cores: 8, DiskGB: 100})
				return err
			}},
		// Revert proves the VM before it reads its snapshots, shuts it down,
		// unplugs the workspace or rolls anything back.
		{name: "revert", answer: "not_owned", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error {
				_, err := o.c.Revert(tctx(o.t), sb.Name, api.RevertRequest{})
				return err
			}},
		{name: "revert-stopped", stopped: true, answer: "not_owned", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error {
				_, err := o.c.Revert(tctx(o.t), sb.Name, api.RevertRequest{DeleteNewer: true})
				return err
			}},
		{name: "revert-workspace", ws: "attached", answer: "not_owned", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error {
				_, err := o.c.Revert(tctx(o.t), sb.Name, api.RevertRequest{})
				return err
			}},
		{name: "resume", answer: "not_owned", want: api.StateLost,
			before: func(o *rig, sb *api.Sandbox) {
				if _, err := o.c.Hibernate(tctx(o.t), sb.Name); err != nil {
					o.t.Fatal(err)
				}
			},
			op: func(o *rig, sb *api.Sandbox) error { _, err := o.c.Resume(tctx(o.t), sb.Name); return err }},
		// Database only: they must keep working, and touch nothing.
		{name: "renew", ttl: "1h", answer: "ok", want: api.StateRunning,
			op: func(o *rig, sb *api.Sandbox) error { _, err := o.c.Renew(tctx(o.t), sb.Name, "2h"); return err }},
		{name: "touch", answer: "ok", want: api.StateRunning,
			op: func(o *rig, sb *api.Sandbox) error { _, err := o.c.Touch(tctx(o.t), sb.Name); return err }},
		{name: "lease-expiry", ttl: "1h", ws: "attached", answer: "any", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error {
				o.clk.Add(61 * time.Minute)
				return o.d.Manager.LeaseGC(tctx(o.t))
			}},
		{name: "idle-stop", answer: "any", want: api.StateLost,
			before: func(o *rig, sb *api.Sandbox) {
				if err := o.d.Sim.SetCPU(sb.VMID, 0); err != nil {
					o.t.Fatal(err)
				}
				if err := o.d.Manager.IdleStop(tctx(o.t)); err != nil {
					o.t.Fatal(err)
				}
			},
			op: func(o *rig, sb *api.Sandbox) error {
				o.clk.Add(31 * time.Minute)
				return o.d.Manager.IdleStop(tctx(o.t))
			}},
		{name: "reconcile", answer: "any", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error { _, err := o.d.Manager.Reconcile(tctx(o.t), false); return err }},
		{name: "reconcile-stopped", stopped: true, answer: "any", want: api.StateLost,
			op: func(o *rig, sb *api.Sandbox) error { _, err := o.d.Manager.Reconcile(tctx(o.t), false); return err }},
		// Prune retries the destroy of FAILED/TIMEOUT rows (here: a lease
		// expiry whose Proxmox destroy failed, left TIMEOUT).
		{name: "prune-timeout", ttl: "1h", answer: "any", want: api.StateLost,
			before: func(o *rig, sb *api.Sandbox) {
				if err := o.d.Sim.FailEndpoint("DELETE", `^/nodes/pve/qemu/\d+$`, 500, "destroy exploded"); err != nil {
					o.t.Fatal(err)
				}
				o.clk.Add(61 * time.Minute)
				_ = o.d.Manager.LeaseGC(tctx(o.t))
				o.d.Sim.ClearFaults()
				if st := o.sandbox(sb.Name).State; st != api.StateTimeout {
					o.t.Fatalf("setup: %s, want TIMEOUT", st)
				}
			},
			op: func(o *rig, sb *api.Sandbox) error {
				res, err := o.c.Prune(tctx(o.t))
				if err == nil && len(res.Skipped) != 1 {
					return fmt.Errorf("prune: %+v, want the sandbox skipped", res)
				}
				return err
			}},
		// Sessions destroy with force: the row is retired, the VM left alone.
		{name: "session-stop", session: true, answer: "ok", want: api.StateDestroyed,
			op: func(o *rig, sb *api.Sandbox) error { _, err := o.c.StopSession(tctx(o.t), "s"); return err }},
		{name: "session-delete", session: true, answer: "ok", want: api.StateDestroyed,
			op: func(o *rig, sb *api.Sandbox) error { _, err := o.c.DeleteSession(tctx(o.t), "s"); return err }},
		// The old sandbox is retired; with (d) its VM still has the
		// workspace plugged, so the workspace stays claimed and the new
		// sandbox is refused rather than sharing the volume.
		{name: "session-resume", session: true, stopped: true, answer: "ok", want: api.StateDestroyed, allowNew: true,
			answerFor: map[plant]string{plantTagRemoved: "attached"},
			op: func(o *rig, sb *api.Sandbox) error {
				if _, err := o.c.ResumeSession(tctx(o.t), "s"); err != nil {
					return err
				}
				s, err := o.c.WaitSession(tctx(o.t), "s", 10*time.Millisecond)
				if err == nil && (s.Sandbox == sb.Name || s.State != string(api.StateRunning)) {
					err = fmt.Errorf("session after resume: %+v", s)
				}
				return err
			}},
	}
}

// TestOwnershipSandboxOps: every sandbox operation × every plant.
func TestOwnershipSandboxOps(t *testing.T) {
	for _, tc := range sandboxCases() {
		for _, p := range allPlants {
			t.Run(tc.name+"/"+string(p), func(t *testing.T) {
				o := newRig(t)
				ctx := tctx(t)
				var sb *api.Sandbox
				switch {
				case tc.session:
					if _, err := o.c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "ws", Size: "5G"}); err != nil {
						t.Fatal(err)
					}
					if _, err := o.c.CreateSession(ctx, api.CreateSessionRequest{Name: "s", Profile: "yolo-workspace", Workspace: "ws"}); err != nil {
						t.Fatal(err)
					}
					sb = o.sandbox(resume(t, o.c, "s").Sandbox)
				default:
					req := api.CreateSandboxRequest{Name: "mine", Profile: "yolo-ephemeral", TTL: tc.ttl}
					if req.TTL == "" {
						req.TTL = "0"
					}
					if tc.ws != "" {
						if _, err := o.c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "ws", Size: "5G"}); err != nil {
							t.Fatal(err)
						}
					}
					if tc.ws == "attached" {
						req.Profile, req.Workspace, req.Keepalive = "yolo-workspace", "ws", ptr(false)
					}
					created, err := o.c.CreateSandbox(ctx, req)
					if err != nil {
						t.Fatal(err)
					}
					if sb, err = o.c.WaitSandbox(ctx, created.Name, 10*time.Millisecond); err != nil || sb.State != api.StateRunning {
						t.Fatalf("setup: %+v %v", sb, err)
					}
				}
				if tc.stopped {
					if _, err := o.c.Stop(ctx, sb.Name); err != nil {
						t.Fatal(err)
					}
				}
				// RUNNING is committed before the provisioning worker is gone,
				// and the loops skip a sandbox whose worker still runs (lease
				// GC would leave it RUNNING): on a loaded machine the worker
				// can outlive WaitSandbox's answer.
				o.d.Manager.Wait(sb.ID)
				if tc.before != nil {
					tc.before(o, sb)
				}
				o.plantAt(p, owner.Sandbox, sb.ID, sb.Name, sb.VMID)
				before, mark := o.state(), o.lastEventID()
				err := tc.op(o, sb)
				o.settle()
				after := o.state()
				answer := tc.answer
				if a, ok := tc.answerFor[p]; ok {
					answer = a
				}
				switch answer {
				case "not_owned":
					if !isNotOwned(err) {
						t.Fatalf("got %v, want 409 not_owned", err)
					}
				case "attached":
					if !api.IsCode(err, api.CodeAttached) {
						t.Fatalf("got %v, want 409 attached", err)
					}
				case "ok":
					if err != nil {
						t.Fatalf("got %v, want success", err)
					}
				}
				unchanged(t, before, after, tc.allowNew)
				noSharedVolume(t, after)
				got := o.sandbox(sb.ID)
				if got.State != tc.want {
					t.Fatalf("sandbox is %s (%s), want %s", got.State, got.Error, tc.want)
				}
				f := store.EventFilter{SandboxID: sb.ID}
				switch tc.want {
				case api.StateLost:
					if !o.hasEvent(f, mark, "sandbox.not_owned") {
						t.Fatal("no sandbox.not_owned event")
					}
					if !strings.Contains(got.Error, "not provably ours") {
						t.Fatalf("error %q does not say why", got.Error)
					}
				case api.StateDestroyed:
					// Retired, VM left alone: the event must say so and why.
					evs, _ := o.d.Agent.Store.Events(ctx, f, mark, 0)
					found := false
					for _, e := range evs {
						if e.Kind == "sandbox.destroy_forced" && strings.Contains(e.Message, "left alone") && strings.Contains(e.Message, fmt.Sprintf("VM %d is not provably ours", sb.VMID)) {
							found = true
						}
					}
					if !found {
						t.Fatalf("no destroy_forced event naming the cause: %+v", evs)
					}
				}
				if tc.ws != "" || tc.session {
					w, err := o.c.Workspace(ctx, "ws")
					if err != nil {
						t.Fatal(err)
					}
					if w.State != store.WorkspaceReady {
						t.Fatalf("workspace is %s: the holder was never touched", w.State)
					}
					// Our VM without its tag still has the volume plugged: a
					// retired row must not free the workspace for another VM.
					if p == plantTagRemoved && got.State == api.StateDestroyed {
						if w.AttachedSandbox != sb.Name {
							t.Fatalf("workspace released while VM %d still references it: %+v", sb.VMID, w)
						}
						// Nor does a detach release it (nor unplug the VM).
						before := o.state()
						_, err := o.c.DetachWorkspace(ctx, "ws")
						if !api.IsCode(err, api.CodeAttached) {
							t.Fatalf("detach from a retired row whose VM still has the disk: %v, want 409 attached", err)
						}
						unchanged(t, before, o.state(), false)
					}
				}
			})
		}
	}
}

// wsCase is one workspace operation of the matrix.
type wsCase struct {
	name string
	// prep runs before the plant (the holder is still ours).
	prep func(o *rig, w *api.Workspace)
	// afterPlant runs after the plant, before the state is taken.
	afterPlant func(o *rig, w *api.Workspace)
	op         func(o *rig, w *api.Workspace) error
	answer     string // "not_owned" or "ok"
	lost       bool   // the workspace must be LOST afterwards
	check      func(o *rig, w *api.Workspace)
}

func workspaceCases() []wsCase {
	snap := func(o *rig, w *api.Workspace) {
		if _, err := o.c.CreateSnapshot(tctx(o.t), w.Name, api.CreateSnapshotRequest{Name: "s1"}); err != nil {
			o.t.Fatal(err)
		}
	}
	// The planted VM has a snapshot of the same name, and data written after it.
	theirSnap := func(o *rig, w *api.Workspace) {
		ctx := tctx(o.t)
		if len(vms(o.d)[w.HolderVMID].Snapshots) == 0 {
			if err := o.pc.CreateSnapshot(ctx, w.HolderVMID, "s1", ""); err != nil {
				o.t.Fatal(err)
			}
		}
		write(o.t, o.d, volOf(vms(o.d)[w.HolderVMID].Config["scsi0"]), "/after-s1.txt", "theirs")
	}
	theirData := func(o *rig, w *api.Workspace) {
		if got := read(o.t, o.d, volOf(vms(o.d)[w.HolderVMID].Config["scsi0"]), "/after-s1.txt"); got != "theirs" {
			o.t.Fatalf("the planted VM's disk was rolled back: %q", got)
		}
	}
	mineSandbox := func(o *rig, w *api.Workspace) { create(o.t, o.c, "mine") }
	return []wsCase{
		{name: "snapshot-create", answer: "not_owned", lost: true,
			op: func(o *rig, w *api.Workspace) error {
				_, err := o.c.CreateSnapshot(tctx(o.t), w.Name, api.CreateSnapshotRequest{Name: "s2"})
				return err
			}},
		{name: "snapshot-restore", prep: snap, afterPlant: theirSnap, answer: "not_owned", lost: true, check: theirData,
			op: func(o *rig, w *api.Workspace) error {
				_, err := o.c.RestoreSnapshot(tctx(o.t), w.Name, "s1")
				return err
			}},
		{name: "snapshot-delete", prep: snap, afterPlant: theirSnap, answer: "not_owned", lost: true,
			op: func(o *rig, w *api.Workspace) error { return o.c.DeleteSnapshot(tctx(o.t), w.Name, "s1") }},
		{name: "snapshot-list", afterPlant: theirSnap, answer: "not_owned", lost: true,
			op: func(o *rig, w *api.Workspace) error { _, err := o.c.Snapshots(tctx(o.t), w.Name); return err }},
		{name: "fork", answer: "not_owned", lost: true,
			op: func(o *rig, w *api.Workspace) error {
				_, err := o.c.ForkWorkspace(tctx(o.t), w.Name, api.ForkRequest{Name: "copy"})
				return err
			}},
		{name: "fork-from-snapshot", prep: snap, afterPlant: theirSnap, answer: "not_owned", lost: true,
			op: func(o *rig, w *api.Workspace) error {
				_, err := o.c.ForkWorkspace(tctx(o.t), w.Name, api.ForkRequest{Name: "copy", FromSnapshot: "s1"})
				return err
			}},
		{name: "resize", answer: "not_owned", lost: true,
			op: func(o *rig, w *api.Workspace) error {
				_, err := o.c.ResizeWorkspace(tctx(o.t), w.Name, api.ResizeWorkspaceRequest{Size: "10G"})
				return err
			}},
		{name: "delete", answer: "not_owned", lost: true,
			op: func(o *rig, w *api.Workspace) error { _, err := o.c.DeleteWorkspace(tctx(o.t), w.Name); return err }},
		{name: "attach", prep: mineSandbox, answer: "not_owned", lost: true,
			op: func(o *rig, w *api.Workspace) error {
				_, err := o.c.AttachWorkspace(tctx(o.t), w.Name, "mine")
				return err
			},
			check: func(o *rig, w *api.Workspace) {
				if sb := o.sandbox("mine"); sb.State != api.StateRunning || sb.Workspace != "" {
					o.t.Fatalf("sandbox after a refused attach: %+v", sb)
				}
			}},
		// sandbox create --workspace: refused, or (asynchronously) FAILED
		// with its own VM cleaned up; never the planted disk attached.
		{name: "sandbox-create-workspace", answer: "not_owned", lost: true,
			op: func(o *rig, w *api.Workspace) error {
				sb, err := o.c.CreateSandbox(tctx(o.t), api.CreateSandboxRequest{Name: "new", Profile: "yolo-workspace", Workspace: w.Name})
				if err != nil {
					return err
				}
				return o.failedNotOwned(sb.Name)
			}},
		{name: "session-create", answer: "ok",
			op: func(o *rig, w *api.Workspace) error {
				_, err := o.c.CreateSession(tctx(o.t), api.CreateSessionRequest{Name: "s", Profile: "yolo-workspace", Workspace: w.Name})
				return err
			}},
		{name: "session-resume", answer: "not_owned", lost: true,
			prep: func(o *rig, w *api.Workspace) {
				if _, err := o.c.CreateSession(tctx(o.t), api.CreateSessionRequest{Name: "s", Profile: "yolo-workspace", Workspace: w.Name}); err != nil {
					o.t.Fatal(err)
				}
			},
			op: func(o *rig, w *api.Workspace) error {
				s, err := o.c.ResumeSession(tctx(o.t), "s")
				if err != nil {
					return err
				}
				return o.failedNotOwned(s.Sandbox)
			}},
		{name: "reconcile", answer: "ok", lost: true,
			op: func(o *rig, w *api.Workspace) error { _, err := o.d.Manager.Reconcile(tctx(o.t), false); return err }},
		{name: "check", answer: "ok",
			op: func(o *rig, w *api.Workspace) error {
				res, err := o.c.CheckWorkspace(tctx(o.t), w.Name)
				if err == nil && (res.OK || !strings.Contains(fmt.Sprint(res.Findings), "holder_not_owned")) {
					err = fmt.Errorf("check: %+v", res)
				}
				return err
			}},
	}
}

// failedNotOwned waits for an accepted create to settle: it must be FAILED
// because the holder is not provably ours, and is returned as that 409.
func (o *rig) failedNotOwned(ref string) error {
	sb, err := o.c.WaitSandbox(tctx(o.t), ref, 10*time.Millisecond)
	if err != nil {
		return err
	}
	if sb.State != api.StateFailed || !strings.Contains(sb.Error, "not provably ours") {
		return fmt.Errorf("sandbox %s is %s (%s), want FAILED on the holder's proof", sb.Name, sb.State, sb.Error)
	}
	return api.Errorf(http.StatusConflict, api.CodeNotOwned, "%s", sb.Error)
}

// TestOwnershipWorkspaceOps: every workspace operation × every plant at the
// holder's VMID.
func TestOwnershipWorkspaceOps(t *testing.T) {
	for _, tc := range workspaceCases() {
		for _, p := range allPlants {
			t.Run(tc.name+"/"+string(p), func(t *testing.T) {
				o := newRig(t)
				ctx := tctx(t)
				w, err := o.c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "ws", Size: "5G"})
				if err != nil {
					t.Fatal(err)
				}
				if tc.prep != nil {
					tc.prep(o, w)
				}
				o.plantAt(p, owner.Holder, w.ID, w.Name, w.HolderVMID)
				if tc.afterPlant != nil {
					tc.afterPlant(o, w)
				}
				before, mark := o.state(), o.lastEventID()
				err = tc.op(o, w)
				o.settle()
				after := o.state()
				switch tc.answer {
				case "not_owned":
					if !isNotOwned(err) {
						t.Fatalf("got %v, want 409 not_owned", err)
					}
				case "ok":
					if err != nil {
						t.Fatalf("got %v, want success", err)
					}
				}
				// A create may have cloned (and then removed) its own VM:
				// nothing new may be left.
				unchanged(t, before, after, false)
				noSharedVolume(t, after)
				if tc.check != nil {
					tc.check(o, w)
				}
				got, err := o.c.Workspace(ctx, w.ID)
				if err != nil {
					t.Fatal(err)
				}
				if tc.lost {
					if got.State != store.WorkspaceLost || !strings.Contains(got.Error, "not provably ours") {
						t.Fatalf("workspace is %s (%s), want LOST", got.State, got.Error)
					}
					if !o.hasEvent(store.EventFilter{Workspace: w.Name}, mark, "workspace.not_owned") {
						t.Fatal("no workspace.not_owned event")
					}
					// And LOST sticks: no later operation reaches the VM.
					before = o.state()
					_, err1 := o.c.ResizeWorkspace(ctx, w.Name, api.ResizeWorkspaceRequest{Size: "20G"})
					_, err2 := o.c.DeleteWorkspace(ctx, w.Name)
					_, err3 := o.c.CreateSnapshot(ctx, w.Name, api.CreateSnapshotRequest{Name: "later"})
					for _, err := range []error{err1, err2, err3} {
						var ae *api.Error
						if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
							t.Fatalf("on a LOST workspace: %v, want a 409", err)
						}
					}
					unchanged(t, before, o.state(), false)
				}
			})
		}
	}
}

// TestOwnershipOrphanPrune: prune --orphans destroys only what this
// installation provably created and lost track of.
func TestOwnershipOrphanPrune(t *testing.T) {
	o := newRig(t)
	ctx := tctx(t)
	live := create(t, o.c, "live")
	gone := create(t, o.c, "gone")
	w, err := o.c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "ws", Size: "5G"})
	if err != nil {
		t.Fatal(err)
	}
	dw, err := o.c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "dead", Size: "5G"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.c.Destroy(ctx, "gone", false); err != nil {
		t.Fatal(err)
	}
	if _, err := o.c.DeleteWorkspace(ctx, "dead"); err != nil {
		t.Fatal(err)
	}
	sbProof := func(id, name, inst string, vmid int) string {
		return owner.Proof{Kind: owner.Sandbox, ID: id, Name: name, Instance: inst, VMID: vmid}.Description()
	}
	add := func(vmid int, cfg map[string]string) {
		t.Helper()
		cfg["memory"] = "512"
		if err := o.d.Sim.AddVM("pve", vmid, cfg, false); err != nil {
			t.Fatal(err)
		}
	}
	keep := map[int]string{}
	// (b) tagged, naming an id this database never issued.
	add(800, map[string]string{"name": "stranger", "tags": "agentlab", "description": sbProof("sbx-0bad0bad0bad", "stranger", o.instance, 800)})
	keep[800] = "unknown id"
	// (c) another installation's VM naming our destroyed sandbox's id, at
	// another VMID and at the very VMID it had.
	add(801, map[string]string{"name": "gone", "tags": "agentlab", "description": sbProof(gone.ID, "gone", otherInstance, 801)})
	keep[801] = "other instance"
	// An out-of-band copy (qm clone copies description and tags) of a live
	// sandbox, and of one of our holders.
	if err := o.pc.Clone(ctx, live.VMID, 802, pve.CloneOptions{Full: true}); err != nil {
		t.Fatal(err)
	}
	keep[802] = "copy of a live sandbox"
	if err := o.pc.Clone(ctx, w.HolderVMID, 803, pve.CloneOptions{Full: true}); err != nil {
		t.Fatal(err)
	}
	keep[803] = "copy of a holder"
	// A copy of the destroyed sandbox at another VMID (made before it went).
	add(804, map[string]string{"name": "gone", "tags": "agentlab", "description": sbProof(gone.ID, "gone", o.instance, 804)})
	keep[804] = "copy of a destroyed sandbox"
	// A holder of ours whose workspace row is deleted: it owns data.
	add(dw.HolderVMID, map[string]string{"name": "ws-dead", "tags": "agentlab-workspace",
		"description": owner.Proof{Kind: owner.Holder, ID: dw.ID, Name: "dead", Instance: o.instance, VMID: dw.HolderVMID}.Description()})
	keep[dw.HolderVMID] = "our orphaned holder"
	// Untagged, unknown: not even a candidate.
	add(805, map[string]string{"name": "pet"})
	keep[805] = "untagged foreign"
	// The one provable orphan: our destroyed sandbox's VM back at its VMID.
	add(gone.VMID, map[string]string{"name": "gone", "tags": "agentlab", "description": sbProof(gone.ID, "gone", o.instance, gone.VMID)})

	orphans, err := o.c.Orphans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	owners := map[int]string{}
	for _, x := range orphans {
		owners[x.VMID] = x.Kind + ":" + x.Owner
	}
	want := map[int]string{800: "sandbox:foreign", 801: "sandbox:foreign", 802: "sandbox:foreign", 803: "workspace-holder:foreign",
		804: "sandbox:foreign", dw.HolderVMID: "workspace-holder:this-agent", gone.VMID: "sandbox:this-agent"}
	if !reflect.DeepEqual(owners, want) {
		t.Fatalf("orphans %v, want %v", owners, want)
	}
	before := o.state()
	// Dry run and another node: nothing changes.
	for _, req := range []api.PruneRequest{{Orphans: true, DryRun: true}, {Orphans: true, Node: "elsewhere"}} {
		res, err := o.c.PruneWith(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if req.DryRun && (len(res.Orphans) != 1 || res.Orphans[0].VMID != gone.VMID) {
			t.Fatalf("dry run lists %+v", res.Orphans)
		}
		unchanged(t, before, o.state(), false)
	}
	res, err := o.c.PruneWith(ctx, api.PruneRequest{Orphans: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Orphans) != 1 || res.Orphans[0].VMID != gone.VMID {
		t.Fatalf("pruned %+v", res.Orphans)
	}
	left := vms(o.d)
	for vmid, why := range keep {
		if _, ok := left[vmid]; !ok {
			t.Errorf("VM %d (%s) was destroyed", vmid, why)
		}
	}
	for _, vmid := range []int{live.VMID, w.HolderVMID} {
		if _, ok := left[vmid]; !ok {
			t.Errorf("live VM %d destroyed", vmid)
		}
	}
	if _, ok := left[gone.VMID]; ok {
		t.Error("the provable orphan was kept")
	}
	// Everything else exactly as it was.
	delete(before.VMs, gone.VMID)
	after := o.state()
	for id := range before.Volumes {
		if before.Volumes[id].Owner == gone.VMID {
			delete(before.Volumes, id)
		}
	}
	unchanged(t, before, after, false)
}

// TestOwnershipUntaggedOrphanAfterClone: destroy --force while the clone task
// runs; the clone lands afterwards (untagged: the tag is set by the first
// config write). Reconcile must list it as this agent's, and prune must
// remove it; nothing else.
func TestOwnershipUntaggedOrphanAfterClone(t *testing.T) {
	o := newRig(t)
	ctx := tctx(t)
	o.d.Sim.HangTask("qmclone", "")
	if _, err := o.c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "late", Profile: "yolo-ephemeral"}); err != nil {
		t.Fatal(err)
	}
	// The step is recorded before the clone request: wait for the task too.
	var running string
	var sb *api.Sandbox
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if sb = o.sandbox("late"); sb.VMID != 0 && sb.Step == "clone" {
			for _, task := range o.d.Sim.Dump().Tasks {
				if task.Type == "qmclone" && task.Running {
					running = task.UPID
				}
			}
			if running != "" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("never reached the clone: %+v", sb)
		}
	}
	late, err := o.c.Destroy(ctx, "late", true)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := o.c.WaitSandbox(ctx, late.ID, 10*time.Millisecond); err != nil || got.State != api.StateDestroyed {
		t.Fatalf("%+v %v", got, err)
	}
	// A reconcile between the destroy and the end of the clone.
	if _, err := o.d.Manager.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	// The clone task finishes now, as PVE's would: a VM at the VMID with
	// the name and description of the clone request, and no tag.
	o.d.Sim.ClearFaults()
	proof := owner.Proof{Kind: owner.Sandbox, ID: sb.ID, Name: "late", Instance: o.instance, VMID: sb.VMID}
	if err := o.pc.Clone(ctx, pvesim.FixtureTemplateID, sb.VMID, pve.CloneOptions{Name: "late", Description: proof.Description()}); err != nil {
		t.Fatal(err)
	}
	if tags := vms(o.d)[sb.VMID].Config["tags"]; tags != "" {
		t.Fatalf("setup: clone tagged %q", tags)
	}
	// Foreign neighbours that must stay.
	if err := o.d.Sim.AddVM("pve", 810, map[string]string{"name": "late", "memory": "512",
		"description": owner.Proof{Kind: owner.Sandbox, ID: sb.ID, Name: "late", Instance: otherInstance, VMID: 810}.Description()}, false); err != nil {
		t.Fatal(err)
	}
	rep, err := o.c.Reconcile(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	var found *api.Orphan
	for i := range rep.Orphans {
		if rep.Orphans[i].VMID == sb.VMID {
			found = &rep.Orphans[i]
		}
		if rep.Orphans[i].VMID == 810 && rep.Orphans[i].Owner != api.OwnerForeign {
			t.Fatalf("another instance's VM classified %+v", rep.Orphans[i])
		}
	}
	if found == nil || found.Owner != api.OwnerThisAgent || found.SandboxID != sb.ID {
		t.Fatalf("the late clone is not listed as ours: %+v (orphans %+v)", found, rep.Orphans)
	}
	res, err := o.c.PruneWith(ctx, api.PruneRequest{Orphans: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Orphans) != 1 || res.Orphans[0].VMID != sb.VMID {
		t.Fatalf("pruned %+v, kept %+v", res.Orphans, res.Kept)
	}
	left := vms(o.d)
	if _, ok := left[sb.VMID]; ok {
		t.Fatal("late clone kept")
	}
	if _, ok := left[810]; !ok {
		t.Fatal("VM 810 destroyed")
	}
}
