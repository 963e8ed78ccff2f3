package agent_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// nodeLostProfiles writes a keep and a recreate profile with a template on
// each of the cluster's nodes.
func nodeLostProfiles(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, policy := range map[string]string{"keeper": "keep", "phoenix": "recreate"} {
		y := "name: " + name + "\ntemplate_vmid: 9000\ntemplates:\n  pve2: 9001\n  pve3: 9002\nresources:\n  cores: 1\n  memory_mb: 1024\n" +
			"network:\n  mode: nat\nbehavior:\n  ttl_default: 3h\n  on_node_lost: " + policy + "\n"
		if err := os.WriteFile(filepath.Join(dir, name+".yaml"), []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNodeOffline: when a node goes offline its sandboxes become LOST and
// nothing of theirs is touched while it is unreachable (a partitioned
// node's VMs run on); a recreate profile's sandbox gets a replacement of the
// same name elsewhere. When the node is back, reconcile settles each: the
// kept one runs again, the replaced one's old VM is destroyed.
func TestNodeOffline(t *testing.T) {
	dir := t.TempDir()
	nodeLostProfiles(t, filepath.Join(dir, "profiles"))
	d, c := startDev(t, agent.DevOptions{Nodes: 3, StateDir: dir})
	ctx := tctx(t)
	mk := func(name, prof string) *api.Sandbox {
		sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: prof})
		if err != nil {
			t.Fatal(err)
		}
		if sb, err = c.WaitSandbox(ctx, sb.ID, 0); err != nil || sb.State != api.StateRunning {
			t.Fatalf("%s: %+v %v", name, sb, err)
		}
		return sb
	}
	for _, n := range []string{"pve1", "pve3"} { // everything on pve2
		if _, err := c.DrainNode(ctx, n, true); err != nil {
			t.Fatal(err)
		}
	}
	keep, phoenix, doomed := mk("keep", "keeper"), mk("phoenix", "phoenix"), mk("doomed", "keeper")
	if keep.Node != "pve2" || phoenix.Node != "pve2" || doomed.Node != "pve2" {
		t.Fatalf("placed on %s and %s, want pve2", keep.Node, phoenix.Node)
	}
	for _, n := range []string{"pve1", "pve3"} {
		if _, err := c.DrainNode(ctx, n, false); err != nil {
			t.Fatal(err)
		}
	}
	ws, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "wsx", Size: "1G", Node: "pve2"})
	if err != nil || ws.Node != "pve2" {
		t.Fatalf("workspace on pve2: %+v %v", ws, err)
	}
	before := d.Sim.Dump().VMs
	if v := before[ws.HolderVMID]; v.Node != "pve2" {
		t.Fatalf("holder %d on %s, want pve2", ws.HolderVMID, v.Node)
	}
	d.Sim.SetNodeOnline("pve2", false)
	for i := 0; i < 2; i++ { // a second cycle changes nothing more
		if _, err := d.Manager.Reconcile(ctx, false); err != nil {
			t.Fatal(err)
		}
	}
	if ws, err = c.Workspace(ctx, "wsx"); err != nil || !strings.Contains(ws.Unavailable, "node pve2 is offline") {
		t.Fatalf("workspace while pve2 is offline: %+v %v", ws, err)
	}
	got, err := c.Sandbox(ctx, keep.ID)
	if err != nil || got.State != api.StateLost || !strings.Contains(got.Error, "node pve2 is offline") {
		t.Fatalf("keep while pve2 is offline: %+v %v", got, err)
	}
	old, err := c.Sandbox(ctx, phoenix.ID)
	if err != nil || old.State != api.StateLost || old.Name == "phoenix" {
		t.Fatalf("the replaced sandbox: %+v %v", old, err)
	}
	repl, err := c.Sandbox(ctx, "phoenix")
	if err != nil || repl.ID == phoenix.ID {
		t.Fatalf("no replacement named phoenix: %+v %v", repl, err)
	}
	if repl, err = c.WaitSandbox(ctx, repl.ID, 0); err != nil || repl.State != api.StateRunning || repl.Node == "pve2" {
		t.Fatalf("replacement: %+v %v", repl, err)
	}
	// Nothing on pve2 was changed or destroyed while it was unreachable.
	for _, sb := range []*api.Sandbox{keep, phoenix} {
		v, ok := d.Sim.Dump().VMs[sb.VMID]
		if !ok || v.Node != "pve2" || !v.Running || v.Config["description"] != before[sb.VMID].Config["description"] {
			t.Fatalf("VM %d of %s changed while its node was offline: %+v", sb.VMID, sb.Name, v)
		}
	}
	// A destroy while pve2 is out is journaled, not done.
	if got, err := c.Destroy(ctx, doomed.ID, false); err != nil || got.State != api.StateDestroying {
		t.Fatalf("destroy while pve2 is offline: %+v %v", got, err)
	}
	if err := d.Manager.ProvisioningTimeouts(ctx); err != nil {
		t.Fatal(err)
	}
	d.Manager.Wait(doomed.ID)
	if _, ok := d.Sim.Dump().VMs[doomed.VMID]; !ok {
		t.Fatal("a VM on the offline node was destroyed")
	}
	d.Sim.SetNodeOnline("pve2", true)
	if _, err := d.Manager.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	if ws, err = c.Workspace(ctx, "wsx"); err != nil || ws.Unavailable != "" || ws.Volume == "" {
		t.Fatalf("workspace after pve2 is back: %+v %v", ws, err)
	}
	if got, err = c.WaitSandbox(ctx, keep.ID, 0); err != nil || got.State != api.StateRunning || got.Node != "pve2" {
		t.Fatalf("keep after pve2 is back: %+v %v", got, err)
	}
	if old, err = c.WaitSandbox(ctx, phoenix.ID, 0); err != nil || old.State != api.StateDestroyed {
		t.Fatalf("the replaced sandbox after pve2 is back: %+v %v", old, err)
	}
	if _, ok := d.Sim.Dump().VMs[phoenix.VMID]; ok {
		t.Fatalf("VM %d of the replaced sandbox was not destroyed", phoenix.VMID)
	}
	if err := d.Manager.ProvisioningTimeouts(ctx); err != nil { // the cleanup loop's retry
		t.Fatal(err)
	}
	if got, err = c.WaitSandbox(ctx, doomed.ID, 0); err != nil || got.State != api.StateDestroyed {
		t.Fatalf("the journaled destroy after pve2 is back: %+v %v", got, err)
	}
	if _, ok := d.Sim.Dump().VMs[doomed.VMID]; ok {
		t.Fatal("the journaled destroy left the VM")
	}
	_ = pvesim.FixtureTemplateID
}

// TestNodeLostRecreateAtQuota: a recreate profile's sandbox on a node that
// goes offline is replaced even at its team's quota (the lost sandbox does
// not block its own replacement, nor one of another lost sandbox); when the
// quota has no room even so, the lost sandbox stays LOST under its name with
// an event saying why, and no replacement is made.
func TestNodeLostRecreateAtQuota(t *testing.T) {
	dir := t.TempDir()
	nodeLostProfiles(t, filepath.Join(dir, "profiles"))
	d, c := startDev(t, agent.DevOptions{Nodes: 3, StateDir: dir})
	ctx := tctx(t)
	for _, n := range []string{"pve1", "pve3"} { // everything on pve2
		if _, err := c.DrainNode(ctx, n, true); err != nil {
			t.Fatal(err)
		}
	}
	var sbs []*api.Sandbox
	for _, name := range []string{"p1", "p2", "p3"} {
		sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: "phoenix"})
		if err != nil {
			t.Fatal(err)
		}
		if sb, err = c.WaitSandbox(ctx, sb.ID, 0); err != nil || sb.State != api.StateRunning || sb.Node != "pve2" {
			t.Fatalf("%s: %+v %v", name, sb, err)
		}
		sbs = append(sbs, sb)
	}
	for _, n := range []string{"pve1", "pve3"} {
		if _, err := c.DrainNode(ctx, n, false); err != nil {
			t.Fatal(err)
		}
	}
	// At quota: three sandboxes, three cores.
	if _, err := c.UpdateTeam(ctx, "default", api.UpdateTeamRequest{Quota: api.TeamQuota{Sandboxes: 3, Cores: 3}}); err != nil {
		t.Fatal(err)
	}
	d.Sim.SetNodeOnline("pve2", false)
	if _, err := d.Manager.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	for _, sb := range sbs {
		old, err := c.Sandbox(ctx, sb.ID)
		if err != nil || old.State != api.StateLost || old.Name == sb.Name {
			t.Fatalf("%s: the replaced sandbox: %+v %v", sb.Name, old, err)
		}
		repl, err := c.Sandbox(ctx, sb.Name)
		if err != nil || repl.ID == sb.ID {
			t.Fatalf("no replacement named %s: %+v %v", sb.Name, repl, err)
		}
		if repl, err = c.WaitSandbox(ctx, repl.ID, 0); err != nil || repl.State != api.StateRunning || repl.Node == "pve2" {
			t.Fatalf("replacement of %s: %+v %v", sb.Name, repl, err)
		}
	}
	tm, err := c.Team(ctx, "default")
	if err != nil || tm.Usage.Sandboxes != 3 || tm.Usage.Cores != 3 {
		t.Fatalf("usage after the replacements: %+v %v", tm.Usage, err)
	}
	// Refusal: a fourth sandbox on pve3, then pve3 goes offline with the
	// quota lowered below what the team holds.
	for _, n := range []string{"pve1", "pve2"} {
		if _, err := c.DrainNode(ctx, n, true); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.UpdateTeam(ctx, "default", api.UpdateTeamRequest{Quota: api.TeamQuota{Sandboxes: 4}}); err != nil {
		t.Fatal(err)
	}
	sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "p4", Profile: "phoenix"})
	if err != nil {
		t.Fatal(err)
	}
	if sb, err = c.WaitSandbox(ctx, sb.ID, 0); err != nil || sb.State != api.StateRunning {
		t.Fatalf("p4: %+v %v", sb, err)
	}
	if _, err := c.DrainNode(ctx, "pve1", false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateTeam(ctx, "default", api.UpdateTeamRequest{Quota: api.TeamQuota{Sandboxes: 2}}); err != nil {
		t.Fatal(err)
	}
	list, _ := c.Sandboxes(ctx, nil)
	d.Sim.SetNodeOnline(sb.Node, false)
	if _, err := d.Manager.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	got, err := c.Sandbox(ctx, sb.ID)
	if err != nil || got.State != api.StateLost || got.Name != "p4" {
		t.Fatalf("refused recreate: p4 is %+v %v, want LOST under its name", got, err)
	}
	var evs api.EventList
	if err := c.Do(ctx, "GET", "/v1/sandboxes/"+sb.ID+"/events", nil, &evs); err != nil {
		t.Fatal(err)
	}
	why := false
	for _, ev := range evs.Events {
		why = why || ev.Kind == "sandbox.not_recreated" && strings.Contains(ev.Message, "quota")
	}
	if !why {
		t.Fatalf("no sandbox.not_recreated event naming the quota: %+v", evs.Events)
	}
	if after, _ := c.Sandboxes(ctx, nil); len(after) != len(list) {
		t.Fatalf("%d sandboxes after a refused recreate, %d before", len(after), len(list))
	}
}

// TestNodeLostPoolMemberRetired: a warm-pool member that failed to build
// because its node went offline under it (the start got pveproxy's 595, the
// cleanup too) becomes LOST like every sandbox there and is left alone; when
// the node is back it is FAILED again and the pool retires it (destroyed
// with the proof), never settled into a STOPPED sandbox named after its id
// that still carries the pool marker. The chaos soak on a three-node cluster
// (seed 42 -nodes 3, I9) found that.
func TestNodeLostPoolMemberRetired(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3})
	ctx := tctx(t)
	// Members are built on agentd's node, pve1: it goes offline just as
	// the first member's VM is started.
	if err := d.Sim.BeforeRequest("POST", `^/nodes/pve1/qemu/\d+/status/start$`, func() {
		_ = d.Sim.SetNodeOnline("pve1", false)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetPool(ctx, poolProfile, api.SetPoolRequest{MinReady: intp(1), Max: intp(1)}); err != nil {
		t.Fatal(err)
	}
	var m *store.Sandbox
	for m == nil {
		rows, err := d.Store.Sandboxes(ctx, store.Filter{States: []api.State{api.StateFailed}})
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) > 0 {
			m = rows[0]
		}
		select {
		case <-ctx.Done():
			t.Fatal("no member failed to build")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if d.Sim.NodeOnline("pve1") || m.VMID == 0 || m.Name != m.ID {
		t.Fatalf("failed member %+v (pve1 online %v)", m, d.Sim.NodeOnline("pve1"))
	}
	if _, err := d.Manager.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Store.Sandbox(ctx, m.ID); err != nil || got.State != api.StateLost {
		t.Fatalf("member while pve1 is offline: %+v %v", got, err)
	}
	if _, ok := d.Sim.Dump().VMs[m.VMID]; !ok {
		t.Fatal("the member's VM was destroyed while its node was offline")
	}
	if err := d.Sim.SetNodeOnline("pve1", true); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Manager.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	// FAILED again, then retired by the pool like any member that failed
	// to build.
	for {
		got, err := d.Store.Sandbox(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State == api.StateDestroyed {
			break
		}
		if got.State != api.StateFailed && got.State != api.StateDestroying {
			t.Fatalf("member after pve1 is back: %s (%s), want FAILED until the pool retires it", got.State, got.Error)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("member after pve1 is back: %+v, never retired", got)
		case <-time.After(5 * time.Millisecond):
		}
	}
	for id, v := range d.Sim.Dump().VMs { // the pool's next member may reuse the VMID
		if strings.Contains(v.Config["description"], m.ID) {
			t.Fatalf("the retired member's VM %d is still there: %+v", id, v.Config)
		}
	}
}

// TestNodeLostUnconfiguredDestroyed: a sandbox whose clone landed as its
// node went offline (the provisioning failed at step clone, its cleanup
// too) is LOST while the node is out, its VM untouched. Its VM carries the
// description marker but not yet the tag, so the proof must stay the one
// its step allows: a destroy asked for during the outage removes the
// half-built VM once the node is back; without one the row is FAILED at
// step clone again (not a STOPPED sandbox) and a destroy then removes it. The chaos soak on a three-node cluster (seed 42 -nodes 3, I10)
// found the destroy asking for the tag, failing the proof, retiring the row
// and leaving agentd's own VM behind.
func TestNodeLostUnconfiguredDestroyed(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3})
	ctx := tctx(t)
	for _, destroy := range []bool{true, false} {
		name := fmt.Sprintf("half-%v", destroy)
		if err := d.Sim.BeforeRequest("GET", `^/nodes/pve1/tasks/[^/]*qmclone[^/]*/status$`, func() {
			_ = d.Sim.SetNodeOnline("pve1", false)
		}); err != nil {
			t.Fatal(err)
		}
		sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: "yolo-ephemeral", Node: "pve1"})
		if err != nil {
			t.Fatal(err)
		}
		if sb, err = c.WaitSandbox(ctx, sb.ID, 0); err != nil || sb.State != api.StateFailed || sb.VMID == 0 {
			t.Fatalf("%s: %+v %v, want FAILED at the clone", name, sb, err)
		}
		if v, ok := d.Sim.Dump().VMs[sb.VMID]; !ok || strings.Contains(v.Config["tags"], "agentlab") {
			t.Fatalf("%s: VM %d should exist untagged: %+v", name, sb.VMID, v)
		}
		if _, err := d.Manager.Reconcile(ctx, false); err != nil {
			t.Fatal(err)
		}
		got, err := c.Sandbox(ctx, sb.ID)
		if err != nil || got.State != api.StateLost {
			t.Fatalf("%s while pve1 is offline: %+v %v", name, got, err)
		}
		if destroy {
			if got, err = c.Destroy(ctx, sb.ID, false); err != nil || got.State != api.StateDestroying {
				t.Fatalf("%s: destroy while pve1 is offline: %+v %v", name, got, err)
			}
		}
		if _, ok := d.Sim.Dump().VMs[sb.VMID]; !ok {
			t.Fatalf("%s: VM %d destroyed while its node was offline", name, sb.VMID)
		}
		if err := d.Sim.SetNodeOnline("pve1", true); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Manager.Reconcile(ctx, false); err != nil {
			t.Fatal(err)
		}
		if err := d.Manager.ProvisioningTimeouts(ctx); err != nil { // the cleanup loop
			t.Fatal(err)
		}
		d.Manager.Wait(sb.ID)
		if !destroy {
			// FAILED again at the step it stopped at, its VM untouched;
			// a destroy then proves it as that step allows.
			got, err = c.Sandbox(ctx, sb.ID)
			if err != nil || got.State != api.StateFailed || got.Step != "clone" {
				t.Fatalf("%s after pve1 is back: %+v %v, want FAILED at step clone", name, got, err)
			}
			if _, ok := d.Sim.Dump().VMs[sb.VMID]; !ok {
				t.Fatalf("%s: VM %d destroyed though no destroy was asked for", name, sb.VMID)
			}
			if _, err := c.Destroy(ctx, sb.ID, false); err != nil {
				t.Fatal(err)
			}
		}
		if got, err = c.Sandbox(ctx, sb.ID); err != nil || got.State != api.StateDestroyed {
			t.Fatalf("%s after pve1 is back: %+v %v, want DESTROYED", name, got, err)
		}
		for id, v := range d.Sim.Dump().VMs {
			if strings.Contains(v.Config["description"], sb.ID) {
				t.Fatalf("%s: VM %d of the destroyed sandbox is still there: %+v", name, id, v.Config)
			}
		}
	}
}

// TestResumedRunReclonesAtTheCloneStep: a run stopped past the clone
// whose VM is then gone (its clean-up destroyed it and the agent died
// before saving the failure) clones again on resume, and journals the
// clone step first: when the node goes offline mid-clone and a destroy is
// asked for, the half-made VM (description, no tag yet) is proven as a
// clone and destroyed once the node is back, not taken for someone else's
// and left behind with the row retired (soak seed 43, -nodes 3, I10).
func TestResumedRunReclonesAtTheCloneStep(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	d.Sim.SlowTask("qmsnapshot", "", 2*time.Second)
	sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "again", Profile: "yolo-ephemeral", Node: "pve1"})
	if err != nil {
		t.Fatal(err)
	}
	for sb.Step != "clean_snapshot" {
		if sb, err = c.Sandbox(ctx, sb.ID); err != nil || !sb.State.InFlight() {
			t.Fatalf("before the clean snapshot: %+v %v", sb, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	d.Stop()
	pc := pveClient(t, d).On("pve1")
	for d.Sim.Dump().VMs[sb.VMID].Config["lock"] != "" {
		time.Sleep(20 * time.Millisecond)
	}
	if err := pc.Destroy(ctx, sb.VMID); err != nil {
		t.Fatal(err)
	}
	if err := d.Sim.BeforeRequest("GET", `^/nodes/pve1/tasks/[^/]*qmclone[^/]*/status$`, func() {
		_ = d.Sim.SetNodeOnline("pve1", false)
	}); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	c = tcpClient(t, d, d.Info.Token)
	if sb, err = c.WaitSandbox(ctx, sb.ID, 0); err != nil || sb.State != api.StateFailed || sb.Step != "clone" {
		t.Fatalf("resumed run with its VM gone, node lost mid-clone: %+v %v, want FAILED at step clone", sb, err)
	}
	if _, err := d.Manager.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Destroy(ctx, sb.ID, false); err != nil || got.State != api.StateDestroying {
		t.Fatalf("destroy while pve1 is offline: %+v %v", got, err)
	}
	if err := d.Sim.SetNodeOnline("pve1", true); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Manager.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := d.Manager.ProvisioningTimeouts(ctx); err != nil { // the cleanup loop
		t.Fatal(err)
	}
	d.Manager.Wait(sb.ID)
	if got, err := c.Sandbox(ctx, sb.ID); err != nil || got.State != api.StateDestroyed || strings.Contains(got.Error, "not provably ours") {
		t.Fatalf("after pve1 is back: %+v %v, want DESTROYED with its VM", got, err)
	}
	for id, v := range d.Sim.Dump().VMs {
		if strings.Contains(v.Config["description"], sb.ID) {
			t.Fatalf("VM %d of the destroyed sandbox is still there: %+v", id, v.Config)
		}
	}
}
