package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/agentlab/terraform-provider-agentlab/internal/config"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
)

// SDNPlan is the zone, VNet and subnet cfg asks for. The peers are
// sdn.peers, else the /cluster/status addresses of the nodes agentd uses
// (cfg.Nodes, else every node); the zone is limited to cfg.Nodes when set.
func SDNPlan(ctx context.Context, cfg *config.Config, pc *pve.Client) (pve.SDN, error) {
	s := cfg.SDN
	subnet, err := netip.ParsePrefix(cfg.AgentSubnet)
	if err != nil {
		return pve.SDN{}, err
	}
	plan := pve.SDN{Zone: s.Zone, VNet: s.VNet, Tag: s.Tag, MTU: s.MTU, Peers: slices.Clone(s.Peers), Nodes: slices.Clone(cfg.Nodes),
		Subnet: subnet.String(), Gateway: cfg.AgentHostAddress}
	slices.Sort(plan.Nodes)
	if len(plan.Peers) > 0 {
		return plan, nil
	}
	nodes, err := pc.ClusterNodes(ctx)
	if err != nil {
		return plan, err
	}
	for _, n := range nodes {
		if len(cfg.Nodes) > 0 && !slices.Contains(cfg.Nodes, n.Name) {
			continue
		}
		if _, err := netip.ParseAddr(n.IP); err != nil {
			return plan, fmt.Errorf("node %s has no address in /cluster/status (%q): set sdn.peers", n.Name, n.IP)
		}
		plan.Peers = append(plan.Peers, n.IP)
	}
	if len(plan.Peers) == 0 {
		return plan, fmt.Errorf("no cluster node to peer the VXLAN zone with (/cluster/status lists none of nodes %v): set sdn.peers", cfg.Nodes)
	}
	return plan, nil
}

// EnsureSDN creates or updates the SDN objects of cfg and applies them;
// no changes means everything was already in place and applied.
func EnsureSDN(ctx context.Context, cfg *config.Config, pc *pve.Client, dryRun bool) (pve.SDN, []pve.SDNChange, error) {
	plan, err := SDNPlan(ctx, cfg, pc)
	if err != nil {
		return plan, nil, err
	}
	changes, err := pc.EnsureSDN(ctx, plan, dryRun)
	return plan, changes, err
}
