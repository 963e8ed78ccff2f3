package sandbox

import (
	"cmp"
	"context"
	"net/netip"
	"sort"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/netpolicy"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// The per-node duties (nftables bindings and exposed ports of the sandboxes
// on a node, SSH activity for idle stop) belong to the node the VMs run on.
// Its node agent (`agentd node run`) pulls them from here and reports back;
// agentd never connects to it.

// NodeReportMaxAge is how long a node agent's report counts: after that the
// node's SSH activity is unknown, which idle stop treats as activity.
const NodeReportMaxAge = 2 * time.Minute

// NodeDuties is what node's agent applies: the bindings of the sandboxes
// whose VM may run there and their exposed ports.
func (m *Manager) NodeDuties(ctx context.Context, node string) ([]netpolicy.Binding, []netpolicy.Expose, error) {
	ctx = auth.Host(ctx)
	rows, err := m.store.Sandboxes(ctx, store.Filter{States: []api.State{api.StateBooting, api.StateReady, api.StateRunning,
		api.StatePooled, api.StateProvisioning}})
	if err != nil {
		return nil, nil, err
	}
	here := map[string]*store.Sandbox{}
	var bs []netpolicy.Binding
	for _, sb := range rows {
		if sb.VMID == 0 || !vmMayRun(sb) || cmp.Or(sb.Node, m.opts.Node) != node {
			continue
		}
		here[sb.ID] = sb
		a, err := m.store.Address(ctx, sb.ID)
		if err != nil {
			continue // a sandbox from before agentd assigned addresses: bound where agentd runs only
		}
		bs = append(bs, netpolicy.Binding{Addr: a, MAC: netpolicy.MAC(a), Ports: netpolicy.Ports(sb.VMID), Mode: netpolicy.Mode(m.profiles[sb.Profile])})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].Addr.Less(bs[j].Addr) })
	ports, err := m.store.Ports(ctx, "")
	if err != nil {
		return nil, nil, err
	}
	var es []netpolicy.Expose
	for _, p := range ports {
		if sb := here[p.SandboxID]; sb != nil && portLive(sb.State) {
			if e, err := toExpose(p); err == nil {
				es = append(es, e)
			}
		}
	}
	return bs, es, nil
}

type nodeReport struct {
	at  time.Time
	rep api.NodeReport
}

// NodeReport records what node's agent reported.
func (m *Manager) NodeReport(node string, rep api.NodeReport) {
	m.reportMu.Lock()
	defer m.reportMu.Unlock()
	if m.reports == nil {
		m.reports = map[string]nodeReport{}
	}
	m.reports[node] = nodeReport{at: m.now(), rep: rep}
}

// NodeAgents says when each node's agent last reported, and what.
func (m *Manager) NodeAgents() map[string]api.NodeAgent {
	m.reportMu.Lock()
	defer m.reportMu.Unlock()
	out := map[string]api.NodeAgent{}
	for n, r := range m.reports {
		at := r.at
		out[n] = api.NodeAgent{LastReport: &at, Fresh: m.now().Sub(r.at) < NodeReportMaxAge, Version: r.rep.Version,
			Bindings: r.rep.Bindings, Exposed: r.rep.Exposed, Error: r.rep.Error}
	}
	return out
}

// remoteActivity is the SSH activity node agents reported, and the nodes
// whose activity is known (a fresh report).
func (m *Manager) remoteActivity() (flows map[netip.Addr]bool, known map[string]bool) {
	m.reportMu.Lock()
	defer m.reportMu.Unlock()
	flows, known = map[netip.Addr]bool{}, map[string]bool{}
	for n, r := range m.reports {
		if m.now().Sub(r.at) >= NodeReportMaxAge || r.rep.SSHUnknown {
			continue
		}
		known[n] = true
		for _, s := range r.rep.SSHFlows {
			if a, err := netip.ParseAddr(s); err == nil {
				flows[a] = true
			}
		}
	}
	return flows, known
}
