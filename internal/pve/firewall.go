package pve

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// FwRule is one Proxmox firewall rule (security group or VM rule).
type FwRule struct {
	Type    string `json:"type"`   // in | out | group
	Action  string `json:"action"` // ACCEPT | DROP | REJECT | <group>
	Dest    string `json:"dest,omitempty"`
	Proto   string `json:"proto,omitempty"`
	DPort   string `json:"dport,omitempty"`
	Comment string `json:"comment,omitempty"`
	Enable  int    `json:"enable"`
	// Errors are the properties Proxmox stored but could not use: it keeps an
	// invalid rule (disabled in effect) instead of refusing it.
	Errors map[string]string `json:"errors,omitempty"`
}

func (r FwRule) body() map[string]any {
	b := map[string]any{"type": r.Type, "action": r.Action, "enable": 1}
	for k, v := range map[string]string{"dest": r.Dest, "proto": r.Proto, "dport": r.DPort, "comment": r.Comment} {
		if v != "" {
			b[k] = v
		}
	}
	return b
}

func same(a, b []FwRule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Type != y.Type || x.Action != y.Action || x.Dest != y.Dest || x.Proto != y.Proto || x.DPort != y.DPort ||
			x.Comment != y.Comment || y.Enable != 1 || len(y.Errors) > 0 {
			return false
		}
	}
	return true
}

// GroupRules lists a security group's rules in order.
func (c *Client) GroupRules(ctx context.Context, group string) ([]FwRule, error) {
	var rules []FwRule
	if err := c.api.Get(ctx, "/cluster/firewall/groups/"+url.PathEscape(group), &rules); err != nil {
		return nil, wrap("list rules of security group "+group, err)
	}
	return rules, nil
}

// EnsureGroup makes a cluster security group hold exactly rules, in order.
// It changes nothing when the group already matches (idempotent apply).
func (c *Client) EnsureGroup(ctx context.Context, group, comment string, rules []FwRule) (changed bool, err error) {
	var groups []struct {
		Group string `json:"group"`
	}
	if err := c.api.Get(ctx, "/cluster/firewall/groups", &groups); err != nil {
		return false, wrap("list security groups", err)
	}
	exists := false
	for _, g := range groups {
		exists = exists || g.Group == group
	}
	if !exists {
		if err := c.api.Post(ctx, "/cluster/firewall/groups", map[string]any{"group": group, "comment": comment}, nil); err != nil {
			return false, wrap("create security group "+group, err)
		}
	}
	cur, err := c.GroupRules(ctx, group)
	if err != nil {
		return false, err
	}
	if exists && same(rules, cur) {
		return false, nil
	}
	for i := len(cur) - 1; i >= 0; i-- {
		if err := c.api.Delete(ctx, fmt.Sprintf("/cluster/firewall/groups/%s/%d", url.PathEscape(group), i), nil); err != nil {
			return false, wrap(fmt.Sprintf("delete rule %d of security group %s", i, group), err)
		}
	}
	for i, r := range rules {
		b := r.body()
		b["pos"] = i // new rules go to the top by default; keep our order
		if err := c.api.Post(ctx, "/cluster/firewall/groups/"+url.PathEscape(group), b, nil); err != nil {
			return false, wrap(fmt.Sprintf("add rule %d to security group %s", i, group), err)
		}
	}
	got, err := c.GroupRules(ctx, group)
	if err != nil {
		return false, err
	}
	if !same(rules, got) {
		return false, &Error{Op: "apply security group " + group, Msg: fmt.Sprintf("Proxmox kept the rules differently: %s", describe(got))}
	}
	return true, nil
}

func describe(rules []FwRule) string {
	var parts []string
	for i, r := range rules {
		s := fmt.Sprintf("%d: %s %s %s %s %s enable=%d", i, r.Type, r.Action, r.Dest, r.Proto, r.DPort, r.Enable)
		if len(r.Errors) > 0 {
			s += fmt.Sprintf(" errors=%v", r.Errors)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// VMFirewall enables a VM's firewall (inbound and outbound policy ACCEPT: the
// group decides) and makes the security group its only rule. Proxmox stores
// rules it cannot use with "errors" (e.g. a missing group), so the rule is
// read back and checked. With a valid addr the VM is also bound to it:
// the ipfilter-net0 IP set holds exactly addr, and ipfilter=1, macfilter=1.
//
// What that enforces, per pve-firewall (src/PVE/Firewall.pm):
// ruleset_create_vm_chain adds, to the VM's OUT chain, a DROP of frames
// whose source MAC is not net0's (macfilter, on unless set to 0) and of
// packets whose source is not in ipfilter-net0 (iptables: only for bridged
// traffic that br_netfilter passes to iptables, which enable_bridge_firewall
// switches on). ARP is filtered only by ebtables, in generate_tap_layer2filter
// (called from compile_ebtables_filter, skipped when the cluster option
// ebtables=0): the tap's chain drops a foreign source MAC and ARP whose
// --arp-ip-src is not one of the IPv4 entries of an explicitly defined
// ipfilter-net0 set (the implicit set that ipfilter=1 alone creates does not
// feed the ARP filter for VMs, hence the explicit set). The ARP sender
// hardware address is not checked there; our bridge table checks it. Nothing
// of this applies unless the datacenter firewall is enabled (compile returns
// empty rulesets otherwise).
func (c *Client) VMFirewall(ctx context.Context, vmid int, group string, addr netip.Addr) error {
	op := fmt.Sprintf("firewall of VM %d", vmid)
	var rules []FwRule
	if err := c.api.Get(ctx, c.vmPath(vmid, "/firewall/rules"), &rules); err != nil {
		return wrap(op, err)
	}
	want := []FwRule{{Type: "group", Action: group, Comment: "agentlab network mode"}}
	if !same(want, rules) {
		if len(rules) > 0 {
			return &Error{Op: op, Msg: fmt.Sprintf("VM already has firewall rules (%s); agentd manages only VMs it created", describe(rules))}
		}
		// No read-back: PVE's create_rule validates the rule (verify_rule:
		// "no such security group" for a missing group) before it writes it.
		if err := c.api.Post(ctx, c.vmPath(vmid, "/firewall/rules"), want[0].body(), nil); err != nil {
			if strings.Contains(err.Error(), "no such security group") {
				return &Error{Op: op, Msg: fmt.Sprintf("security group %s does not exist (run agentd host network apply to create the security groups): %v", group, err)}
			}
			return wrap(op, err)
		}
	}
	opts := map[string]any{"enable": 1, "policy_in": "ACCEPT", "policy_out": "ACCEPT"}
	if addr.IsValid() {
		// The set first: ipfilter=1 without it would be an empty set that
		// lets no IPv4 through at all.
		if err := c.ensureIPFilter(ctx, vmid, addr); err != nil {
			return wrap(op, err)
		}
		opts["ipfilter"], opts["macfilter"] = 1, 1
	}
	if err := c.api.Put(ctx, c.vmPath(vmid, "/firewall/options"), opts, nil); err != nil {
		return wrap(op, err)
	}
	return nil
}

// IPFilterSet is the VM IP set pve-firewall binds net0's sources to
// (compute_ipfilter_ipset_name: "ipfilter-" + the device).
const IPFilterSet = "ipfilter-net0"

// ensureIPFilter makes the VM's ipfilter-net0 IP set hold exactly addr.
// It creates the set without listing the sets first: create_ipset refuses
// a name that exists ("IPSet '…' already exists"), and only then are its
// entries read, so a fresh VM costs no read and a resumed one still ends
// with exactly addr.
func (c *Client) ensureIPFilter(ctx context.Context, vmid int, addr netip.Addr) error {
	var entries []struct {
		CIDR string `json:"cidr"`
	}
	err := wrap("create IP set "+IPFilterSet, c.api.Post(ctx, c.vmPath(vmid, "/firewall/ipset"),
		map[string]any{"name": IPFilterSet, "comment": "agentlab: the sandbox's assigned address"}, nil))
	switch {
	case err == nil:
		// Just created: empty, nothing to read.
	case errors.Is(err, ErrExists):
		if err := c.api.Get(ctx, c.vmPath(vmid, "/firewall/ipset/"+IPFilterSet), &entries); err != nil {
			return fmt.Errorf("list IP set %s: %w", IPFilterSet, err)
		}
	default:
		return err
	}
	have := false
	for _, e := range entries {
		if e.CIDR == addr.String() || e.CIDR == addr.String()+"/32" {
			have = true
			continue
		}
		// A clone copies the template's .fw file: nothing else may stay bound.
		if err := c.api.Delete(ctx, c.vmPath(vmid, "/firewall/ipset/"+IPFilterSet+"/"+url.PathEscape(e.CIDR)), nil); err != nil {
			return fmt.Errorf("remove %s from IP set %s: %w", e.CIDR, IPFilterSet, err)
		}
	}
	if !have {
		if err := c.api.Post(ctx, c.vmPath(vmid, "/firewall/ipset/"+IPFilterSet), map[string]any{"cidr": addr.String()}, nil); err != nil {
			return fmt.Errorf("add %s to IP set %s: %w", addr, IPFilterSet, err)
		}
	}
	return nil
}

// VMFirewallRules reads a VM's firewall rules.
func (c *Client) VMFirewallRules(ctx context.Context, vmid int) ([]FwRule, map[string]any, error) {
	var rules []FwRule
	if err := c.api.Get(ctx, c.vmPath(vmid, "/firewall/rules"), &rules); err != nil {
		return nil, nil, wrap(fmt.Sprintf("firewall rules of VM %d", vmid), err)
	}
	var opts map[string]any
	if err := c.api.Get(ctx, c.vmPath(vmid, "/firewall/options"), &opts); err != nil {
		return nil, nil, wrap(fmt.Sprintf("firewall options of VM %d", vmid), err)
	}
	return rules, opts, nil
}

// Permissions returns the token's privileges on "/".
func (c *Client) Permissions(ctx context.Context) (map[string]bool, error) {
	var perms map[string]map[string]int
	if err := c.api.Get(ctx, "/access/permissions?path=/", &perms); err != nil {
		return nil, wrap("read API token permissions", err)
	}
	out := map[string]bool{}
	for p, v := range perms["/"] {
		out[p] = v != 0
	}
	return out, nil
}

// StorageInfo is one storage as a node reports it.
type StorageInfo struct {
	Storage string `json:"storage"`
	Type    string `json:"type"`
	Content string `json:"content"`
	Active  int    `json:"active"`
	// Shared is 1 for a storage every node reads (PVE::API2::Storage::Status
	// index): a migration leaves its volumes where they are.
	Shared int `json:"shared"`
}

// Storages lists the node's storages.
func (c *Client) Storages(ctx context.Context) ([]StorageInfo, error) {
	var out []StorageInfo
	if err := c.api.Get(ctx, fmt.Sprintf("/nodes/%s/storage", c.node), &out); err != nil {
		return nil, wrap("list storages", err)
	}
	return out, nil
}

// ClusterFirewallOptions reads the datacenter firewall options (enable,
// ebtables, policies): pve-firewall compiles no rules while enable is off.
func (c *Client) ClusterFirewallOptions(ctx context.Context) (map[string]any, error) {
	var opts map[string]any
	if err := c.api.Get(ctx, "/cluster/firewall/options", &opts); err != nil {
		return nil, wrap("read datacenter firewall options", err)
	}
	return opts, nil
}
