// Package netpolicy renders the host side of sandbox network isolation: the
// agent bridge's interfaces stanza and one nftables ruleset (NAT out of the
// uplink; no route from sandboxes to private, ULA, link-local, metadata or
// tailnet ranges, nor to the host except DNS, DHCP and the guest listener;
// anti-spoofing; per-mode address sets), and loads it atomically.
package netpolicy

import (
	"bytes"
	"context"
	"fmt"
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

// Policy is what the ruleset encodes.
type Policy struct {
	Bridge    string       // vmbr1
	Subnet    netip.Prefix // 10.77.0.0/16
	HostAddr  netip.Addr   // 10.77.0.1
	Uplink    string       // the interface NAT leaves through
	GuestPort int          // agentd's guest listener on HostAddr
	// Blocked are the destinations sandboxes never reach (defaults: Private).
	Blocked []netip.Prefix
	// IsolateSandboxes drops routed sandbox ↔ sandbox traffic.
	IsolateSandboxes bool
	// Allowlists are the allowlist-mode profiles' entries, by profile name.
	Allowlists map[string][]Allow
	// Members fill the mode sets: sandbox IPv4 address → mode ("off",
	// "nat", or "allowlist:<profile>").
	Members map[netip.Addr]string
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

type allowChain struct {
	Name    string // set-safe profile name
	Members []string
	Rules   []string
}

type view struct {
	*Policy
	Blocked4 string
	Off, Nat []string
	Allow    []allowChain
}

func join(ps []string) string { return strings.Join(ps, ", ") }

const rulesetTmpl = `# AgentLab sandbox network policy, rendered by "agentd host network render".
# Loaded atomically with "nft -f"; applying it again replaces it.
add table inet agentlab
delete table inet agentlab
table inet agentlab {
	# Sandboxes by network mode; agentd keeps these sets current.
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
	set blocked4 {
		type ipv4_addr
		flags interval
		elements = { {{ .Blocked4 }} }
	}

	chain input {
		type filter hook input priority filter; policy accept;
		iifname "{{ .Bridge }}" udp sport 68 udp dport 67 accept comment "DHCP (sent from 0.0.0.0)"
		iifname "{{ .Bridge }}" ip saddr != {{ .Subnet }} drop comment "anti-spoofing: sandbox sources stay in the agent subnet"
		iifname "{{ .Bridge }}" meta nfproto ipv6 drop comment "sandboxes are IPv4 only"
		iifname "{{ .Bridge }}" ct state established,related accept
		iifname "{{ .Bridge }}" udp dport 53 accept comment "DNS"
		iifname "{{ .Bridge }}" tcp dport 53 accept comment "DNS over TCP"
		iifname "{{ .Bridge }}" ip daddr {{ .HostAddr }} tcp dport {{ .GuestPort }} accept comment "agentd guest listener"
		iifname "{{ .Bridge }}" icmp type echo-request accept
		iifname "{{ .Bridge }}" drop comment "nothing else on the host"
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept
		iifname "{{ .Bridge }}" ip saddr != {{ .Subnet }} drop comment "anti-spoofing"
		iifname "{{ .Bridge }}" meta nfproto ipv6 drop
{{- if .IsolateSandboxes }}
		iifname "{{ .Bridge }}" oifname "{{ .Bridge }}" drop comment "sandbox to sandbox"
{{- end }}
		iifname "{{ .Bridge }}" ip saddr @off_hosts drop comment "mode off: no network"
{{- range .Allow }}
		iifname "{{ $.Bridge }}" ip saddr @allow_{{ .Name }}_hosts jump allow_{{ .Name }}
{{- end }}
		iifname "{{ .Bridge }}" ip daddr @blocked4 drop comment "private, link-local, metadata, tailnet"
		iifname "{{ .Bridge }}" oifname "{{ .Uplink }}" accept comment "mode nat: the internet"
		iifname "{{ .Bridge }}" drop
		oifname "{{ .Bridge }}" ct state new drop comment "nothing opens connections into sandboxes"
	}
{{- range .Allow }}

	chain allow_{{ .Name }} {
{{- range .Rules }}
		{{ . }}
{{- end }}
		drop comment "allowlist: nothing else"
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
	addrs := make([]netip.Addr, 0, len(p.Members))
	for a := range p.Members {
		addrs = append(addrs, a)
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
	names := make([]string, 0, len(p.Allowlists))
	for n := range p.Allowlists {
		names = append(names, n)
	}
	sort.Strings(names)
	chains := map[string]*allowChain{}
	for _, n := range names {
		c := &allowChain{Name: strings.ReplaceAll(n, "-", "_")}
		for _, a := range p.Allowlists[n] {
			fam := "ip"
			if a.Prefix.Addr().Is6() {
				continue // sandboxes are IPv4 only
			}
			rule := fmt.Sprintf("%s daddr %s", fam, a.Prefix)
			if a.Port > 0 {
				rule += fmt.Sprintf(" tcp dport %d", a.Port)
			}
			c.Rules = append(c.Rules, rule+" accept")
		}
		chains[n] = c
		v.Allow = append(v.Allow, *c)
	}
	for _, a := range addrs {
		if !a.Is4() || !p.Subnet.Contains(a) {
			continue
		}
		switch mode := p.Members[a]; {
		case mode == "off":
			v.Off = append(v.Off, a.String())
		case mode == "nat":
			v.Nat = append(v.Nat, a.String())
		case strings.HasPrefix(mode, "allowlist:"):
			name := strings.TrimPrefix(mode, "allowlist:")
			for i := range v.Allow {
				if v.Allow[i].Name == strings.ReplaceAll(name, "-", "_") {
					v.Allow[i].Members = append(v.Allow[i].Members, a.String())
				}
			}
		}
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
`, p.Bridge, p.Bridge, p.HostAddr, bits)
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

// Sets keeps the mode sets of a loaded ruleset current as sandboxes get and
// lose addresses, so a sandbox is filtered by its mode from its first packet
// to its last, not only after the next "host network apply".
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

// Add puts addr into its mode's set ("add element" is idempotent).
func (s Sets) Add(ctx context.Context, addr netip.Addr, mode string) error {
	return s.run(ctx, fmt.Sprintf("add element inet agentlab %s { %s }\n", SetName(mode), addr))
}

// Remove takes addr out of the mode's set.
func (s Sets) Remove(ctx context.Context, addr netip.Addr, mode string) error {
	return s.run(ctx, fmt.Sprintf("delete element inet agentlab %s { %s }\n", SetName(mode), addr))
}
