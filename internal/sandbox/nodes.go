package sandbox

import (
	"cmp"
	"context"
	"net/http"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/placement"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// The cluster model: which nodes agentd uses, what each holds, and which
// are drained. The placement ledger is refreshed from the inventory that
// reconcile reads anyway (one /cluster/resources call for every node) and
// from the database, where agentd's own sandboxes are.

// usesNode reports whether agentd places sandboxes on node: every node of
// the cluster, or the configured subset.
func (m *Manager) usesNode(node string) bool {
	if len(m.opts.Nodes) == 0 {
		return true
	}
	for _, n := range m.opts.Nodes {
		if n == node {
			return true
		}
	}
	return false
}

// refreshCluster loads the ledger: node capacity and foreign VMs from inv,
// agentd's live sandboxes from the store, drained nodes from the store.
func (m *Manager) refreshCluster(ctx context.Context, inv *pve.Inventory) error {
	rows, err := m.store.Sandboxes(auth.Host(ctx), store.Filter{})
	if err != nil {
		return err
	}
	drained, err := m.store.DrainedNodes(ctx)
	if err != nil {
		return err
	}
	ours := make(map[int]bool, len(rows))
	for _, sb := range rows {
		if sb.VMID != 0 {
			ours[sb.VMID] = true
		}
	}
	foreign := map[string][2]int64{} // node → MiB, cores of running VMs not ours
	for _, r := range inv.VMs {
		if r.Template || ours[r.VMID] || r.Status != "running" {
			continue
		}
		f := foreign[r.Node]
		foreign[r.Node] = [2]int64{f[0] + int64(r.MaxMem>>20), f[1] + int64(r.MaxCPU)}
	}
	caps := make([]placement.Capacity, 0, len(inv.Nodes))
	for _, n := range inv.Nodes {
		if !m.usesNode(n.Node) {
			continue
		}
		f := foreign[n.Node]
		caps = append(caps, placement.Capacity{Name: n.Node, Online: n.Online, MemoryMB: int64(n.MaxMem >> 20), CPUs: int(n.MaxCPU),
			ForeignMB: f[0], ForeignCores: int(f[1])})
	}
	m.cluster.SetInventory(caps)
	for _, n := range caps {
		m.cluster.SetDrained(n.Name, drained[n.Name])
	}
	for _, sb := range rows { // live ones: pool members take memory too
		if sb.Node == "" {
			continue
		}
		mem, cores := sb.MemoryMB, sb.Cores
		if p := m.profiles[sb.Profile]; p != nil {
			mem, cores = cmp.Or(mem, p.Resources.MemoryMB), cmp.Or(cores, p.Resources.Cores)
		}
		m.cluster.Track(sb.ID, sb.Node, int64(mem), cores)
	}
	return nil
}

// Nodes is GET /v1/nodes: every node agentd uses, read fresh.
func (m *Manager) Nodes(ctx context.Context) ([]api.Node, error) {
	inv, err := m.pve.Inventory(ctx)
	if err != nil {
		return nil, err
	}
	if err := m.refreshCluster(ctx, inv); err != nil {
		return nil, err
	}
	out := []api.Node{}
	for _, n := range m.cluster.Nodes() {
		out = append(out, api.Node{Name: n.Name, Online: n.Online, Drained: n.Drained, MemoryMB: n.MemoryMB,
			CommittedMB: n.CommittedMB, FreeMB: n.MemoryMB - n.CommittedMB, CPUs: n.CPUs, CommittedCores: n.CommittedCores,
			Sandboxes: n.Sandboxes, InFlight: n.InFlight})
	}
	return out, nil
}

// Drain takes a node out of placement (maintenance) or puts it back;
// sandboxes already there keep running.
func (m *Manager) Drain(ctx context.Context, node string, drained bool) (*api.Node, error) {
	nodes, err := m.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		if n.Name != node {
			continue
		}
		if err := m.store.SetDrained(ctx, node, drained); err != nil {
			return nil, err
		}
		m.cluster.SetDrained(node, drained)
		n.Drained = drained
		return &n, nil
	}
	return nil, api.Errorf(http.StatusNotFound, api.CodeNodeNotFound, "node %q is not a node agentd uses (%s)", node, nodeNames(nodes))
}

func nodeNames(ns []api.Node) string {
	if len(ns) == 0 {
		return "no nodes"
	}
	s := ""
	for i, n := range ns {
		if i > 0 {
			s += ", "
		}
		s += n.Name
	}
	return "nodes: " + s
}
