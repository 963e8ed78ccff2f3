package pvesim

import (
	"crypto/sha1"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// The firewall follows pve-firewall's API (PVE/API2/Firewall/{Groups,Rules,VM}.pm):
// security groups live in the cluster config; a VM's options and rules in its
// own .fw file, which clone copies and destroy removes. Rules are inserted at
// the top unless pos is given, are disabled unless enable=1 is sent, and a rule
// with invalid properties is stored with an "errors" map instead of being
// refused (verify_rule only records errors).

type fwRule map[string]string

type fwGroup struct {
	comment string
	rules   []fwRule
}

type vmFirewall struct {
	options map[string]string
	rules   []fwRule
	ipsets  map[string]*fwIPSet // see ipset.go
}

var (
	fwGroupRE  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9\-_]+$`)
	fwRuleKeys = []string{"type", "action", "enable", "dest", "dport", "proto", "source", "sport", "comment", "macro", "iface", "log", "icmp-type"}
	portProtos = map[string]bool{"tcp": true, "udp": true, "udplite": true, "sctp": true, "dccp": true}
)

func (s *Sim) listFwGroups(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// get_security_group_list: comment only when set, digest from copy_list_with_digest.
	var entries []map[string]string
	for _, name := range sortedKeys(s.fwGroups) {
		e := map[string]string{"group": name}
		if c := s.fwGroups[name].comment; c != "" {
			e["comment"] = c
		}
		entries = append(entries, e)
	}
	digest := listDigest(entries)
	out := []map[string]any{}
	for _, e := range entries {
		m := map[string]any{"digest": digest}
		for k, v := range e {
			m[k] = v
		}
		out = append(out, m)
	}
	return out, nil
}

func (s *Sim) createFwGroup(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name, rename := req.str("group"), req.str("rename")
	if rename != "" {
		g, ok := s.fwGroups[rename]
		if !ok {
			return nil, paramErr(map[string]string{"group": fmt.Sprintf("Security group '%s' does not exist", rename)})
		}
		if _, exists := s.fwGroups[name]; exists && name != rename {
			return nil, paramErr(map[string]string{"group": fmt.Sprintf("Security group '%s' does already exist", name)})
		}
		if req.has("comment") {
			g.comment = req.str("comment")
		}
		delete(s.fwGroups, rename)
		s.fwGroups[name] = g
		return nil, nil
	}
	if _, exists := s.fwGroups[name]; exists {
		return nil, paramErr(map[string]string{"group": fmt.Sprintf("Security group '%s' already exists", name)})
	}
	s.fwGroups[name] = &fwGroup{comment: req.str("comment")}
	return nil, nil
}

func (s *Sim) fwGroupFor(req *request) (*fwGroup, error) {
	g, ok := s.fwGroups[req.vars["group"]]
	if !ok {
		return nil, errf("no such security group '%s'", req.vars["group"])
	}
	return g, nil
}

// listDigest is copy_list_with_digest: one SHA-1 over every entry's "key:value\n"
// lines (keys sorted, nested values such as errors ignored), set on each entry.
func listDigest(entries []map[string]string) string {
	h := sha1.New()
	for _, e := range entries {
		keys := make([]string, 0, len(e))
		for k := range e {
			if k != "errors" {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(h, "%s:%s\n", k, e[k])
		}
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func rulesDigest(rules []fwRule) string {
	entries := make([]map[string]string, len(rules))
	for i, r := range rules {
		entries[i] = r
	}
	return listDigest(entries)
}

// rulesOut renders a rule list as the index does: pos as a number, each rule
// with the list's digest.
func (s *Sim) rulesOut(rules []fwRule, allowGroups bool) []map[string]any {
	out := []map[string]any{}
	digest := rulesDigest(rules)
	for i, r := range rules {
		m := map[string]any{"pos": i, "digest": digest}
		for k, v := range r {
			if k == "enable" || k == "log" {
				if n, err := strconv.Atoi(v); err == nil {
					m[k] = n
					continue
				}
			}
			m[k] = v
		}
		if errs := verifyRule(s, r, allowGroups); len(errs) > 0 {
			m["errors"] = errs
		}
		out = append(out, m)
	}
	return out
}

func (s *Sim) listFwGroupRules(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := s.fwGroupFor(req)
	if err != nil {
		return nil, err
	}
	return s.rulesOut(g.rules, false), nil
}

// newRule copies the rule properties and verifies them as create_rule does:
// verify_rule without noerr, so the first problem is a 400 parameter error
// and nothing is written.
func (s *Sim) newRule(req *request, allowGroups bool) (fwRule, error) {
	r := copyRuleData(fwRule{}, req)
	if errs := verifyRule(s, r, allowGroups); len(errs) > 0 {
		return nil, paramErr(errs)
	}
	if !req.has("enable") {
		r["enable"] = "0"
	}
	return r, nil
}

// copyRuleData is copy_rule_data: a property sent empty (or "-") is deleted,
// never stored as an empty field.
func copyRuleData(r fwRule, req *request) fwRule {
	for _, k := range fwRuleKeys {
		if !req.has(k) {
			continue
		}
		if v := req.str(k); v == "" || v == "-" {
			delete(r, k)
		} else {
			r[k] = v
		}
	}
	return r
}

// verifyRule is verify_rule: the API's writes raise its errors (the first
// one per property), reading a config records them on the rule (noerr: a
// rule whose security group was deleted since is listed with "errors").
func verifyRule(s *Sim, r fwRule, allowGroups bool) map[string]string {
	errs := map[string]string{}
	add := func(k, msg string) {
		if _, ok := errs[k]; !ok {
			errs[k] = msg
		}
	}
	typ, action := r["type"], r["action"]
	switch typ {
	case "in", "out":
		if action != "ACCEPT" && action != "DROP" && action != "REJECT" {
			add("action", fmt.Sprintf("unknown action '%s'", action))
		}
	case "group":
		if !allowGroups {
			add("type", "security groups not allowed")
		} else if !fwGroupRE.MatchString(action) {
			add("action", "invalid characters in security group name")
		} else if _, ok := s.fwGroups[action]; !ok {
			add("action", fmt.Sprintf("no such security group '%s'", action))
		}
	default:
		add("type", fmt.Sprintf("unknown rule type '%s'", typ))
	}
	if r["dport"] != "" {
		if r["proto"] == "" {
			add("proto", "missing property - 'dport' requires this property")
		} else if !portProtos[r["proto"]] {
			add("dport", fmt.Sprintf("protocol '%s' does not support ports", r["proto"]))
		}
	}
	return errs
}

func insertRule(rules []fwRule, r fwRule, req *request) ([]fwRule, error) {
	pos := 0
	if req.has("pos") {
		pos = req.intv("pos")
		if pos > len(rules) {
			pos = len(rules)
		}
	}
	return append(rules[:pos], append([]fwRule{r}, rules[pos:]...)...), nil
}

func (s *Sim) createFwGroupRule(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := s.fwGroupFor(req)
	if err != nil {
		return nil, err
	}
	r, err := s.newRule(req, false)
	if err != nil {
		return nil, err
	}
	g.rules, _ = insertRule(g.rules, r, req)
	return nil, nil
}

func (s *Sim) deleteFwGroup(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := s.fwGroupFor(req)
	if err != nil {
		return nil, err
	}
	if len(g.rules) > 0 {
		return nil, errf("Security group '%s' is not empty", req.vars["group"])
	}
	delete(s.fwGroups, req.vars["group"])
	return nil, nil
}

func (s *Sim) vmFwOptions(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	for k, val := range v.fw.options {
		if n, err := strconv.Atoi(val); err == nil && (k == "enable" || k == "dhcp" || k == "ipfilter" || k == "macfilter" || k == "ndp" || k == "radv") {
			out[k] = n
		} else {
			out[k] = val
		}
	}
	return out, nil
}

func (s *Sim) setVMFwOptions(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	if v.fw.options == nil {
		v.fw.options = map[string]string{}
	}
	for _, k := range []string{"enable", "dhcp", "ipfilter", "macfilter", "ndp", "radv", "policy_in", "policy_out", "log_level_in", "log_level_out"} {
		if req.has(k) {
			v.fw.options[k] = req.str(k)
		}
	}
	for _, k := range strings.FieldsFunc(req.str("delete"), func(r rune) bool { return r == ',' || r == ';' || r == ' ' }) {
		delete(v.fw.options, k)
	}
	return nil, nil
}

func (s *Sim) listVMFwRules(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	return s.rulesOut(v.fw.rules, true), nil
}

func (s *Sim) createVMFwRule(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	r, err := s.newRule(req, true)
	if err != nil {
		return nil, err
	}
	v.fw.rules, _ = insertRule(v.fw.rules, r, req)
	return nil, nil
}

// permissions answers GET /access/permissions: the simulator's token has
// every privilege on "/" (a privilege-separated token would be narrower).
func (s *Sim) permissions(req *request) (any, error) {
	privs := map[string]int{}
	for _, p := range []string{"VM.Allocate", "VM.Clone", "VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network",
		"VM.Config.Cloudinit", "VM.Config.Options", "VM.Config.HWType", "VM.PowerMgmt", "VM.Audit", "VM.Monitor", "VM.Snapshot",
		"VM.Snapshot.Rollback", "Datastore.AllocateSpace", "Datastore.Audit", "Sys.Audit", "Sys.Modify"} {
		privs[p] = 1
	}
	return map[string]any{"/": privs}, nil
}
