package cli

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/config"
	"github.com/agentlab/terraform-provider-agentlab/internal/hostcheck"
	"github.com/agentlab/terraform-provider-agentlab/internal/netpolicy"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
)

// loadHost reads the config and profiles and builds a Proxmox client, as
// `agentd serve` would (host commands run on the host, not through the API).
func loadHost(cfgPath string) (*config.Config, profile.Set, *pve.Client, error) {
	cfg, profiles, err := loadConfig(cfgPath)
	if err != nil {
		return nil, nil, nil, err
	}
	pc, err := agent.ProxmoxClient(cfg, nil)
	return cfg, profiles, pc, err
}

func (g *options) newHostCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "host", Short: "Check and set up the Proxmox host (preflight, bridge, nftables, security groups)"}
	var cfgPath string
	check := &cobra.Command{
		Use:   "check",
		Short: "Preflight: one line per prerequisite, each failure with its fix",
		Long: `Check what agentd needs from the host and from Proxmox: the agent bridge,
IPv4 forwarding, nftables, conntrack, the snippets directory and storage, the
API token and its privileges, the workspace storage, and every profile's
template (a template, cloud-init drive, guest agent, storage that can
link-clone). Exits 1 if anything fails.`,
		Example: `  agentd host check
  agentd host check --json --config /etc/agentd/config.yaml`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, profiles, pc, err := loadHost(cfgPath)
			if err != nil {
				return err
			}
			ctx, cancel := g.cmdContext(cmd)
			defer cancel()
			res := hostcheck.Run(ctx, cfg, profiles, pc, hostcheck.Host{})
			failed := 0
			for _, r := range res {
				if r.Status == hostcheck.Fail {
					failed++
				}
			}
			if g.json {
				if err := printJSON(cmd.OutOrStdout(), map[string]any{"checks": res, "failed": failed}); err != nil {
					return err
				}
			} else {
				for _, r := range res {
					fmt.Fprintf(cmd.OutOrStdout(), "%-5s %-34s %s\n", r.Status, r.Check, r.Detail)
					if r.Fix != "" && r.Status != hostcheck.OK {
						fmt.Fprintf(cmd.OutOrStdout(), "      %-34s fix: %s\n", "", r.Fix)
					}
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d check(s) failed", failed)
			}
			return nil
		},
	}
	configFlag(check.Flags(), &cfgPath)
	cmd.AddCommand(check, g.newNetworkCmd())
	return cmd
}

// policy builds the ruleset inputs; members come from the running agent when
// it answers (its sandboxes' addresses by mode), else the sets start empty.
func (g *options) policy(ctx context.Context, cfg *config.Config, profiles profile.Set) (*netpolicy.Policy, error) {
	p, err := agent.HostPolicy(ctx, cfg, profiles)
	if err != nil {
		return nil, err
	}
	subnet := p.Subnet
	if c, err := g.newClientFor(cfg); err == nil {
		// The states in which agentd keeps a binding live (see syncAddress).
		states := []string{string(api.StateBooting), string(api.StateReady), string(api.StateRunning)}
		if sbs, err := c.Sandboxes(ctx, url.Values{"state": states}); err == nil {
			for _, sb := range sbs {
				a, err := netip.ParseAddr(sb.IP)
				if prof := profiles[sb.Profile]; err == nil && prof != nil && sb.VMID != 0 && subnet.Contains(a) {
					p.Bindings = append(p.Bindings, netpolicy.Binding{Addr: a, MAC: netpolicy.MAC(a), Ports: netpolicy.Ports(sb.VMID), Mode: netpolicy.Mode(prof)})
				}
			}
		}
		// Exposed ports: agentd withdraws them when their sandbox stops.
		if ports, err := c.ExposedPorts(ctx, ""); err == nil {
			for _, ep := range ports {
				a, err := netip.ParseAddr(ep.SandboxAddr)
				if err != nil || !subnet.Contains(a) {
					continue
				}
				e := netpolicy.Expose{HostPort: ep.HostPort, Addr: a, Port: ep.Port}
				for _, s := range ep.Sources {
					if pr, err := netip.ParsePrefix(s); err == nil {
						e.Sources = append(e.Sources, pr)
					}
				}
				p.Exposed = append(p.Exposed, e)
			}
		}
	}
	return p, nil
}

// newClientFor reaches the agent this config describes: --endpoint or
// AGENTLAB_ENDPOINT when given, else the config's socket.
func (g *options) newClientFor(cfg *config.Config) (*client.Client, error) {
	cc := client.Config{Endpoint: g.endpoint, Token: g.token, CACert: g.caCert, Insecure: g.insecure, TokenSetting: "--token or " + client.EnvToken}
	if cc.Endpoint == "" && os.Getenv(client.EnvEndpoint) == "" {
		cc.Endpoint = "unix://" + cfg.SocketPath
	}
	return client.New(client.FromEnv(cc))
}

func (g *options) newNetworkCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "network", Short: "Render or apply the sandbox network policy"}
	var cfgPath string
	var interfaces bool
	render := &cobra.Command{
		Use:   "render [--interfaces]",
		Short: "Print the nftables ruleset (or the bridge's interfaces stanza) for review",
		Args:  args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, profiles, err := loadConfig(cfgPath)
			if err != nil {
				return err
			}
			ctx, cancel := g.cmdContext(cmd)
			defer cancel()
			p, err := g.policy(ctx, cfg, profiles)
			if err != nil {
				return err
			}
			if interfaces && cfg.SDN.Enabled() {
				fmt.Fprint(cmd.OutOrStdout(), p.VNetInterfaces())
				return nil
			}
			if interfaces {
				fmt.Fprint(cmd.OutOrStdout(), p.Interfaces())
				return nil
			}
			rs, err := p.Ruleset()
			if err != nil {
				return err
			}
			if cfg.SDN.Enabled() {
				// As nft comments, so that the output stays a ruleset.
				fmt.Fprint(cmd.OutOrStdout(), sdnPlanText(ctx, cfg, "# "))
			}
			fmt.Fprint(cmd.OutOrStdout(), rs)
			return nil
		},
	}
	configFlag(render.Flags(), &cfgPath)
	render.Flags().BoolVar(&interfaces, "interfaces", false, "print the /etc/network/interfaces stanza of the agent bridge instead")
	var applyCfg string
	var skipNft, skipGroups, skipSDN bool
	apply := &cobra.Command{
		Use:   "apply",
		Short: "Load the nftables ruleset atomically and create/update the Proxmox security groups",
		Long: `Load the rendered ruleset with one "nft -f" (the table is replaced atomically;
running it again is harmless) and create or update the cluster security groups
of the profiles' network modes (agentlab-nat, agentlab-off, one per allowlist
profile). The bridge itself is not touched: add the stanza from
"agentd host network render --interfaces" to /etc/network/interfaces.

With sdn.zone set, it first creates or updates the Proxmox SDN VXLAN zone
(peers: the nodes), the VNet and the agent subnet through /cluster/sdn and
applies them (PUT /cluster/sdn); a second run changes nothing and says so.
SDN objects of the same ids that agentd did not create are an error, never
changed, and so are pending SDN changes of others (an apply commits all).`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, profiles, pc, err := loadHost(applyCfg)
			if err != nil {
				return err
			}
			ctx, cancel := g.cmdContext(cmd)
			defer cancel()
			p, err := g.policy(ctx, cfg, profiles)
			if err != nil {
				return err
			}
			rs, err := p.Ruleset()
			if err != nil {
				return err
			}
			if cfg.SDN.Enabled() && !skipSDN {
				plan, changes, err := agent.EnsureSDN(ctx, cfg, pc, false)
				if err != nil {
					return fmt.Errorf("sdn: %w", err)
				}
				fmt.Fprint(cmd.OutOrStdout(), sdnResult(plan, changes))
			}
			if !skipNft && isDev(cfg) {
				// agentd dev never touches this machine's firewall.
				fmt.Fprintf(cmd.OutOrStdout(), "nftables: not loaded: %s belongs to agentd dev (review the ruleset with agentd host network render)\n", cfg.StateDir)
			} else if !skipNft {
				if err := netpolicy.Apply(ctx, rs); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "nftables: tables bridge agentlab and inet agentlab loaded (%d sandbox binding(s))\n", len(p.Bindings))
				// The bridge learns MACs from link-local group frames before
				// any nft hook: only this bridge option stops a sandbox from
				// claiming another's MAC that way.
				if _, err := os.Stat(netpolicy.NoLinkLocalLearnPath(cfg.AgentBridge)); err != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "bridge %s: not present here; no_linklocal_learn not set (the interfaces stanza sets it)\n", cfg.AgentBridge)
				} else if out, err := exec.CommandContext(ctx, "ip", netpolicy.NoLinkLocalLearn(cfg.AgentBridge)...).CombinedOutput(); err != nil {
					return fmt.Errorf("set no_linklocal_learn on %s: %v: %s", cfg.AgentBridge, err, strings.TrimSpace(string(out)))
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "bridge %s: no_linklocal_learn 1\n", cfg.AgentBridge)
				}
			}
			if !skipGroups {
				if err := agent.EnsureFirewallGroups(ctx, cfg, profiles, pc); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "proxmox: security groups up to date")
			}
			return nil
		},
	}
	configFlag(apply.Flags(), &applyCfg)
	apply.Flags().BoolVar(&skipNft, "skip-nft", false, "only update the Proxmox security groups")
	apply.Flags().BoolVar(&skipGroups, "skip-groups", false, "only load the nftables ruleset")
	apply.Flags().BoolVar(&skipSDN, "skip-sdn", false, "leave the Proxmox SDN zone and VNet alone (sdn.zone set)")
	cmd.AddCommand(render, apply)
	return cmd
}

// sdnDescribe is the plan in one line per object.
func sdnDescribe(plan pve.SDN, prefix string) string {
	var b strings.Builder
	mtu := "Proxmox's default"
	if plan.MTU > 0 {
		mtu = fmt.Sprint(plan.MTU)
	}
	nodes := "every node"
	if len(plan.Nodes) > 0 {
		nodes = strings.Join(plan.Nodes, ",")
	}
	fmt.Fprintf(&b, "%szone %s: type vxlan, peers %s, mtu %s, nodes %s\n", prefix, plan.Zone, strings.Join(plan.Peers, ","), mtu, nodes)
	fmt.Fprintf(&b, "%svnet %s: zone %s, tag (VNI) %d, alias %q (the agent bridge of every profile)\n", prefix, plan.VNet, plan.Zone, plan.Tag, pve.SDNAlias)
	fmt.Fprintf(&b, "%ssubnet %s: %s, gateway %s\n", prefix, plan.SubnetID(), plan.Subnet, plan.Gateway)
	return b.String()
}

// sdnPlanText is what render shows of the SDN: the objects and, when
// Proxmox answers, what apply would change.
func sdnPlanText(ctx context.Context, cfg *config.Config, prefix string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%sProxmox SDN (agentd host network apply creates and applies these through /cluster/sdn):\n", prefix)
	pc, err := agent.ProxmoxClient(cfg, nil)
	var plan pve.SDN
	var changes []pve.SDNChange
	if err == nil {
		plan, changes, err = agent.EnsureSDN(ctx, cfg, pc, true)
	}
	if err != nil && plan.Zone == "" {
		fmt.Fprintf(&b, "%s  zone %s (vxlan), vnet %s (tag %d): %v\n", prefix, cfg.SDN.Zone, cfg.SDN.VNet, cfg.SDN.Tag, err)
		return b.String()
	}
	b.WriteString(sdnDescribe(plan, prefix+"  "))
	switch {
	case err != nil:
		fmt.Fprintf(&b, "%sapply would fail: %v\n", prefix, err)
	case len(changes) == 0:
		fmt.Fprintf(&b, "%sapply: nothing to change (all in place and applied)\n", prefix)
	default:
		for _, ch := range changes {
			fmt.Fprintf(&b, "%sapply would %s\n", prefix, ch)
		}
	}
	return b.String() + "\n"
}

// sdnResult is what apply reports of the SDN step.
func sdnResult(plan pve.SDN, changes []pve.SDNChange) string {
	var b strings.Builder
	if len(changes) == 0 {
		fmt.Fprintf(&b, "sdn: zone %s, vnet %s, subnet %s already in place and applied: nothing changed\n", plan.Zone, plan.VNet, plan.SubnetID())
		return b.String()
	}
	for _, ch := range changes {
		fmt.Fprintf(&b, "sdn: %s\n", ch)
	}
	b.WriteString(sdnDescribe(plan, "sdn:   "))
	return b.String()
}

// hostCheckText is the text output of agentd host check for the doctor
// bundle (or why it could not run).
func hostCheckText(ctx context.Context, cfgPath string) []byte {
	cfg, profiles, pc, err := loadHost(cfgPath)
	if err != nil {
		return []byte("agentd host check could not run: " + err.Error() + "\n")
	}
	var b strings.Builder
	for _, r := range hostcheck.Run(ctx, cfg, profiles, pc, hostcheck.Host{}) {
		fmt.Fprintf(&b, "%-5s %-34s %s\n", r.Status, r.Check, r.Detail)
		if r.Fix != "" && r.Status != hostcheck.OK {
			fmt.Fprintf(&b, "      %-34s fix: %s\n", "", r.Fix)
		}
	}
	return []byte(b.String())
}
