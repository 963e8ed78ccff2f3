package pve

import (
	"context"
	"fmt"
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
// read back and checked.
func (c *Client) VMFirewall(ctx context.Context, vmid int, group string) error {
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
		if err := c.api.Post(ctx, c.vmPath(vmid, "/firewall/rules"), want[0].body(), nil); err != nil {
			return wrap(op, err)
		}
		if err := c.api.Get(ctx, c.vmPath(vmid, "/firewall/rules"), &rules); err != nil {
			return wrap(op, err)
		}
		if !same(want, rules) {
			return &Error{Op: op, Msg: fmt.Sprintf("rule not usable: %s (run agentd host network apply to create the security groups)", describe(rules))}
		}
	}
	opts := map[string]any{"enable": 1, "policy_in": "ACCEPT", "policy_out": "ACCEPT"}
	if err := c.api.Put(ctx, c.vmPath(vmid, "/firewall/options"), opts, nil); err != nil {
		return wrap(op, err)
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
}

// Storages lists the node's storages.
func (c *Client) Storages(ctx context.Context) ([]StorageInfo, error) {
	var out []StorageInfo
	if err := c.api.Get(ctx, fmt.Sprintf("/nodes/%s/storage", c.node), &out); err != nil {
		return nil, wrap("list storages", err)
	}
	return out, nil
}
