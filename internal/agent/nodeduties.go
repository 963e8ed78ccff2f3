package agent

import (
	"context"
	"net"
	"net/netip"
	"strconv"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/config"
	"github.com/agentlab/terraform-provider-agentlab/internal/netpolicy"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/sandbox"
)

// HostPolicy is the sandbox network policy of cfg's agent bridge with no
// sandbox bound yet: what `agentd host network` renders on the agent's node
// and each node agent loads on its own.
func HostPolicy(ctx context.Context, cfg *config.Config, profiles profile.Set) (*netpolicy.Policy, error) {
	subnet, err := netip.ParsePrefix(cfg.AgentSubnet)
	if err != nil {
		return nil, err
	}
	host, err := netip.ParseAddr(cfg.AgentHostAddress)
	if err != nil {
		return nil, err
	}
	p := &netpolicy.Policy{Bridge: cfg.AgentBridge, Subnet: subnet, HostAddr: host, Uplink: cfg.Uplink, GuestPort: cfg.GuestPort,
		IsolateSandboxes: cfg.IsolateSandboxes, Allowlists: netpolicy.Allowlists(profiles),
		NoBridgeMeta: !netpolicy.HasBridgeMeta(ctx)}
	if cfg.SDN.Enabled() {
		p.Tunnel = "vxlan_" + cfg.SDN.VNet // VxlanPlugin's name for the VNet's VXLAN port
	}
	return p, nil
}

// nodeDuties renders node's ruleset: the host policy with the bindings and
// exposed ports of the sandboxes on that node.
func nodeDuties(cfg *config.Config, profiles profile.Set, mgr *sandbox.Manager) func(context.Context, string) (*api.NodeDuties, error) {
	return func(ctx context.Context, node string) (*api.NodeDuties, error) {
		p, err := HostPolicy(ctx, cfg, profiles)
		if err != nil {
			return nil, err
		}
		if p.Bindings, p.Exposed, err = mgr.NodeDuties(ctx, node); err != nil {
			return nil, err
		}
		rs, err := p.Ruleset()
		if err != nil {
			return nil, err
		}
		every := int(cfg.ReconcileInterval.Seconds() / 3)
		return &api.NodeDuties{Node: node, Ruleset: rs, Bindings: len(p.Bindings), Exposed: len(p.Exposed), IntervalS: max(every, 5),
			GuestListen: net.JoinHostPort(cfg.AgentHostAddress, strconv.Itoa(cfg.GuestPort))}, nil
	}
}
