package pvesim

import (
	"net/netip"
	"sort"
	"strings"
)

// VM IP sets follow pve-firewall's API (PVE/API2/Firewall/IPSet.pm): a set
// is created empty, entries are CIDRs (a bare address is stored as given),
// a set with entries is deleted only with force, and a duplicate entry or
// set is refused. ipfilter-net<N> is the set pve-firewall binds a NIC's
// sources to (compute_ipfilter_ipset_name).

type fwIPSet struct {
	comment string
	entries []fwIPSetEntry
}

type fwIPSetEntry struct {
	cidr, comment string
	nomatch       bool
}

func init() {
	const q = "/nodes/{node}/qemu/{vmid}/firewall/ipset"
	handle("GET", q, (*Sim).listIPSets)
	handle("POST", q, (*Sim).createIPSet)
	handle("GET", q+"/{name}", (*Sim).listIPSetEntries)
	handle("POST", q+"/{name}", (*Sim).addIPSetEntry)
	handle("DELETE", q+"/{name}", (*Sim).deleteIPSet)
	handle("GET", q+"/{name}/{cidr}", (*Sim).getIPSetEntry)
	handle("DELETE", q+"/{name}/{cidr}", (*Sim).deleteIPSetEntry)
}

func copyIPSets(in map[string]*fwIPSet) map[string]*fwIPSet {
	if in == nil {
		return nil
	}
	out := map[string]*fwIPSet{}
	for k, v := range in {
		cp := *v
		cp.entries = append([]fwIPSetEntry(nil), v.entries...)
		out[k] = &cp
	}
	return out
}

// normCIDR is an entry's key: PVE compares entries by their normalised
// address (an address and address/32 are the same entry).
func normCIDR(c string) string {
	if p, err := netip.ParsePrefix(c); err == nil {
		if p.Bits() == p.Addr().BitLen() {
			return p.Addr().String()
		}
		return p.Masked().String()
	}
	return strings.ToLower(c)
}

func (s *Sim) ipsetFor(req *request) (*vm, *fwIPSet, error) {
	v, err := s.vmFor(req)
	if err != nil {
		return nil, nil, err
	}
	set := v.fw.ipsets[req.vars["name"]]
	if set == nil {
		return nil, nil, errf("no such IPSet '%s'", req.vars["name"])
	}
	return v, set, nil
}

func (s *Sim) listIPSets(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	out := []map[string]any{}
	for name, set := range v.fw.ipsets {
		e := map[string]any{"name": name, "digest": "0000000000000000000000000000000000000000"}
		if set.comment != "" {
			e["comment"] = set.comment
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i]["name"].(string) < out[j]["name"].(string) })
	return out, nil
}

func (s *Sim) createIPSet(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	if req.has("rename") {
		return nil, errf("parameter 'rename' is not simulated")
	}
	name := req.str("name")
	if v.fw.ipsets[name] != nil {
		return nil, errf("IPSet '%s' already exists", name)
	}
	if v.fw.ipsets == nil {
		v.fw.ipsets = map[string]*fwIPSet{}
	}
	v.fw.ipsets[name] = &fwIPSet{comment: req.str("comment")}
	return nil, nil
}

func (s *Sim) listIPSetEntries(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, set, err := s.ipsetFor(req)
	if err != nil {
		return nil, err
	}
	out := []map[string]any{}
	for _, e := range set.entries {
		m := map[string]any{"cidr": e.cidr, "digest": "0000000000000000000000000000000000000000"}
		if e.comment != "" {
			m["comment"] = e.comment
		}
		if e.nomatch {
			m["nomatch"] = 1
		}
		out = append(out, m)
	}
	return out, nil
}

func (s *Sim) addIPSetEntry(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, set, err := s.ipsetFor(req)
	if err != nil {
		return nil, err
	}
	cidr := req.str("cidr")
	for _, e := range set.entries {
		if normCIDR(e.cidr) == normCIDR(cidr) {
			return nil, errf("entry '%s' already exists", cidr)
		}
	}
	set.entries = append(set.entries, fwIPSetEntry{cidr: cidr, comment: req.str("comment"), nomatch: req.str("nomatch") == "1"})
	return nil, nil
}

func (s *Sim) deleteIPSet(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, set, err := s.ipsetFor(req)
	if err != nil {
		return nil, err
	}
	if len(set.entries) > 0 && req.str("force") != "1" {
		return nil, errf("IPSet '%s' is not empty", req.vars["name"])
	}
	delete(v.fw.ipsets, req.vars["name"])
	return nil, nil
}

func (s *Sim) getIPSetEntry(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, set, err := s.ipsetFor(req)
	if err != nil {
		return nil, err
	}
	for _, e := range set.entries {
		if normCIDR(e.cidr) == normCIDR(req.vars["cidr"]) {
			return map[string]any{"cidr": e.cidr, "comment": e.comment, "nomatch": boolInt(e.nomatch)}, nil
		}
	}
	return nil, errf("no such IP/Network")
}

func (s *Sim) deleteIPSetEntry(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, set, err := s.ipsetFor(req)
	if err != nil {
		return nil, err
	}
	for i, e := range set.entries {
		if normCIDR(e.cidr) == normCIDR(req.vars["cidr"]) {
			set.entries = append(set.entries[:i], set.entries[i+1:]...)
			return nil, nil
		}
	}
	return nil, nil // PVE's delete of a missing entry is a no-op
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// IPSet returns the entries of a VM's IP set (tests).
func (s *Sim) IPSet(vmid int, name string) ([]string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vms[vmid]
	if v == nil || v.fw.ipsets[name] == nil {
		return nil, false
	}
	var out []string
	for _, e := range v.fw.ipsets[name].entries {
		out = append(out, e.cidr)
	}
	return out, true
}
