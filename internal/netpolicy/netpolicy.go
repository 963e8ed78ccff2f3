// Package netpolicy renders the host side of sandbox network isolation: the
// agent bridge's interfaces stanza and two nftables tables, loaded atomically
// in one "nft -f" transaction:
//
//   - table bridge agentlab, on the agent bridge's ports: a frame is dropped
//     unless its (port, source MAC, source IPv4) — for ARP also the sender
//     hardware and protocol address — is a live sandbox's binding; only IPv4
//     and ARP pass (no IPv6, VLAN tags or other ethertypes); with
//     isolate_sandboxes, nothing is bridged from one sandbox port to another.
//     The same checks run at the bridge's input hook, the only one frames to
//     the IEEE link-local groups (01:80:c2:00:00:0X) pass, and those are
//     dropped outright. This layer needs neither br_netfilter nor the
//     Proxmox firewall. On an SDN VNet the VXLAN port (Tunnel) carries
//     only other nodes' sandboxes: never a gateway, one of this node's
//     sandboxes or a source outside the subnet, whatever the peer enforces.
//   - table inet agentlab, on routed traffic: the forward chain denies by
//     default (only a bound address in nat_hosts, or in an allowlist's set for
//     its entries, reaches out; unknown sources reach nothing); the input
//     chain accepts from the bridge only bound sandboxes, and only the guest
//     listener, DNS (not for mode off) and ping; the guest listener is not
//     reachable from any other interface than the bridge and loopback.
//     Nothing arriving on a sandbox port's own stack is accepted. Only
//     replies to the host's own connections skip the mode rules: a flow a
//     sandbox opened is judged by its current mode at every packet, and
//     replies into the bridge reach only a live sandbox whose mode allows
//     their source.
package netpolicy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strings"
	"text/template"
)

// Allow is one allowlist entry: a destination prefix and TCP port (0: any port).
type Allow struct {
	Prefix netip.Prefix
	Port   int
}

// Binding is what a live sandbox may send as: its assigned IPv4 address, the
// MAC agentd gave its net0, and the bridge ports its frames arrive on.
type Binding struct {
	Addr  netip.Addr
	MAC   net.HardwareAddr
	Ports []string
	// Mode is "off", "nat" or "allowlist:<profile>" (see SetName).
	Mode string
}

// MAC is the MAC address agentd gives the sandbox at addr: locally
// administered unicast (02:a1) followed by the four address bytes, so it is
// known before the VM exists and unique among the subnet's live sandboxes
// (addresses are never shared while a VM may hold one).
func MAC(addr netip.Addr) net.HardwareAddr {
	b := addr.As4()
	return net.HardwareAddr{0x02, 0xa1, b[0], b[1], b[2], b[3]}
}

// Ports are the agent-bridge ports a VM's net0 frames arrive on: with the
// iptables-based Proxmox firewall (firewall=1) the tap sits in fwbr<vmid>i0
// and vmbr sees the veth fwpr<vmid>p0; without it, or with the nftables-based
// proxmox-firewall, the tap tap<vmid>i0 is the port itself. Both are bound; a
// name that does not exist matches nothing.
func Ports(vmid int) []string {
	return []string{fmt.Sprintf("fwpr%dp0", vmid), fmt.Sprintf("tap%di0", vmid)}
}

// Policy is what the ruleset encodes.
type Policy struct {
	Bridge    string       // vmbr1
	Subnet    netip.Prefix // 10.77.0.0/16
	HostAddr  netip.Addr   // 10.77.0.1
	Uplink    string       // the interface NAT leaves through
	GuestPort int          // agentd's guest listener on HostAddr
	// Blocked are the destinations sandboxes never reach (defaults: Private).
	Blocked []netip.Prefix
	// IsolateSandboxes drops sandbox ↔ sandbox traffic, bridged and routed.
	IsolateSandboxes bool
	// Allowlists are the allowlist-mode profiles' entries, by profile name.
	Allowlists map[string][]Allow
	// Bindings are the live sandboxes: they fill the bindings set of the
	// bridge table and the mode sets of the inet table.
	Bindings []Binding
	// NoBridgeMeta renders the bridge table for a kernel without nft's bridge
	// meta expressions (CONFIG_NFT_BRIDGE_META; see HasBridgeMeta): it cannot
	// tell which bridge a frame arrives on, so it filters the ports in the
	// ports set (every port a binding ever named, until the next apply)
	// instead of every port of the agent bridge.
	NoBridgeMeta bool
	// Exposed are the published guest ports (agentd sandbox expose).
	Exposed []Expose
	// Tunnel is the VXLAN port of the agent bridge when it is a Proxmox SDN
	// VNet (vxlan_<vnet>, VxlanPlugin generate_sdn_config): it joins this
	// node's bridge to the other nodes'. Every node is the gateway of its
	// own sandboxes, with the same address and MAC (HostMAC), so nothing of
	// a gateway crosses it, and other nodes' sandboxes reach only this
	// node's sandboxes through it, never its stack. What arrives from it is
	// judged by this node alone: never the gateway, one of this node's
	// sandboxes or a source outside the subnet, whatever the peer enforces.
	Tunnel string
}

// HostMAC is the agent bridge's MAC when the bridge is an SDN VNet: the same
// on every node, so that a sandbox's gateway neighbour entry holds wherever
// it runs. It is the MAC scheme of the sandboxes' (MAC) applied to the host
// address, which no sandbox is ever given.
func (p *Policy) HostMAC() net.HardwareAddr { return MAC(p.HostAddr) }

// Expose is a published guest port: TCP to HostPort on the host's uplink
// interface, from one of Sources, is DNATed to Addr:Port (a sandbox).
type Expose struct {
	HostPort int
	Addr     netip.Addr
	Port     int
	Sources  []netip.Prefix
}

func (e Expose) valid(subnet netip.Prefix) error {
	switch {
	case !e.Addr.Is4() || !subnet.Contains(e.Addr):
		return fmt.Errorf("exposed port %d: %s is not an address of the agent subnet %s", e.HostPort, e.Addr, subnet)
	case e.HostPort < 1 || e.HostPort > 65535 || e.Port < 1 || e.Port > 65535:
		return fmt.Errorf("exposed port %d → %d: not TCP ports", e.HostPort, e.Port)
	case len(e.Sources) == 0:
		return fmt.Errorf("exposed port %d: no source prefix", e.HostPort)
	}
	for _, s := range e.Sources {
		if !s.IsValid() || !s.Addr().Is4() {
			return fmt.Errorf("exposed port %d: source %s is not an IPv4 prefix", e.HostPort, s)
		}
	}
	return nil
}

// exposeElements are e's elements of the expose_dnat map, the
// expose_sources set and the exposed set.
func exposeElements(e Expose) (dnat string, sources []string, exposed string) {
	for _, s := range e.Sources {
		sources = append(sources, fmt.Sprintf("%s . %d", s.Masked(), e.HostPort))
	}
	return fmt.Sprintf("%d : %s . %d", e.HostPort, e.Addr, e.Port), sources, fmt.Sprintf("%s . %d", e.Addr, e.Port)
}

// Private are the ranges a sandbox must not reach: RFC 1918, CGNAT / tailnet
// (100.64/10), link-local (incl. the 169.254.169.254 metadata address),
// loopback, ULA and IPv6 link-local.
func Private() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
		"127.0.0.0/8", "fc00::/7", "fe80::/10", "::1/128"} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// Validate checks a policy before rendering.
func (p *Policy) Validate() error {
	switch {
	case p.Bridge == "" || p.Uplink == "":
		return fmt.Errorf("bridge and uplink interfaces are required")
	case p.Bridge == p.Uplink:
		return fmt.Errorf("bridge and uplink must differ (both %s)", p.Bridge)
	case !p.Subnet.IsValid() || !p.Subnet.Addr().Is4():
		return fmt.Errorf("agent subnet must be an IPv4 prefix such as 10.77.0.0/16")
	case !p.HostAddr.IsValid() || !p.Subnet.Contains(p.HostAddr):
		return fmt.Errorf("host address %s is not inside the agent subnet %s", p.HostAddr, p.Subnet)
	case p.GuestPort <= 0 || p.GuestPort > 65535:
		return fmt.Errorf("guest listener port %d is not a TCP port", p.GuestPort)
	case p.Tunnel != "" && (len(p.Tunnel) > 15 || strings.ContainsAny(p.Tunnel, "\" \t\n")):
		return fmt.Errorf("tunnel port %q is not an interface name", p.Tunnel)
	}
	for name := range p.Allowlists {
		if !setName(name) {
			return fmt.Errorf("allowlist profile name %q cannot name an nftables set", name)
		}
	}
	return nil
}

func setName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return s != ""
}

// ifname accepts the interface names nft may quote (no quote or backslash).
func ifname(s string) bool {
	return s != "" && len(s) < 16 && !strings.ContainsAny(s, "\\\" \t\n")
}

type allowChain struct {
	Name    string // set-safe profile name
	Members []string
	Rules   []string
	Replies []string // Rules seen from the other end: source and source port
}

type view struct {
	*Policy
	Blocked4  string
	Off, Nat  []string
	Sandboxes []string // every bound address
	Elements  []string // bindings set elements: "port" . mac . addr
	MACs      []string // every bound MAC
	Ports     []string // ports set elements
	Allow     []allowChain
	// Exposed ports: expose_dnat, expose_sources and exposed elements.
	Dnat, Sources, ExposedFlows []string
}

func join(ps []string) string { return strings.Join(ps, ", ") }

// elements are the bindings-set elements of b.
func elements(b Binding) []string {
	var out []string
	for _, port := range b.Ports {
		out = append(out, fmt.Sprintf("%q . %s . %s", port, b.MAC, b.Addr))
	}
	return out
}

const rulesetTmpl = `# AgentLab sandbox network policy, rendered by "agentd host network render".
# Loaded atomically with "nft -f"; applying it again replaces both tables.
add table bridge agentlab
delete table bridge agentlab
add table inet agentlab
delete table inet agentlab

# Layer 2, on the agent bridge's ports. Bridge-family hooks run for every
# bridged frame whether or not br_netfilter is loaded, before the host's ARP
# and IP stacks see it, so a spoofed frame neither reaches another sandbox nor
# changes the host's neighbour table.
table bridge agentlab {
	# (port, MAC, IPv4) of every live sandbox; agentd keeps it current.
	set bindings {
		type ifname . ether_addr . ipv4_addr
{{- if .Elements }}
		elements = { {{ join .Elements }} }
{{- end }}
	}
	# Sandbox ports; agentd adds, never removes (an unbound port stays filtered).
	set ports {
		type ifname
{{- if .Ports }}
		elements = { {{ join .Ports }} }
{{- end }}
	}
	# The live sandboxes' MACs and addresses, as in bindings: on an SDN VNet,
	# what never arrives from the tunnel (these sandboxes are on this node).
	set macs {
		type ether_addr
{{- if .MACs }}
		elements = { {{ join .MACs }} }
{{- end }}
	}
	set addrs {
		type ipv4_addr
{{- if .Sandboxes }}
		elements = { {{ join .Sandboxes }} }
{{- end }}
	}

	# What a frame from a sandbox port must be, on both paths into the bridge:
	# prerouting (bridged or for the host) and input. Frames to the reserved
	# IEEE link-local groups 01:80:c2:00:00:0X skip prerouting: the bridge
	# learns their source MAC and hands them to the stack of the port itself
	# (the tap, not the bridge), after only the input hook. Unchecked, a guest
	# whose gateway neighbour entry is 01:80:c2:00:00:0e moved another
	# sandbox's MAC to its own port and reached every host service, from any
	# address; no guest needs those groups (LLDP, 802.1X, LACP, pause).
	chain sandbox_port {
		ether daddr 01:80:c2:00:00:00-01:80:c2:00:00:0f drop comment "IEEE link-local groups: not bridged, would bypass prerouting"
		ether type != { ip, arp } drop comment "IPv4 and ARP only: no IPv6, VLAN tags or other protocols"
		ether type ip iifname . ether saddr . ip saddr != @bindings drop comment "port, MAC and address must be a live binding"
		ether type arp iifname . ether saddr . arp saddr ip != @bindings drop comment "ARP: frame source and sender address bound"
		ether type arp iifname . arp saddr ether . arp saddr ip != @bindings drop comment "ARP: sender hardware address bound"
	}

	chain prerouting {
		type filter hook prerouting priority filter; policy accept;
{{- if .Tunnel }}
		iifname "{{ .Tunnel }}" jump from_tunnel
{{- end }}
{{- if .NoBridgeMeta }}
		iifname != @ports accept comment "no nft bridge meta in this kernel: only known sandbox ports are filtered"
{{- else }}
		meta ibrname != "{{ .Bridge }}" iifname != @ports accept comment "other bridges are not ours (a tap behind a Proxmox fwbr is a sandbox port too)"
{{- end }}
		jump sandbox_port
	}

	chain input {
		type filter hook input priority filter; policy accept;
{{- if .Tunnel }}
		iifname "{{ .Tunnel }}" drop comment "other nodes' sandboxes: their own node is their host"
{{- end }}
{{- if .NoBridgeMeta }}
		iifname != @ports accept comment "no nft bridge meta in this kernel: only known sandbox ports are filtered"
{{- else }}
		meta ibrname != "{{ .Bridge }}" iifname != @ports accept comment "other bridges are not ours (a tap behind a Proxmox fwbr is a sandbox port too)"
{{- end }}
		jump sandbox_port
	}
{{- if .Tunnel }}

	# The SDN VNet's VXLAN port: one network over the nodes, one gateway
	# (same address, same MAC) on each, which stays on its node. A frame
	# from the tunnel is judged by this node alone (its peer may be a node of
	# the zone without these rules, or a VM attached to the VNet there): it
	# may be an other node's sandbox, never the gateway or one of this node's
	# sandboxes (their MACs would move to the tunnel port in the FDB).
	chain to_tunnel {
		ether saddr {{ .HostMAC }} drop comment "this node's gateway stays on this node"
		arp saddr ip {{ .HostAddr }} drop comment "this node's gateway stays on this node"
		arp daddr ip {{ .HostAddr }} drop comment "ARP for the gateway: answered on this node"
	}

	chain from_tunnel {
		ether daddr 01:80:c2:00:00:00-01:80:c2:00:00:0f drop comment "IEEE link-local groups: not bridged"
		ether saddr {{ .HostMAC }} drop comment "another node's gateway"
		ether daddr {{ .HostMAC }} drop comment "for another node's gateway"
		ether saddr @macs drop comment "this node's sandboxes are on this node"
		ether type != { ip, arp } drop comment "IPv4 and ARP only"
		ip saddr != {{ .Subnet }} drop comment "other nodes' sandboxes send from the agent subnet"
		ip saddr {{ .HostAddr }} drop comment "another node's gateway"
		ip saddr @addrs drop comment "this node's sandboxes are on this node"
		arp saddr ip != {{ .Subnet }} drop comment "other nodes' sandboxes send from the agent subnet"
		arp saddr ip {{ .HostAddr }} drop comment "another node's gateway"
		arp saddr ip @addrs drop comment "this node's sandboxes are on this node"
		arp saddr ether {{ .HostMAC }} drop comment "another node's gateway"
		arp saddr ether @macs drop comment "this node's sandboxes are on this node"
		arp daddr ip {{ .HostAddr }} drop comment "other nodes' sandboxes ask their own node"
		accept comment "other nodes' sandboxes, checked against the bindings of their node"
	}

	chain output {
		type filter hook output priority filter; policy accept;
		oifname "{{ .Tunnel }}" jump to_tunnel
	}
{{- end }}
{{- if or .IsolateSandboxes .Tunnel }}

	chain forward {
		type filter hook forward priority filter; policy accept;
{{- if .Tunnel }}
		oifname "{{ .Tunnel }}" jump to_tunnel
{{- end }}
{{- if .IsolateSandboxes }}
{{- if .NoBridgeMeta }}
		iifname @ports drop comment "isolate_sandboxes: nothing bridged between sandbox ports"
{{- if .Tunnel }}
		iifname "{{ .Tunnel }}" drop comment "isolate_sandboxes: nothing bridged from other nodes' sandboxes"
{{- end }}
{{- else }}
		meta ibrname "{{ .Bridge }}" drop comment "isolate_sandboxes: nothing bridged between sandbox ports"
{{- end }}
{{- end }}
	}
{{- end }}
}

table inet agentlab {
	# Live sandboxes: all of them, and by network mode; agentd keeps these current.
	set sandboxes {
		type ipv4_addr
{{- if .Sandboxes }}
		elements = { {{ join .Sandboxes }} }
{{- end }}
	}
	set off_hosts {
		type ipv4_addr
{{- if .Off }}
		elements = { {{ join .Off }} }
{{- end }}
	}
	set nat_hosts {
		type ipv4_addr
{{- if .Nat }}
		elements = { {{ join .Nat }} }
{{- end }}
	}
{{- range .Allow }}
	set allow_{{ .Name }}_hosts {
		type ipv4_addr
{{- if .Members }}
		elements = { {{ join .Members }} }
{{- end }}
	}
{{- end }}
	# Sandbox ports, as in the bridge table: IP never arrives on a bridge
	# port's own stack except in frames the bridge did not bridge (the
	# link-local groups), so nothing from them is accepted.
	set ports {
		type ifname
{{- if .Ports }}
		elements = { {{ join .Ports }} }
{{- end }}
	}
	set blocked4 {
		type ipv4_addr
		flags interval
		elements = { {{ .Blocked4 }} }
	}
	# Exposed ports (agentd sandbox expose; agentd keeps these current):
	# host port → sandbox address . port, the (source prefix . host port)
	# pairs allowed to use it, and the sandbox ends of those flows.
	map expose_dnat {
		type inet_service : ipv4_addr . inet_service
{{- if .Dnat }}
		elements = { {{ join .Dnat }} }
{{- end }}
	}
	set expose_sources {
		type ipv4_addr . inet_service
		flags interval
{{- if .Sources }}
		elements = { {{ join .Sources }} }
{{- end }}
	}
	set exposed {
		type ipv4_addr . inet_service
{{- if .ExposedFlows }}
		elements = { {{ join .ExposedFlows }} }
{{- end }}
	}

	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "{{ .Uplink }}" fib daddr type local ip saddr . tcp dport @expose_sources dnat ip to tcp dport map @expose_dnat comment "exposed ports, from their sources only"
	}

	chain input {
		type filter hook input priority filter; policy accept;
		iifname @ports drop comment "a sandbox port's own stack (frames the bridge did not bridge)"
{{- if .Tunnel }}
		iifname "{{ .Tunnel }}" drop comment "the tunnel port's own stack (LLDP-group frames skip the bridge's hooks)"
{{- end }}
		iifname != { "lo", "{{ .Bridge }}" } tcp dport {{ .GuestPort }} drop comment "the guest listener only for sandboxes"
		iifname != "{{ .Bridge }}" accept comment "the rest of the host's traffic is not ours"
		meta nfproto ipv6 drop comment "sandboxes are IPv4 only"
		ip saddr != @sandboxes drop comment "unknown source: no live sandbox has this address"
		# Only replies to the host's own connections skip the rules below: a
		# flow the sandbox opened is judged by its mode at every packet, so
		# one opened as nat does not outlive a move to off.
		ct direction reply ct state established,related accept comment "replies to the host's connections"
		ip daddr {{ .HostAddr }} tcp dport {{ .GuestPort }} accept comment "agentd guest listener"
		ip saddr @off_hosts drop comment "mode off: nothing else, not even DNS"
		ip daddr {{ .HostAddr }} udp dport 53 accept comment "DNS"
		ip daddr {{ .HostAddr }} tcp dport 53 accept comment "DNS over TCP"
		ip daddr {{ .HostAddr }} icmp type echo-request accept
		drop comment "nothing else on the host"
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname @ports drop comment "a sandbox port's own stack (frames the bridge did not bridge)"
{{- if .Tunnel }}
		iifname "{{ .Tunnel }}" drop comment "the tunnel port's own stack (LLDP-group frames skip the bridge's hooks)"
{{- end }}
		iifname != "{{ .Bridge }}" oifname != "{{ .Bridge }}" accept comment "not agent-bridge traffic"
		iifname "{{ .Uplink }}" ct status dnat ip daddr @sandboxes ip daddr . tcp dport @exposed accept comment "exposed ports: only flows prerouting DNATed (from their sources)"
		iifname != "{{ .Bridge }}" jump to_sandbox
		meta nfproto ipv6 drop comment "sandboxes are IPv4 only"
{{- if and .Tunnel (not .IsolateSandboxes) }}
		iifname "{{ .Bridge }}" oifname "{{ .Bridge }}" ip saddr {{ .Subnet }} ip daddr {{ .Subnet }} accept comment "bridged between sandboxes of two nodes (br_netfilter): the bridge tables checked both ends"
{{- end }}
		ip saddr != @sandboxes drop comment "unknown source: reaches nothing"
		oifname "{{ .Uplink }}" ct direction reply ct status dnat ip saddr . tcp sport @exposed accept comment "replies of exposed ports' flows"
		# No established shortcut: what a sandbox sends is judged by its
		# current mode at every packet (the rules below are stateless), so a
		# flow opened as nat does not outlive a move to off or an allowlist.
{{- if .IsolateSandboxes }}
		oifname "{{ .Bridge }}" drop comment "sandbox to sandbox (seen here when br_netfilter passes bridged frames)"
{{- else }}
		oifname "{{ .Bridge }}" ip daddr @sandboxes accept comment "sandbox to sandbox allowed (isolate_sandboxes off)"
		oifname "{{ .Bridge }}" drop
{{- end }}
		ip saddr @off_hosts drop comment "mode off: no network"
{{- range .Allow }}
		ip saddr @allow_{{ .Name }}_hosts jump allow_{{ .Name }}
{{- end }}
		ip daddr @blocked4 drop comment "private, link-local, metadata, tailnet"
		oifname "{{ .Uplink }}" ip saddr @nat_hosts accept comment "mode nat: the internet"
		drop comment "default deny"
	}

	# Into the agent bridge from elsewhere: only replies, only to a live
	# sandbox, and only from what its mode lets it reach now (a flow's
	# conntrack entry outlives a change of mode or binding).
	chain to_sandbox {
		ct state != { established, related } drop comment "nothing opens connections into sandboxes"
		meta nfproto ipv6 drop comment "sandboxes are IPv4 only"
		ip daddr != @sandboxes drop comment "no live sandbox has this address"
		ip daddr @off_hosts drop comment "mode off: not even replies to flows opened before"
{{- range .Allow }}
		ip daddr @allow_{{ .Name }}_hosts jump allow_{{ .Name }}_replies
{{- end }}
		accept comment "replies to sandboxes"
	}
{{- range .Allow }}

	chain allow_{{ .Name }} {
{{- range .Rules }}
		{{ . }}
{{- end }}
		drop comment "allowlist: nothing else"
	}

	chain allow_{{ .Name }}_replies {
{{- range .Replies }}
		{{ . }}
{{- end }}
		drop comment "allowlist: replies from its entries only"
	}
{{- end }}

	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "{{ .Uplink }}" ip saddr {{ .Subnet }} masquerade
	}
}
`

// Ruleset renders the nftables ruleset.
func (p *Policy) Ruleset() (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	blocked := p.Blocked
	if len(blocked) == 0 {
		blocked = Private()
	}
	v := view{Policy: p}
	// Sandboxes are IPv4 only (IPv6 from the bridge is dropped outright), so
	// only the IPv4 ranges become a set.
	var b4 []string
	for _, b := range blocked {
		if b.Addr().Is4() {
			b4 = append(b4, b.String())
		}
	}
	v.Blocked4 = join(b4)
	names := make([]string, 0, len(p.Allowlists))
	for n := range p.Allowlists {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := &allowChain{Name: strings.ReplaceAll(n, "-", "_")}
		for _, a := range p.Allowlists[n] {
			fam := "ip"
			if a.Prefix.Addr().Is6() {
				continue // sandboxes are IPv4 only
			}
			rule := fmt.Sprintf("%s daddr %s", fam, a.Prefix)
			reply := fmt.Sprintf("%s saddr %s", fam, a.Prefix)
			if a.Port > 0 {
				rule += fmt.Sprintf(" tcp dport %d", a.Port)
				reply += fmt.Sprintf(" tcp sport %d", a.Port)
			}
			c.Rules = append(c.Rules, rule+" accept")
			c.Replies = append(c.Replies, reply+" accept")
		}
		v.Allow = append(v.Allow, *c)
	}
	bs := append([]Binding(nil), p.Bindings...)
	sort.Slice(bs, func(i, j int) bool { return bs[i].Addr.Less(bs[j].Addr) })
	for _, b := range bs {
		if err := b.valid(p.Subnet); err != nil {
			return "", err
		}
		v.Sandboxes = append(v.Sandboxes, b.Addr.String())
		v.MACs = append(v.MACs, b.MAC.String())
		v.Elements = append(v.Elements, elements(b)...)
		for _, port := range b.Ports {
			v.Ports = append(v.Ports, fmt.Sprintf("%q", port))
		}
		switch mode := b.Mode; {
		case mode == "off":
			v.Off = append(v.Off, b.Addr.String())
		case mode == "nat":
			v.Nat = append(v.Nat, b.Addr.String())
		case strings.HasPrefix(mode, "allowlist:"):
			name := strings.ReplaceAll(strings.TrimPrefix(mode, "allowlist:"), "-", "_")
			found := false
			for i := range v.Allow {
				if v.Allow[i].Name == name {
					v.Allow[i].Members = append(v.Allow[i].Members, b.Addr.String())
					found = true
				}
			}
			if !found {
				// Bound, so it reaches the guest listener, but in no mode set:
				// the forward chain's default deny applies.
				continue
			}
		}
	}
	ex := append([]Expose(nil), p.Exposed...)
	sort.Slice(ex, func(i, j int) bool { return ex[i].HostPort < ex[j].HostPort })
	for _, e := range ex {
		if err := e.valid(p.Subnet); err != nil {
			return "", err
		}
		d, src, flow := exposeElements(e)
		v.Dnat = append(v.Dnat, d)
		v.Sources = append(v.Sources, src...)
		v.ExposedFlows = append(v.ExposedFlows, flow)
	}
	var buf bytes.Buffer
	t := template.Must(template.New("nft").Funcs(template.FuncMap{"join": join}).Parse(rulesetTmpl))
	if err := t.Execute(&buf, v); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// Interfaces renders the /etc/network/interfaces stanza of the agent bridge.
func (p *Policy) Interfaces() string {
	bits := p.Subnet.Bits()
	return fmt.Sprintf(`# AgentLab agent bridge: sandboxes only; no physical port.
auto %s
iface %s inet static
	address %s/%d
	bridge-ports none
	bridge-stp off
	bridge-fd 0
	post-up echo 1 > /proc/sys/net/ipv4/ip_forward
	post-up ip %s
`, p.Bridge, p.Bridge, p.HostAddr, bits, strings.Join(NoLinkLocalLearn("$IFACE"), " "))
}

// NoLinkLocalLearn are the ip(8) arguments that stop bridge from learning
// source MACs from frames to the IEEE link-local groups: the bridge learns
// from an LLDP-addressed frame (01:80:c2:00:00:0e) before any netfilter hook,
// so no nft rule can stop a sandbox from claiming another's MAC that way
// (the host's frames for that sandbox would go to its port).
// "agentd host check" verifies it (NoLinkLocalLearnPath).
func NoLinkLocalLearn(bridge string) []string {
	return []string{"link", "set", "dev", bridge, "type", "bridge", "no_linklocal_learn", "1"}
}

// NoLinkLocalLearnPath is the sysfs file that shows the option ("1": set).
func NoLinkLocalLearnPath(bridge string) string {
	return "/sys/class/net/" + bridge + "/bridge/no_linklocal_learn"
}

// HasBridgeMeta reports whether the kernel evaluates nft's bridge meta
// expressions (meta ibrname), which scope the bridge table to the agent
// bridge; Proxmox's kernels have them (CONFIG_NFT_BRIDGE_META=m), minimal
// ones may not.
func HasBridgeMeta(ctx context.Context) bool {
	return Check(ctx, "add table bridge agentlab_probe\nadd chain bridge agentlab_probe p { type filter hook prerouting priority filter; policy accept; }\n"+
		"add rule bridge agentlab_probe p meta ibrname \"agentlab0\" accept\n") == nil
}

// Check runs "nft -c -f" on a ruleset (syntax and kernel support, no change).
func Check(ctx context.Context, ruleset string) error {
	return nft(ctx, "-c", ruleset)
}

// Apply loads a ruleset atomically with "nft -f".
func Apply(ctx context.Context, ruleset string) error {
	return nft(ctx, "", ruleset)
}

func nft(ctx context.Context, flag, ruleset string) error {
	path, err := exec.LookPath("nft")
	if err != nil {
		return fmt.Errorf("nft not found (apt install nftables): %w", err)
	}
	f, err := os.CreateTemp("", "agentlab-*.nft")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(ruleset); err != nil {
		f.Close()
		return err
	}
	f.Close()
	args := []string{"-f", f.Name()}
	if flag != "" {
		args = append([]string{flag}, args...)
	}
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("nft %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// valid checks a binding before it becomes set elements: inside the subnet,
// a unicast MAC, port names nft can carry.
func (b Binding) valid(subnet netip.Prefix) error {
	if !b.Addr.Is4() || !subnet.Contains(b.Addr) {
		return fmt.Errorf("binding %s: not an address of the agent subnet %s", b.Addr, subnet)
	}
	if len(b.MAC) != 6 || b.MAC[0]&1 != 0 {
		return fmt.Errorf("binding %s: %q is not a unicast MAC address", b.Addr, b.MAC)
	}
	if len(b.Ports) == 0 {
		return fmt.Errorf("binding %s: no bridge port", b.Addr)
	}
	for _, port := range b.Ports {
		if !ifname(port) {
			return fmt.Errorf("binding %s: %q is not an interface name", b.Addr, port)
		}
	}
	return nil
}

// Sets keeps the sets of a loaded ruleset current as sandboxes come and go,
// so a sandbox is bound and filtered by its mode from its first packet to its
// last, not only after the next "host network apply". Each change is one nft
// transaction over both tables: a binding is never half in place.
type Sets struct {
	// Command runs nft (default ["nft"]; tests prefix "ip netns exec NS").
	Command []string
}

func (s Sets) run(ctx context.Context, script string) error {
	cmd := s.Command
	if len(cmd) == 0 {
		cmd = []string{"nft"}
	}
	c := exec.CommandContext(ctx, cmd[0], append(cmd[1:], "-f", "-")...)
	c.Stdin = strings.NewReader(script)
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// SetName is the set of a mode ("off", "nat", "allowlist:<profile>").
func SetName(mode string) string {
	switch {
	case mode == "off":
		return "off_hosts"
	case strings.HasPrefix(mode, "allowlist:"):
		return "allow_" + strings.ReplaceAll(strings.TrimPrefix(mode, "allowlist:"), "-", "_") + "_hosts"
	}
	return "nat_hosts"
}

func (s Sets) script(b Binding, verb string) string {
	var sb strings.Builder
	sets := []string{"sandboxes", SetName(b.Mode)}
	for _, set := range sets {
		if verb == "delete" {
			// "delete element" fails on a missing element (nft 1.0.6 has no
			// "destroy"): adding it first in the same transaction makes the
			// removal idempotent.
			fmt.Fprintf(&sb, "add element inet agentlab %s { %s }\n", set, b.Addr)
		}
		fmt.Fprintf(&sb, "%s element inet agentlab %s { %s }\n", verb, set, b.Addr)
	}
	if verb == "add" {
		for _, port := range b.Ports {
			fmt.Fprintf(&sb, "add element bridge agentlab ports { %q }\n", port)
			fmt.Fprintf(&sb, "add element inet agentlab ports { %q }\n", port)
		}
	}
	var bridge []string
	for _, e := range elements(b) {
		bridge = append(bridge, "bindings { "+e+" }")
	}
	bridge = append(bridge, "macs { "+b.MAC.String()+" }", "addrs { "+b.Addr.String()+" }")
	for _, e := range bridge {
		if verb == "delete" {
			fmt.Fprintf(&sb, "add element bridge agentlab %s\n", e)
		}
		fmt.Fprintf(&sb, "%s element bridge agentlab %s\n", verb, e)
	}
	return sb.String()
}

// Add binds b: its (port, MAC, address) into the bridge table's bindings and
// its address into the inet table's sandboxes and mode set (idempotent).
func (s Sets) Add(ctx context.Context, b Binding) error {
	if err := b.valid(netip.MustParsePrefix("0.0.0.0/0")); err != nil {
		return err
	}
	return s.run(ctx, s.script(b, "add"))
}

// Remove unbinds b (idempotent: a binding not in the sets is no error).
func (s Sets) Remove(ctx context.Context, b Binding) error {
	if err := b.valid(netip.MustParsePrefix("0.0.0.0/0")); err != nil {
		return err
	}
	return s.run(ctx, s.script(b, "delete"))
}

func (s Sets) exposeScript(e Expose, verb string) string {
	var sb strings.Builder
	d, src, flow := exposeElements(e)
	add := func(set, el string) {
		if verb == "delete" {
			fmt.Fprintf(&sb, "add element inet agentlab %s { %s }\n", set, el)
		}
		fmt.Fprintf(&sb, "%s element inet agentlab %s { %s }\n", verb, set, el)
	}
	add("expose_dnat", d)
	for _, el := range src {
		add("expose_sources", el)
	}
	add("exposed", flow)
	return sb.String()
}

// Expose publishes e: its DNAT map entry, source pairs and flow (one nft
// transaction, idempotent).
func (s Sets) Expose(ctx context.Context, e Expose) error {
	if err := e.valid(netip.MustParsePrefix("0.0.0.0/0")); err != nil {
		return err
	}
	return s.run(ctx, s.exposeScript(e, "add"))
}

// Unexpose removes e (idempotent).
func (s Sets) Unexpose(ctx context.Context, e Expose) error {
	if err := e.valid(netip.MustParsePrefix("0.0.0.0/0")); err != nil {
		return err
	}
	return s.run(ctx, s.exposeScript(e, "delete"))
}

// VNetInterfaces is the stanza of every node when the agent bridge is a
// Proxmox SDN VNet: Proxmox writes the bridge itself
// (/etc/network/interfaces.d/sdn), but a VXLAN zone is layer 2 only and
// gives it no address, so each node adds the gateway address, with the MAC
// every node shares (HostMAC), in its own stanza (ifupdown2 merges the
// stanzas of an interface).
func (p *Policy) VNetInterfaces() string {
	return fmt.Sprintf(`# AgentLab agent network on the Proxmox SDN VNet %s, on every node: each node
# is the gateway of its own sandboxes, with the same address and MAC (the
# nftables ruleset keeps each gateway on its node). The bridge and its VXLAN
# port come from the SDN config (agentd host network apply).
iface %s inet static
	address %s/%d
	hwaddress %s
	post-up echo 1 > /proc/sys/net/ipv4/ip_forward
	post-up ip %s
`, p.Bridge, p.Bridge, p.HostAddr, p.Subnet.Bits(), p.HostMAC(), strings.Join(NoLinkLocalLearn("$IFACE"), " "))
}
