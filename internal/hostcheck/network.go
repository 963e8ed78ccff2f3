package hostcheck

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/config"
	"github.com/agentlab/terraform-provider-agentlab/internal/netpolicy"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
)

// network checks the isolation layers (docs: guides/network): our nft tables
// loaded and current, br_netfilter's state and what it means per layer, the
// datacenter firewall when the Proxmox layer is used, and the resolver the
// nat mode's sandboxes are given.
func network(ctx context.Context, cfg *config.Config, pc *pve.Client, h Host, add func(string, Status, string, string)) {
	nft := h.Nft
	if nft == nil {
		nft = func(ctx context.Context, args ...string) (string, error) {
			out, err := exec.CommandContext(ctx, "nft", args...).CombinedOutput()
			return string(out), err
		}
	}
	const apply = "agentd host network apply"
	// The markers are rules of the current ruleset that older ones lack, so
	// a table loaded before a fix is "older", not "loaded": the link-local
	// group drop (before it, a guest bypassed the bridge table through them)
	// and the reply chain (before it, a flow outlived its sandbox's mode).
	for _, tc := range []struct{ family, marker, what string }{
		{"bridge", "01:80:c2:00:00:00-01:80:c2:00:00:0f", "the bridge table (port, MAC and address binding, IPv4/ARP only, L2 isolation)"},
		{"inet", "chain to_sandbox", "the inet table (default-deny forward, host input)"},
	} {
		out, err := nft(ctx, "list", "table", tc.family, "agentlab")
		switch {
		case err != nil:
			add("nft "+tc.family+" agentlab", Fail, tc.what+" is not loaded: "+strings.TrimSpace(out), apply)
		case !strings.Contains(out, tc.marker):
			add("nft "+tc.family+" agentlab", Fail, "an older ruleset is loaded (no "+tc.marker+"): it fails open", apply)
		default:
			add("nft "+tc.family+" agentlab", OK, tc.what+" is loaded", "")
		}
	}
	// The bridge learns a source MAC from frames to the IEEE link-local
	// groups before any netfilter hook: without no_linklocal_learn a sandbox
	// can move another's MAC to its own port (netpolicy.NoLinkLocalLearn).
	if v, err := h.read(netpolicy.NoLinkLocalLearnPath(cfg.AgentBridge)); err == nil && v != "1" {
		add("bridge no_linklocal_learn", Fail, cfg.AgentBridge+" learns MACs from link-local frames (no_linklocal_learn="+v+"): a sandbox can claim another's MAC and receive the host's frames for it; no nft rule can stop that",
			"ip "+strings.Join(netpolicy.NoLinkLocalLearn(cfg.AgentBridge), " ")+" (and post-up in its stanza: agentd host network render --interfaces)")
	} else if err == nil {
		add("bridge no_linklocal_learn", OK, cfg.AgentBridge+" does not learn MACs from link-local frames", "")
	}
	v, err := h.read("/proc/sys/net/bridge/bridge-nf-call-iptables")
	switch {
	case err != nil:
		add("br_netfilter", Warn, "br_netfilter is not loaded: bridged frames skip iptables/nftables ip hooks. Our bridge table still binds and isolates at L2; "+
			"the Proxmox firewall's security groups and ipfilter (iptables) do not see sandbox ↔ sandbox frames (pve-firewall loads it when it runs)", "modprobe br_netfilter (pve-firewall does this when the firewall is enabled)")
	case v == "1":
		add("br_netfilter", OK, "bridge-nf-call-iptables=1: bridged frames also pass the inet forward chain and the Proxmox firewall; our bridge table filters first", "")
	default:
		add("br_netfilter", Warn, "bridge-nf-call-iptables=0: only our bridge table sees bridged frames (it isolates and binds on its own); the Proxmox firewall's iptables rules do not apply to them",
			"sysctl -w net.bridge.bridge-nf-call-iptables=1 (pve-firewall sets it when enabled)")
	}
	if pc != nil {
		opts, err := pc.ClusterFirewallOptions(ctx)
		switch {
		case err != nil:
			add("datacenter firewall", Warn, "cannot read /cluster/firewall/options: "+err.Error(), "grant Sys.Audit on / to the token")
		case fmt.Sprint(opts["enable"]) != "1":
			add("datacenter firewall", Warn, "the datacenter firewall is off: the security groups, ipfilter and macfilter agentd sets on every VM do nothing (pve-firewall compiles no rules); only our nft tables isolate",
				"pvesh set /cluster/firewall/options --enable 1 (allow SSH/8006 in the host rules first)")
		case fmt.Sprint(opts["ebtables"]) == "0":
			add("datacenter firewall", Warn, "ebtables=0: Proxmox does not filter ARP (its ipfilter ARP rules are ebtables); our bridge table still does", "pvesh set /cluster/firewall/options --ebtables 1")
		default:
			add("datacenter firewall", OK, "enabled: the Proxmox layer (security groups, ipfilter, macfilter) applies", "")
		}
	}
	if !cfg.GuestCheckSourceIP {
		// The tokens are bound at issuance, but the listener only enforces
		// the binding with this on (dev mode turns it off: its guests are
		// local processes): any sandbox holding another's token could use it.
		add("guest_check_source_ip", Warn, "guest_check_source_ip is false: bootstrap and artifact tokens are accepted from any address, not only their sandbox's",
			"guest_check_source_ip: true in the configuration")
	}
	dns := net.JoinHostPort(cfg.AgentHostAddress, "53")
	dial := h.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: time.Second}).DialContext
	}
	if c, err := dial(ctx, "tcp", dns); err == nil {
		c.Close()
		add("resolver", OK, "a resolver answers on "+dns+": the nameserver nat and allowlist sandboxes get", "")
	} else {
		add("resolver", Warn, "nothing answers on "+dns+": nat and allowlist sandboxes are given it as their nameserver (mode off gets none)",
			"run a resolver bound to "+cfg.AgentHostAddress+" (e.g. dnsmasq --interface="+cfg.AgentBridge+" --bind-interfaces --no-dhcp-interface="+cfg.AgentBridge+") forwarding to your upstream")
	}
}
