package pvesim

import (
	"maps"
	"strconv"
)

// Rules by position follow PVE/API2/Firewall/Rules.pm (register_get_rule,
// register_update_rule, register_delete_rule), the same for security groups and
// VMs: the list digest guards writes (assert_if_modified), a position past the
// end dies "no rule at position N", and GET returns pos as the path parameter
// was given, which makes it a JSON string.

// ruleList addresses the rule list a request names; allowGroups says whether
// rules of type "group" may be placed in it (VMs yes, security groups no).
func (s *Sim) ruleList(req *request) (rules *[]fwRule, allowGroups bool, err error) {
	if _, ok := req.vars["group"]; ok {
		g, err := s.fwGroupFor(req)
		if err != nil {
			return nil, false, err
		}
		return &g.rules, false, nil
	}
	v, err := s.vmFor(req)
	if err != nil {
		return nil, false, err
	}
	return &v.fw.rules, true, nil
}

func rulePos(req *request, rules []fwRule) (int, error) {
	pos, _ := strconv.Atoi(req.vars["pos"])
	if pos < 0 || pos >= len(rules) {
		return 0, errf("no rule at position %s", req.vars["pos"])
	}
	return pos, nil
}

func checkDigest(req *request, digest string) error {
	if d := req.str("digest"); d != "" && d != digest {
		return errf("detected modified configuration - file changed by other user? Try again.")
	}
	return nil
}

func (s *Sim) getFwRule(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rules, allowGroups, err := s.ruleList(req)
	if err != nil {
		return nil, err
	}
	pos, err := rulePos(req, *rules)
	if err != nil {
		return nil, err
	}
	out := s.rulesOut(*rules, allowGroups)[pos]
	out["pos"] = req.vars["pos"] // $rule->{pos} = $param->{pos}: the string from the path
	return out, nil
}

func (s *Sim) updateFwRule(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rules, allowGroups, err := s.ruleList(req)
	if err != nil {
		return nil, err
	}
	if err := checkDigest(req, rulesDigest(*rules)); err != nil {
		return nil, err
	}
	pos, err := rulePos(req, *rules)
	if err != nil {
		return nil, err
	}
	r := (*rules)[pos]
	if req.has("moveto") && req.intv("moveto") != pos {
		// Other arguments are ignored when moving.
		moveto := req.intv("moveto")
		var out []fwRule
		for i, x := range *rules {
			if i == pos {
				continue
			}
			if i == moveto {
				out = append(out, r)
			}
			out = append(out, x)
		}
		if moveto >= len(*rules) {
			out = append(out, r)
		}
		*rules = out
		return nil, nil
	}
	// On a copy: a refused update writes nothing (update_rule dies before
	// save_rules).
	r = maps.Clone(r)
	copyRuleData(r, req)
	for _, k := range splitConfigList(req.str("delete")) {
		known := false
		for _, rk := range fwRuleKeys {
			known = known || rk == k
		}
		if !known {
			return nil, paramErr(map[string]string{"delete": "no such property ('" + k + "')"})
		}
		if k == "type" || k == "action" {
			return nil, paramErr(map[string]string{"delete": "unable to delete required property '" + k + "'"})
		}
		delete(r, k)
	}
	if errs := verifyRule(s, r, allowGroups); len(errs) > 0 {
		return nil, paramErr(errs)
	}
	(*rules)[pos] = r
	return nil, nil
}

func (s *Sim) deleteFwRule(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rules, _, err := s.ruleList(req)
	if err != nil {
		return nil, err
	}
	if err := checkDigest(req, rulesDigest(*rules)); err != nil {
		return nil, err
	}
	pos, err := rulePos(req, *rules)
	if err != nil {
		return nil, err
	}
	*rules = append((*rules)[:pos], (*rules)[pos+1:]...)
	return nil, nil
}
