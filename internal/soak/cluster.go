package soak

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// NodeProbe is what the harness saw right before an offline node came back:
// agentd's rows after a reconcile that ran while the node was offline, and
// the simulator's state then and when the node went offline.
type NodeProbe struct {
	Node string
	// At is when the probe's reconcile started: a row changed later is
	// no evidence about that reconcile.
	At         time.Time
	Err        string // the probe could not be made (agentd down); nothing checked
	Before     *pvesim.State
	After      *pvesim.State
	Sandboxes  []api.Sandbox
	Workspaces []api.Workspace
	// WorkspacesBefore are agentd's workspaces as the node went offline
	// (nil when agentd could not be asked).
	WorkspacesBefore []api.Workspace
}

// probeNode runs a reconcile while node is offline and records what agentd
// and the simulator then say. agentd may be restarting after a kill -9: the
// probe waits for it and retries a reconcile a kill interrupted.
func (r *runner) probeNode(ctx context.Context, node string, before *pvesim.State, wsBefore []api.Workspace) {
	p := NodeProbe{Node: node, Before: before, WorkspacesBefore: wsBefore}
	defer func() {
		r.mu.Lock()
		r.probes = append(r.probes, p)
		r.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = r.waitUp(ctx); err != nil {
			break
		}
		gen := r.gen.Load()
		p.At = time.Now()
		_, err = r.env.Client.Reconcile(ctx, false)
		if err == nil && r.gen.Load() == gen && !r.killing.Load() {
			break
		}
		if err == nil {
			err = errors.New("agentd was killed during the reconcile")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err == nil {
		p.Sandboxes, err = r.env.Client.Sandboxes(ctx, url.Values{"all": {"true"}, "pooled": {"true"}})
	}
	if err == nil {
		p.Workspaces, err = r.env.Client.Workspaces(ctx)
	}
	if err == nil {
		p.After, err = r.env.Sim.State(ctx)
	}
	if err != nil {
		p.Err = err.Error()
		r.harnessErr("probe of offline node %s: %v", node, err)
	}
}

func (r *runner) nodeProbes() []NodeProbe {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]NodeProbe(nil), r.probes...)
}

// lostWhileOffline are the states a sandbox on an offline node may not keep
// once a reconcile has seen the node offline: it is LOST (or in flight, or
// being destroyed, which a worker owns and reconcile leaves alone).
var lostWhileOffline = map[api.State]bool{api.StateRunning: true, api.StateStopped: true, api.StateSuspended: true,
	api.StateCompleted: true, api.StateFailed: true, api.StateTimeout: true, api.StatePooled: true}

// waitsForNode reports whether a LOST row's step says it waits for its
// node: node_offline, node_offline_replaced, or node_offline:STEP (lost
// before its provisioning finished).
func waitsForNode(step string) bool {
	return step == "node_offline" || step == "node_offline_replaced" || strings.HasPrefix(step, "node_offline:")
}

// CheckI10 is node failure and the cluster's bookkeeping. While a node was
// offline (each probe): none of its VMs was destroyed, every sandbox whose
// VM is there is LOST once a reconcile has seen the node offline, every
// workspace whose holder is there reports unavailable. After the settle
// (every node back): no sandbox still waits for its node, no VM exists
// twice for one sandbox or workspace, and every row's node is its VM's.
func CheckI10(w *World) []Violation {
	var out []Violation
	for _, p := range w.Probes {
		if p.Err != "" || p.Before == nil || p.After == nil {
			continue
		}
		out = append(out, checkProbe(p, w.Foreign)...)
	}
	for _, n := range w.Nodes {
		if !w.Online[n] {
			out = append(out, Violation{"I10", "node " + n, "still offline after the settle (harness)"})
		}
	}
	home := "pve"
	if len(w.Nodes) > 0 {
		home = w.Nodes[0]
	}
	for _, sb := range w.Sandboxes {
		obj := fmt.Sprintf("sandbox %s (%s, %s, VM %d)", sb.Name, sb.ID, sb.State, sb.VMID)
		if sb.State == api.StateLost && waitsForNode(sb.Step) {
			out = append(out, Violation{"I10", obj, fmt.Sprintf("still LOST at step %s with every node back: %s", sb.Step, sb.Error)})
		}
		v, ok := w.Sim.VMs[sb.VMID]
		if sb.State == api.StateDestroyed || sb.VMID == 0 || !ok || markerID(v.Config["description"], "agentlab-sandbox-id: ") != sb.ID {
			continue
		}
		if n := cmp.Or(sb.Node, home); n != v.Node {
			out = append(out, Violation{"I10", obj, fmt.Sprintf("row says node %s, its VM is on %s", n, v.Node)})
		}
	}
	for _, ws := range w.Workspaces {
		obj := fmt.Sprintf("workspace %s (%s, holder %d)", ws.Name, ws.ID, ws.HolderVMID)
		if ws.Unavailable != "" {
			out = append(out, Violation{"I10", obj, "unavailable with every node back: " + ws.Unavailable})
		}
		v, ok := w.Sim.VMs[ws.HolderVMID]
		if !ok || markerID(v.Config["description"], "agentlab-workspace-id: ") != ws.ID {
			continue
		}
		if n := cmp.Or(ws.Node, home); n != v.Node {
			out = append(out, Violation{"I10", obj, fmt.Sprintf("row says node %s, its holder is on %s", n, v.Node)})
		}
	}
	for _, kind := range []string{"agentlab-sandbox-id: ", "agentlab-workspace-id: "} {
		byID := map[string][]string{}
		for _, id := range w.vmIDs() {
			if _, foreign := w.Foreign[id]; foreign {
				continue
			}
			v := w.Sim.VMs[id]
			if mid := markerID(v.Config["description"], kind); mid != "" {
				byID[mid] = append(byID[mid], fmt.Sprintf("%d on %s", id, v.Node))
			}
		}
		ids := make([]string, 0, len(byID))
		for id := range byID {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			if vms := byID[id]; len(vms) > 1 {
				out = append(out, Violation{"I10", strings.TrimSuffix(strings.TrimPrefix(kind, "agentlab-"), "-id: ") + " " + id,
					"exists as more than one VM: " + strings.Join(vms, ", ")})
			}
		}
	}
	return out
}

func checkProbe(p NodeProbe, foreign map[int]pvesim.VMState) []Violation {
	var out []Violation
	at := fmt.Sprintf("while node %s was offline (probe at %s)", p.Node, p.At.Format("15:04:05.000"))
	ids := make([]int, 0, len(p.Before.VMs))
	for id, v := range p.Before.VMs {
		if v.Node == p.Node {
			ids = append(ids, id)
		}
	}
	sort.Ints(ids)
	// A destroy agentd started while the node answered may finish during
	// the outage (a cut-off node runs its tasks on): not a destroy of an
	// unreachable VM.
	destroying := map[string]bool{}
	for _, t := range p.Before.Tasks {
		if t.Running && t.Type == "qmdestroy" {
			destroying[t.ID] = true
		}
	}
	for _, id := range ids {
		was := p.Before.VMs[id]
		now, ok := p.After.VMs[id]
		switch {
		case !ok && destroying[strconv.Itoa(id)]:
		case !ok:
			out = append(out, Violation{"I10", describeVM(id, was), "destroyed " + at})
		case now.Node != p.Node:
			out = append(out, Violation{"I10", describeVM(id, was), "moved to " + now.Node + " " + at})
		}
	}
	for _, sb := range p.Sandboxes {
		v, ok := p.After.VMs[sb.VMID]
		if sb.VMID == 0 || !ok || v.Node != p.Node || markerID(v.Config["description"], "agentlab-sandbox-id: ") != sb.ID {
			continue
		}
		if sb.State == api.StateDestroyed {
			out = append(out, Violation{"I10", fmt.Sprintf("sandbox %s (%s, VM %d)", sb.Name, sb.ID, sb.VMID),
				"row DESTROYED, its VM still on the node " + at})
		}
		if lostWhileOffline[sb.State] && !sb.UpdatedAt.After(p.At) {
			out = append(out, Violation{"I10", fmt.Sprintf("sandbox %s (%s, VM %d)", sb.Name, sb.ID, sb.VMID),
				fmt.Sprintf("%s, not LOST, after a reconcile %s", sb.State, at)})
		}
	}
	// A workspace READY as the node went offline keeps its row: a delete
	// proves the holder first, which the outage refuses. (A create that
	// failed in the outage drops its row and leaves the holder to the
	// orphan pruning: no data, nothing acknowledged.)
	rows, ready := map[string]bool{}, map[string]bool{}
	for _, ws := range p.Workspaces {
		rows[ws.ID] = true
	}
	for _, ws := range p.WorkspacesBefore {
		ready[ws.ID] = ws.State == "READY"
	}
	for _, id := range ids {
		v, ok := p.After.VMs[id]
		if _, f := foreign[id]; f || !ok {
			continue
		}
		if wid := markerID(v.Config["description"], "agentlab-workspace-id: "); wid != "" && ready[wid] && !rows[wid] {
			out = append(out, Violation{"I10", describeVM(id, v), "holder of workspace " + wid + ", whose row was deleted " + at})
		}
	}
	for _, ws := range p.Workspaces {
		v, ok := p.After.VMs[ws.HolderVMID]
		if !ok || v.Node != p.Node || markerID(v.Config["description"], "agentlab-workspace-id: ") != ws.ID {
			continue
		}
		if ws.Unavailable == "" {
			out = append(out, Violation{"I10", fmt.Sprintf("workspace %s (%s, holder %d)", ws.Name, ws.ID, ws.HolderVMID),
				"not reported unavailable " + at})
		}
	}
	return out
}
