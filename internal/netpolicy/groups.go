package netpolicy

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/netip"
	"sort"
	"strconv"

	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
)

// Proxmox security group names are at most 18 characters of
// [A-Za-z][A-Za-z0-9_-]; allowlist profiles get a stable hashed name.
const (
	GroupOff = "agentlab-off"
	GroupNat = "agentlab-nat"
)

// GroupName is the security group a profile's sandboxes use.
func GroupName(p *profile.Profile) string {
	switch p.Network.Mode {
	case "off":
		return GroupOff
	case "allowlist":
		sum := sha1.Sum([]byte(p.Name))
		return "agentlab-a" + hex.EncodeToString(sum[:])[:8]
	}
	return GroupNat
}

// Mode is the mode key of a profile's sandboxes in the nftables sets: "off",
// "nat" or "allowlist:<profile>" (see SetName).
func Mode(p *profile.Profile) string {
	if p == nil {
		return "nat"
	}
	if p.Network.Mode == "allowlist" {
		return "allowlist:" + p.Name
	}
	return p.Network.Mode
}

// base lets every mode reach agentd's guest listener and DNS on the host.
func base(host netip.Addr, guestPort int) []pve.FwRule {
	h := host.String()
	return []pve.FwRule{
		{Type: "out", Action: "ACCEPT", Dest: h, Proto: "tcp", DPort: strconv.Itoa(guestPort), Comment: "agentd guest listener"},
		{Type: "out", Action: "ACCEPT", Dest: h, Proto: "udp", DPort: "53", Comment: "DNS"},
		{Type: "out", Action: "ACCEPT", Dest: h, Proto: "tcp", DPort: "53", Comment: "DNS"},
	}
}

// Group is a security group to create with its rules and comment.
type Group struct {
	Name    string
	Comment string
	Rules   []pve.FwRule
}

// Groups are the security groups the profiles need, sorted by name.
func Groups(profiles profile.Set, host netip.Addr, guestPort int) ([]Group, error) {
	byName := map[string]Group{}
	nat := base(host, guestPort)
	for _, b := range Private() {
		if b.Addr().Is4() {
			nat = append(nat, pve.FwRule{Type: "out", Action: "DROP", Dest: b.String(), Comment: "private, link-local, metadata, tailnet"})
		}
	}
	byName[GroupNat] = Group{GroupNat, "AgentLab mode nat: internet yes, private ranges no", nat}
	byName[GroupOff] = Group{GroupOff, "AgentLab mode off: no network", append(base(host, guestPort),
		pve.FwRule{Type: "out", Action: "DROP", Comment: "everything else"})}
	for _, name := range profiles.Names() {
		p := profiles[name]
		if p.Network.Mode != "allowlist" {
			continue
		}
		g := Group{Name: GroupName(p), Comment: "AgentLab mode allowlist of profile " + p.Name, Rules: base(host, guestPort)}
		for _, e := range p.Network.Allowlist {
			a, err := profile.ParseAllow(e)
			if err != nil {
				return nil, fmt.Errorf("profile %s: %w", p.Name, err)
			}
			r := pve.FwRule{Type: "out", Action: "ACCEPT", Dest: a.Prefix.String(), Comment: "allowlist"}
			if a.Port > 0 {
				r.Proto, r.DPort = "tcp", strconv.Itoa(a.Port)
			}
			g.Rules = append(g.Rules, r)
		}
		g.Rules = append(g.Rules, pve.FwRule{Type: "out", Action: "DROP", Comment: "everything else"})
		byName[g.Name] = g
	}
	out := make([]Group, 0, len(byName))
	for _, g := range byName {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Allowlists converts the profiles' allowlists for the nftables ruleset.
func Allowlists(profiles profile.Set) map[string][]Allow {
	out := map[string][]Allow{}
	for _, name := range profiles.Names() {
		p := profiles[name]
		if p.Network.Mode != "allowlist" {
			continue
		}
		for _, e := range p.Network.Allowlist {
			if a, err := profile.ParseAllow(e); err == nil {
				out[p.Name] = append(out[p.Name], Allow{Prefix: a.Prefix, Port: a.Port})
			}
		}
	}
	return out
}
