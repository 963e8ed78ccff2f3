package agent_test

// Attacks on the VMID allocator's burst path (ids picked under a lock, asked
// about and saved outside it, a burst going on after the last id picked):
// sandboxes, workspace holders and forks all reserve through it at once,
// while someone else keeps creating VMs at the ids the burst is about to
// reach. The claims: no VMID is ever in two rows, and no VM agentd did not
// create is cloned onto, tagged, stopped or destroyed.

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

// plantAhead arms a hook on the next n clone requests that each create a
// foreign VM (on node) at the two lowest ids above every VM now in the
// simulator: the ids a burst is about to pick. It returns the planted ids
// (read them after the burst).
func plantAhead(t *testing.T, d *agent.Dev, node string, n int) func() map[int]string {
	t.Helper()
	var mu sync.Mutex
	planted := map[int]string{}
	var arm func(left int)
	arm = func(left int) {
		if left == 0 {
			return
		}
		err := d.Sim.BeforeRequest("POST", `/qemu/\d+/clone$`, func() {
			defer arm(left - 1)
			top := 0
			for id, v := range d.Sim.Dump().VMs {
				if v.Config["template"] != "1" {
					top = max(top, id)
				}
			}
			top = max(top, 99)
			for id := top + 1; id <= top+2; id++ {
				name := fmt.Sprintf("theirs-%d", id)
				if d.Sim.AddVM(node, id, map[string]string{"name": name, "memory": "512"}, false) == nil {
					mu.Lock()
					planted[id] = name
					mu.Unlock()
				}
			}
		})
		if err != nil {
			t.Error(err)
		}
	}
	arm(n)
	return func() map[int]string {
		mu.Lock()
		defer mu.Unlock()
		out := map[int]string{}
		for k, v := range planted {
			out[k] = v
		}
		return out
	}
}

// checkVMIDs fails if any VMID is in two rows (sandboxes and workspace
// holders), a row's VMID is a planted VM's, or a planted VM was changed or
// removed.
func checkVMIDs(t *testing.T, d *agent.Dev, c *client.Client, planted map[int]string) map[int]string {
	t.Helper()
	ctx := tctx(t)
	seen := map[int]string{}
	claim := func(id int, who string) {
		if id == 0 {
			return
		}
		if prev, dup := seen[id]; dup {
			t.Errorf("VMID %d given to %s and %s", id, prev, who)
		}
		if name, ok := planted[id]; ok {
			t.Errorf("VMID %d of foreign VM %s went to %s", id, name, who)
		}
		seen[id] = who
	}
	sbs, err := c.Sandboxes(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, sb := range sbs {
		if sb.State != api.StateDestroyed {
			claim(sb.VMID, "sandbox "+sb.Name)
		}
	}
	wss, err := c.Workspaces(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range wss {
		claim(w.HolderVMID, "workspace "+w.Name)
	}
	all := d.Sim.Dump().VMs
	for id, name := range planted {
		v, ok := all[id]
		if !ok || v.Config["name"] != name || v.Config["tags"] != "" || v.Config["description"] != "" || v.Running {
			t.Errorf("foreign VM %d (%s) was touched: present %v, %+v", id, name, ok, v)
		}
	}
	return seen
}

// TestMixedBurstSkipsForeignVMsPlantedAhead: sandboxes, workspaces and forks
// reserve at once on a 3-node cluster while each clone request plants
// foreign VMs at the next ids; every object ends with its own VMID, none on
// a foreign one, and every foreign VM is left as it was.
func TestMixedBurstSkipsForeignVMsPlantedAhead(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3})
	ctx := tctx(t)
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "src", SizeGB: 1}); err != nil {
		t.Fatal(err)
	}
	planted := plantAhead(t, d, "pve2", 12)
	const nsb, nws, nfork = 12, 3, 3
	var wg sync.WaitGroup
	run := func(fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil {
				t.Error(err)
			}
		}()
	}
	for i := 0; i < nsb; i++ {
		run(func() error {
			_, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: fmt.Sprintf("m%d", i), Profile: "yolo-ephemeral"})
			return err
		})
	}
	for i := 0; i < nws; i++ {
		run(func() error {
			_, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: fmt.Sprintf("w%d", i), SizeGB: 1})
			return err
		})
	}
	for i := 0; i < nfork; i++ {
		run(func() error {
			_, err := c.ForkWorkspace(ctx, "src", api.ForkRequest{Name: fmt.Sprintf("f%d", i)})
			return err
		})
	}
	wg.Wait()
	for i := 0; i < nsb; i++ {
		sb, err := c.WaitSandbox(ctx, fmt.Sprintf("m%d", i), 10*time.Millisecond)
		if err != nil || sb.State != api.StateRunning {
			t.Fatalf("%+v %v", sb, err)
		}
	}
	p := planted()
	t.Logf("planted %v", p)
	if len(p) == 0 {
		t.Fatal("no foreign VM was planted: the attack did not run")
	}
	seen := checkVMIDs(t, d, c, p)
	if want := 1 + nsb + nws + nfork; len(seen) != want {
		t.Fatalf("%d VMIDs held, want %d: %v", len(seen), want, seen)
	}
}

// TestRestartMidBurstKeepsVMIDsDistinct: agentd restarts while a burst of
// creates is reserving and cloning (foreign VMs planted ahead of it); the
// resumed runs and the creates after the restart still never share a VMID
// nor take a foreign one.
func TestRestartMidBurstKeepsVMIDsDistinct(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3})
	ctx := tctx(t)
	planted := plantAhead(t, d, "pve3", 6)
	const n = 10
	for i := 0; i < n; i++ {
		if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: fmt.Sprintf("r%d", i), Profile: "yolo-ephemeral"}); err != nil {
			t.Fatal(err)
		}
	}
	// Restart once the burst has cloned something: some rows hold VMIDs
	// with no VM yet, others are mid-clone.
	for len(planted()) == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("no clone was requested")
		case <-time.After(2 * time.Millisecond):
		}
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	c = tcpClient(t, d, d.Info.Token)
	for i := n; i < 2*n; i++ {
		if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: fmt.Sprintf("r%d", i), Profile: "yolo-ephemeral"}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2*n; i++ {
		sb := settled(t, c, fmt.Sprintf("r%d", i))
		if sb == nil {
			t.Fatalf("sandbox r%d is gone", i)
		}
	}
	// Every VM left is a row's or a planted one: nothing half-made stays.
	seen := checkVMIDs(t, d, c, planted())
	p := planted()
	for id, v := range vms(d) {
		if _, ok := seen[id]; !ok && v.Config["template"] != "1" {
			if _, theirs := p[id]; !theirs {
				t.Errorf("VM %d is neither a row's nor foreign: %+v", id, v.Config)
			}
		}
	}
}

// TestSharedStorageOnSomeNodesPinsItsWorkspaces: a storage flagged shared
// but enabled on pve1 and pve2 only (storage.cfg "nodes") is not read by
// every node, so a sandbox with a workspace there is placed on a node that
// has the storage (its workspace's), never on pve3 where its disk cannot
// be attached.
func TestSharedStorageOnSomeNodesPinsItsWorkspaces(t *testing.T) {
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	// No loops: a reconcile cycle that read the listing before the
	// restriction would make it fresh again (the inventory's cache window).
	d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{Now: now, NoLoops: true}})
	ctx := tctx(t)
	if err := d.Sim.RestrictStorage("shared", "pve1", "pve2"); err != nil {
		t.Fatal(err)
	}
	// The inventory agentd read at start still lists the storage on every
	// node; placement reads a new one once that is old.
	skew.Store(int64(time.Minute))
	const n = 4
	for i := 0; i < n; i++ {
		if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: fmt.Sprintf("sw%d", i), Size: "1G", Node: "pve1", Storage: "shared"}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: fmt.Sprintf("s%d", i), Profile: "yolo-ephemeral", Workspace: fmt.Sprintf("sw%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		sb, err := c.WaitSandbox(ctx, fmt.Sprintf("s%d", i), 10*time.Millisecond)
		if err != nil || sb.State != api.StateRunning || sb.Node == "pve3" {
			t.Fatalf("sandbox with a workspace on storage shared by pve1 and pve2: %+v %v", sb, err)
		}
	}
}

// TestHolderCreateLostReplyLeavesNoStrayVM: the answer to a holder's create
// (and to a fork's clone) is lost: whatever agentd does next, no VM it
// made is left behind without a row that owns it.
func TestHolderCreateLostReplyLeavesNoStrayVM(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3})
	ctx := tctx(t)
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "src", SizeGB: 1}); err != nil {
		t.Fatal(err)
	}
	if err := d.Sim.LoseReply("POST", `/qemu$`, 1, false); err != nil {
		t.Fatal(err)
	}
	_, errCreate := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "lost", SizeGB: 1})
	if err := d.Sim.LoseReply("POST", `/qemu/\d+/clone$`, 1, false); err != nil {
		t.Fatal(err)
	}
	_, errFork := c.ForkWorkspace(ctx, "src", api.ForkRequest{Name: "lostfork"})
	t.Logf("create: %v; fork: %v", errCreate, errFork)
	deadline := time.Now().Add(20 * time.Second)
	for {
		stray := []int{}
		seen := checkVMIDs(t, d, c, nil)
		for id, v := range vms(d) {
			if _, ok := seen[id]; !ok && v.Config["template"] != "1" {
				stray = append(stray, id)
			}
		}
		if len(stray) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("VMs %v are no row's (rows %v)", stray, seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
