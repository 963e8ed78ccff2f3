package agent_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// TestDevCluster: on a simulated 3-node cluster (a template on every node,
// snippets on the shared storage) sandboxes spread over the nodes, each
// placement is an event naming its reason, the sandbox reports the node
// its VM is on, a pin wins and a drained node gets nothing new.
func TestDevCluster(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3})
	ctx := tctx(t)
	if got := d.Sim.Nodes(); !reflect.DeepEqual(got, []string{"pve1", "pve2", "pve3"}) {
		t.Fatalf("nodes %v", got)
	}
	seen := map[string]bool{}
	for _, name := range []string{"c1", "c2", "c3"} {
		sb := create(t, c, name)
		if sb.State != api.StateRunning {
			t.Fatalf("sandbox %s: %s %s", name, sb.State, sb.Error)
		}
		if v := d.Sim.Dump().VMs[sb.VMID]; v.Node != sb.Node || !v.Running {
			t.Fatalf("sandbox %s says node %s; its VM %d is on %s (running %v)", name, sb.Node, sb.VMID, v.Node, v.Running)
		}
		seen[sb.Node] = true
		// The agent network is the SDN VNet on every node.
		if net0 := d.Sim.Dump().VMs[sb.VMID].Config["net0"]; !strings.Contains(net0, "bridge=agentnet") {
			t.Errorf("sandbox %s: net0 %q, want the VNet agentnet", name, net0)
		}
		evs, err := c.Events(ctx, sb.ID, 0, 50)
		if err != nil {
			t.Fatal(err)
		}
		placed := false
		for _, e := range evs.Events {
			placed = placed || strings.HasPrefix(e.Message, "placed on "+sb.Node+": ") && strings.Contains(e.Message, "MiB free after it")
		}
		if !placed {
			t.Errorf("sandbox %s has no placement event: %+v", name, evs.Events)
		}
	}
	if len(seen) != 3 {
		t.Fatalf("3 sandboxes on equal nodes landed on %v, want one per node", seen)
	}
	// A pin wins over the scores; a drained node gets no new sandbox.
	pinned, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "pinned", Profile: "yolo-ephemeral", Node: "pve2"})
	if err != nil {
		t.Fatal(err)
	}
	if pinned, err = c.WaitSandbox(ctx, pinned.ID, 0); err != nil || pinned.Node != "pve2" || pinned.State != api.StateRunning {
		t.Fatalf("pinned to pve2: %+v %v", pinned, err)
	}
	if _, err := c.DrainNode(ctx, "pve3", true); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"d1", "d2"} {
		if sb := create(t, c, name); sb.Node == "pve3" {
			t.Fatalf("sandbox %s placed on drained pve3", name)
		}
	}
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "bad", Profile: "yolo-ephemeral", Node: "pve9"}); err == nil {
		// pve9 is not in the cluster: refused at placement, named.
		sb, _ := c.WaitSandbox(ctx, "bad", 0)
		if sb.State != api.StateFailed || !strings.Contains(sb.Error, "pve9 is not in the cluster") {
			t.Fatalf("pinned to pve9: %s %q", sb.State, sb.Error)
		}
	}
}

// TestCheckWorkspaceAcrossNodes: on a cluster, check reads each sandbox's
// config through the node its VM runs on, so a volume planted in a sandbox
// on another node, or missing from the attached one, is reported rather
// than passed over as "no such VM here".
func TestCheckWorkspaceAcrossNodes(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3})
	ctx := tctx(t)
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "ws", Size: "5G", Storage: "shared", Node: "pve2"}); err != nil {
		t.Fatal(err)
	}
	vol := holderVol(t, d, c, "ws")
	mk := func(name, node string) *api.Sandbox {
		sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: "yolo-ephemeral", Node: node})
		if err != nil {
			t.Fatal(err)
		}
		if sb, err = c.WaitSandbox(ctx, sb.ID, 0); err != nil || sb.Node != node || sb.State != api.StateRunning {
			t.Fatalf("%s on %s: %+v %v", name, node, sb, err)
		}
		return sb
	}
	sb := mk("holder-side", "pve2")
	other := mk("far", "pve3")
	if _, err := c.AttachWorkspace(ctx, "ws", sb.Name); err != nil {
		t.Fatal(err)
	}
	if res, err := c.CheckWorkspace(ctx, "ws"); err != nil || !res.OK {
		t.Fatalf("clean check: %+v %v", res, err)
	}
	pc := pveClient(t, d)
	if err := pc.On("pve2").DetachVolume(ctx, sb.VMID, "scsi1"); err != nil {
		t.Fatal(err)
	}
	if err := pc.On("pve3").AttachVolume(ctx, other.VMID, "scsi2", vol); err != nil {
		t.Fatal(err)
	}
	res, err := c.CheckWorkspace(ctx, "ws")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range res.Findings {
		got = append(got, f.Code)
	}
	if strings.Join(got, ",") != "not_attached_in_proxmox,attached_in_proxmox_only" {
		t.Fatalf("findings %v", res.Findings)
	}
}

// TestWorkspaceNodeRules: a workspace on a node-local storage is only
// attached to a sandbox on its node (refused by name otherwise, before
// Proxmox is asked, the sandbox left as it was); one on a shared storage
// is read from every node, so its sandbox may be placed on any node and
// an existing sandbox elsewhere may attach it.
func TestWorkspaceNodeRules(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3})
	ctx := tctx(t)
	for _, w := range []api.CreateWorkspaceRequest{
		{Name: "loc", Size: "5G", Storage: "local-lvm", Node: "pve2"},
		{Name: "sh", Size: "5G", Storage: "shared", Node: "pve2"},
	} {
		if _, err := c.CreateWorkspace(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(req api.CreateSandboxRequest) *api.Sandbox {
		req.Profile = "yolo-ephemeral"
		sb, err := c.CreateSandbox(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if sb, err = c.WaitSandbox(ctx, sb.ID, 0); err != nil || sb.State != api.StateRunning {
			t.Fatalf("%s: %+v %v", req.Name, sb, err)
		}
		return sb
	}
	far := mk(api.CreateSandboxRequest{Name: "far", Node: "pve1"})
	before := d.Sim.Dump().VMs[far.VMID].Config
	_, err := c.AttachWorkspace(ctx, "loc", "far")
	wantCode(t, err, http.StatusConflict, api.CodeConflict)
	if !strings.Contains(err.Error(), "workspace loc lives on node pve2") || !strings.Contains(err.Error(), "sandbox far runs on node pve1") {
		t.Fatalf("refusal does not name the nodes: %v", err)
	}
	if after := d.Sim.Dump().VMs[far.VMID].Config; !reflect.DeepEqual(before, after) {
		t.Fatalf("a refused attach changed VM %d: %v -> %v", far.VMID, before, after)
	}
	if w, _ := c.Workspace(ctx, "loc"); w.AttachedSandbox != "" {
		t.Fatalf("a refused attach left a claim: %+v", w)
	}
	// Shared: attached across nodes, the volume referenced from pve1.
	if _, err := c.AttachWorkspace(ctx, "sh", "far"); err != nil {
		t.Fatal(err)
	}
	if got := volOf(d.Sim.Dump().VMs[far.VMID].Config["scsi1"]); got != holderVol(t, d, c, "sh") {
		t.Fatalf("scsi1 of far = %q", got)
	}
	if _, err := c.DetachWorkspace(ctx, "sh"); err != nil {
		t.Fatal(err)
	}
	// A workspace is made only on a node agentd uses, online, not drained;
	// a refusal leaves no row and no VM.
	vmsBefore := len(d.Sim.Dump().VMs)
	if _, err := c.DrainNode(ctx, "pve3", true); err != nil {
		t.Fatal(err)
	}
	for node, want := range map[string]string{"pve9": `node "pve9" is not a node agentd uses (nodes: pve1, pve2, pve3)`, "pve3": "node pve3 is drained"} {
		_, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "on-" + node, Size: "5G", Node: node})
		wantCode(t, err, http.StatusBadRequest, api.CodeInvalidField)
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("workspace on %s: %v", node, err)
		}
		if _, err := c.Workspace(ctx, "on-"+node); !client.IsNotFound(err) {
			t.Fatalf("refused create on %s left a row: %v", node, err)
		}
	}
	if _, err := c.DrainNode(ctx, "pve3", false); err != nil {
		t.Fatal(err)
	}
	if n := len(d.Sim.Dump().VMs); n != vmsBefore {
		t.Fatalf("refused creates left VMs: %d -> %d", vmsBefore, n)
	}
	// At create: a shared workspace pins nothing (pve2 drained, the
	// sandbox lands elsewhere); a local one pins its node.
	if _, err := c.DrainNode(ctx, "pve2", true); err != nil {
		t.Fatal(err)
	}
	if sb := mk(api.CreateSandboxRequest{Name: "with-sh", Workspace: "sh"}); sb.Node == "pve2" {
		t.Fatalf("sandbox with a shared workspace placed on drained pve2")
	}
	if _, err := c.DrainNode(ctx, "pve2", false); err != nil {
		t.Fatal(err)
	}
	if sb := mk(api.CreateSandboxRequest{Name: "with-loc", Workspace: "loc"}); sb.Node != "pve2" {
		t.Fatalf("sandbox with local workspace loc (pve2) placed on %s", sb.Node)
	}
}

// TestTemplateByName: a profile naming its template by name clones, on
// each node, the template of that name there (a linked clone needs it
// local); a node where the name is ambiguous, or missing, gets nothing,
// and a sandbox pinned there fails naming why.
func TestTemplateByName(t *testing.T) {
	d, _ := startDev(t, agent.DevOptions{Nodes: 3})
	ctx := tctx(t)
	if err := os.WriteFile(filepath.Join(d.Config.ProfilesDir, "named.yaml"), []byte("name: named\ntemplate: ubuntu-2404-agent\nresources:\n  cores: 1\n  memory_mb: 1024\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := tcpClient(t, d, d.Info.Token)
	mk := func(name, node string) *api.Sandbox {
		sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: "named", Node: node})
		if err != nil {
			t.Fatal(err)
		}
		if sb, err = c.WaitSandbox(ctx, sb.ID, 0); err != nil {
			t.Fatal(err)
		}
		return sb
	}
	for i, node := range []string{"pve1", "pve2", "pve3"} {
		sb := mk("n-"+node, node)
		if sb.State != api.StateRunning || sb.Node != node {
			t.Fatalf("on %s: %s %s %s", node, sb.Node, sb.State, sb.Error)
		}
		evs, err := c.Events(ctx, sb.ID, 0, 50)
		if err != nil {
			t.Fatal(err)
		}
		want, cloned := fmt.Sprintf("cloned template %d to VM %d", pvesim.FixtureTemplateID+i, sb.VMID), false
		for _, e := range evs.Events {
			cloned = cloned || strings.HasPrefix(e.Message, want)
		}
		if !cloned {
			t.Fatalf("sandbox on %s: no %q event in %+v", node, want, evs.Events)
		}
	}
	// A second template of that name on pve3: which one is meant is not
	// guessed; unpinned sandboxes go elsewhere.
	if err := d.Sim.AddVM("pve3", 9050, map[string]string{"name": "ubuntu-2404-agent", "scsi0": "local-lvm:8", "ide2": "local-lvm:cloudinit", "agent": "1"}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Reconcile(ctx, false); err != nil { // a fresh inventory
		t.Fatal(err)
	}
	sb := mk("amb", "pve3")
	if sb.State != api.StateFailed || !strings.Contains(sb.Error, "templates 9002, 9050 here are all named ubuntu-2404-agent") {
		t.Fatalf("pinned to a node with two templates of the name: %s %q", sb.State, sb.Error)
	}
	for i := range 3 {
		if sb := mk(fmt.Sprintf("free%d", i), ""); sb.State != api.StateRunning || sb.Node == "pve3" {
			t.Fatalf("unpinned: %s %s %s", sb.Node, sb.State, sb.Error)
		}
	}
}
