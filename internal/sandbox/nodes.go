package sandbox

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/placement"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
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
	return len(m.opts.Nodes) == 0 || slices.Contains(m.opts.Nodes, node)
}

// refreshCluster loads the ledger: node capacity and foreign VMs from inv,
// agentd's live sandboxes from the store, drained nodes from the store.
func (m *Manager) refreshCluster(ctx context.Context, inv *pve.Inventory) error {
	rows, err := m.store.Sandboxes(auth.Host(ctx), store.Filter{})
	if err != nil {
		return err
	}
	return m.refreshClusterRows(ctx, inv, rows)
}

// refreshClusterRows is refreshCluster with the rows read already (the
// reconcile cycle reads them once for both).
func (m *Manager) refreshClusterRows(ctx context.Context, inv *pve.Inventory, rows []*store.Sandbox) error {
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
	tn := map[int]string{}
	byName := map[string][]pve.Resource{}
	for _, r := range inv.VMs {
		if r.Template {
			tn[r.VMID] = r.Node
			byName[r.Name] = append(byName[r.Name], r) // in VMID order, as Inventory sorts
		}
	}
	m.invMu.Lock()
	m.templateNode, m.templateNamed, m.shared, m.invAt = tn, byName, inv.Shared, m.now()
	m.invMu.Unlock()
	for _, n := range caps {
		m.cluster.SetDrained(n.Name, drained[n.Name])
	}
	live := make(map[string]placement.Tracked, len(rows))
	for _, sb := range rows { // live ones: pool members take memory too
		if sb.Node == "" {
			continue
		}
		mem, cores := sb.MemoryMB, sb.Cores
		if p := m.profiles[sb.Profile]; p != nil {
			mem, cores = cmp.Or(mem, p.Resources.MemoryMB), cmp.Or(cores, p.Resources.Cores)
		}
		live[sb.ID] = placement.Tracked{Node: sb.Node, MemoryMB: int64(mem), Cores: cores}
	}
	m.cluster.Sync(live)
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
	return m.KnownNodes(), nil
}

// KnownNodes is the nodes as the last inventory showed them (no request).
func (m *Manager) KnownNodes() []api.Node {
	agents := m.NodeAgents()
	out := []api.Node{}
	for _, n := range m.cluster.Nodes() {
		out = append(out, api.Node{Name: n.Name, Online: n.Online, Drained: n.Drained, MemoryMB: n.MemoryMB,
			CommittedMB: n.CommittedMB, FreeMB: n.MemoryMB - n.CommittedMB, CPUs: n.CPUs, CommittedCores: n.CommittedCores,
			Sandboxes: n.Sandboxes, InFlight: n.InFlight})
		if a, ok := agents[n.Name]; ok {
			out[len(out)-1].Agent = &a
		}
	}
	return out
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
	names := make([]string, len(ns))
	for i, n := range ns {
		names[i] = n.Name
	}
	return "nodes: " + strings.Join(names, ", ")
}

// multiNode reports whether agentd places sandboxes across nodes: the last
// inventory showed more than one node it uses. One node has no placement
// step and no caps but the clone slot (claimSlot).
func (m *Manager) multiNode() bool {
	return len(m.cluster.Nodes()) > 1
}

// inventoryMaxAge bounds how old the inventory behind a placement may be
// (reconcile refreshes it every cycle; a burst of creates shares one).
const inventoryMaxAge = 15 * time.Second

// freshInventory refreshes the ledger when its inventory is older than
// inventoryMaxAge; a failed refresh keeps the old one (placement still has
// agentd's own, exact, commitments).
func (m *Manager) freshInventory(ctx context.Context) { m.refreshInventory(ctx, false) }

// freshStorages is freshInventory for a decision on a storage's sharing
// (which nodes read a workspace's volume): it waits for a refresh another
// request is running rather than going on with the stale listing.
func (m *Manager) freshStorages(ctx context.Context) { m.refreshInventory(ctx, true) }

func (m *Manager) refreshInventory(ctx context.Context, wait bool) {
	m.invMu.Lock()
	stale := m.now().Sub(m.invAt) > inventoryMaxAge
	m.invMu.Unlock()
	if !stale {
		return
	}
	// One refresh at a time: a burst of creates that finds the inventory
	// stale together would otherwise read /cluster/resources and every
	// row once each. The others go on with the ledger they have (agentd's
	// own commitments in it are exact), unless they wait.
	if wait {
		m.invRefresh.Lock()
	} else if !m.invRefresh.TryLock() {
		return
	}
	defer m.invRefresh.Unlock()
	m.invMu.Lock()
	stale = m.now().Sub(m.invAt) > inventoryMaxAge
	m.invMu.Unlock()
	if !stale {
		return
	}
	if inv, err := m.pve.Inventory(ctx); err == nil {
		_ = m.refreshCluster(ctx, inv)
	}
}

// templateFor is the template a sandbox of p is cloned from for node, and
// the node that template lives on: p.templates[node]; else the template
// named p.template on node; else template_vmid (on its own node, which a
// linked clone needs to be node itself). why says what is wrong when the
// template is not on node.
func (m *Manager) templateFor(p *profile.Profile, node string) (vmid int, on, why string) {
	if id, ok := p.Templates[node]; ok {
		return id, node, ""
	}
	m.invMu.Lock()
	defer m.invMu.Unlock()
	if p.Template != "" {
		node = cmp.Or(node, m.opts.Node)
		var here, elsewhere []string
		for _, r := range m.templateNamed[p.Template] {
			if r.Node == node {
				vmid, on = r.VMID, node
				here = append(here, fmt.Sprint(r.VMID))
			} else {
				elsewhere = append(elsewhere, fmt.Sprintf("%d on %s", r.VMID, r.Node))
			}
		}
		switch {
		case len(here) > 1:
			// Two templates of one name: which one is meant is not ours to guess.
			return 0, "", fmt.Sprintf("templates %s here are all named %s (profile %s); name the one to use under the profile's templates", strings.Join(here, ", "), p.Template, p.Name)
		case len(here) == 1:
			return vmid, on, ""
		case len(elsewhere) > 0:
			return 0, "", fmt.Sprintf("no template named %s here (profile %s; there are %s)", p.Template, p.Name, strings.Join(elsewhere, ", "))
		default:
			return 0, "", fmt.Sprintf("no template named %s (profile %s) on any node agentd can see", p.Template, p.Name)
		}
	}
	on = m.templateNode[p.TemplateVMID]
	switch on {
	case node:
	case "":
		why = fmt.Sprintf("template %d of profile %s is on no node agentd can see", p.TemplateVMID, p.Name)
	default:
		why = fmt.Sprintf("no template of profile %s here (template_vmid %d is on %s; list this node under the profile's templates)", p.Name, p.TemplateVMID, on)
	}
	return p.TemplateVMID, on, why
}

// eligible says whether p's sandboxes can be made on node: a template of p
// lives there.
func (m *Manager) eligible(p *profile.Profile) func(string) (bool, string) {
	return func(node string) (bool, string) {
		if _, on, why := m.templateFor(p, node); on != node {
			return false, why
		}
		return true, ""
	}
}

// place chooses sb's node and records it before anything is made there, so
// a run resumed after a crash goes on on the same node. A pin (the
// request's node, or the node of a workspace on a node-local storage)
// narrows the choice to one node; a workspace on a shared storage is read
// from any node, so it pins nothing. While every eligible node runs
// its limit of clones the sandbox waits, in REQUESTED order of
// arrival being no promise, until one is free or provisioning times out.
func (m *Manager) place(ctx context.Context, sb *store.Sandbox, p *profile.Profile) error {
	var c canonical
	_ = json.Unmarshal([]byte(sb.Request), &c)
	req := placement.Request{MemoryMB: int64(cmp.Or(sb.MemoryMB, p.Resources.MemoryMB)), Cores: cmp.Or(sb.Cores, p.Resources.Cores),
		Pin: c.Node, Eligible: m.eligible(p)}
	if req.Pin != "" {
		req.PinReason = "asked for by the request"
	}
	if sb.Workspace != "" {
		m.freshStorages(ctx)
		if w, err := m.store.WorkspaceBySandbox(ctx, sb.ID); err == nil && !m.storageShared(w.Storage) {
			node := cmp.Or(w.Node, m.opts.Node)
			if req.Pin != "" && req.Pin != node {
				return api.Errorf(http.StatusConflict, api.CodeConflict, "node %s was asked for, but workspace %s lives on node %s (its volume is local there)", req.Pin, w.Name, node)
			}
			req.Pin, req.PinReason = node, "workspace "+w.Name+" lives there"
		}
	}
	for {
		m.freshInventory(ctx)
		d, w, err := m.cluster.Place(sb.ID, req)
		if err == nil {
			sb.Node = d.Node
			return m.progress(ctx, sb, stepAllocate, "placed on "+d.Reason)
		}
		if !errors.Is(err, placement.ErrBusy) {
			return err
		}
		// Woken the moment a slot this sandbox may use is given back: a
		// poll would leave the node idle until the next tick, which over a
		// burst of creates adds up to most of the makespan. The timer only
		// lets a changed inventory (a node back online) be seen.
		timer := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			timer.Stop()
			m.cluster.Leave(w, false)
			return fmt.Errorf("%w while waiting for a node with a free clone slot: %v", ctx.Err(), err)
		case <-w.C:
		case <-timer.C:
		}
		timer.Stop()
		m.cluster.Leave(w, true)
	}
}

// claimSlot takes sb's clone slot on its node when placement did not (a
// single node, a resumed run), waiting while the node runs
// placement.max_inflight_per_node clones:
// every clone queues on the node's storage lock (pve-storage-<storeid>),
// which Proxmox gives up on after 10 s.
func (m *Manager) claimSlot(ctx context.Context, sb *store.Sandbox) error {
	for {
		w, err := m.cluster.Claim(sb.ID, sb.Node, int64(sb.MemoryMB), sb.Cores)
		if !errors.Is(err, placement.ErrBusy) {
			return err
		}
		select {
		case <-ctx.Done():
			m.cluster.Leave(w, false)
			return fmt.Errorf("%w while waiting for a free clone slot: %v", ctx.Err(), err)
		case <-w.C:
			m.cluster.Leave(w, true)
		}
	}
}

// storageShared reports whether every node reads storage, as the last
// inventory says; before the first one it is not (a pin to the holder's
// node is right either way).
func (m *Manager) storageShared(storage string) bool {
	m.invMu.Lock()
	defer m.invMu.Unlock()
	return m.shared[storage]
}

// nodeDown reports whether the last inventory showed node offline.
func (m *Manager) nodeDown(node string) bool {
	for _, n := range m.cluster.Nodes() {
		if n.Name == node {
			return !n.Online
		}
	}
	return false
}

// nodeSlots is a counting semaphore per node.
type nodeSlots struct {
	mu sync.Mutex
	ch map[string]chan struct{}
}

// take waits for one of node's n slots; release gives it back.
func (s *nodeSlots) take(ctx context.Context, node string, n int) (release func(), err error) {
	s.mu.Lock()
	if s.ch == nil {
		s.ch = map[string]chan struct{}{}
	}
	ch := s.ch[node]
	if ch == nil {
		ch = make(chan struct{}, n)
		s.ch[node] = ch
	}
	s.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
