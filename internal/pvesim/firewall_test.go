package pvesim_test

import (
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
)

// Firewall rules follow pve-firewall: copy_rule_data deletes a property sent
// empty, copy_list_with_digest puts one SHA-1 of the rules on the list and every
// rule, and Rules.pm's get_rule copies the path's pos (a JSON string).
func TestFirewallRulesLikePVE(t *testing.T) {
	sim := newSim(t)
	post := func(path, body string) {
		t.Helper()
		if status, resp := raw(t, sim, "POST", path, body, true); status != "200 OK" {
			t.Fatalf("POST %s %s: %s %s", path, body, status, resp)
		}
	}
	post("/cluster/firewall/groups", `{"group":"web"}`)
	post("/cluster/firewall/groups/web", `{"type":"in","action":"ACCEPT","proto":"tcp","dport":"22","dest":"","macro":"","enable":1}`)
	post("/cluster/firewall/groups/web", `{"type":"in","action":"DROP","comment":"second"}`)
	_, body := raw(t, sim, "GET", "/cluster/firewall/groups/web", "", true)
	var list struct{ Data []map[string]any }
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list.Data) != 2 {
		t.Fatalf("rules: %s", body)
	}
	rule := list.Data[1]
	if _, has := rule["dest"]; has {
		t.Errorf("empty dest stored: %v", rule)
	}
	if _, has := rule["macro"]; has {
		t.Errorf("empty macro stored: %v", rule)
	}
	// The digest is SHA-1 over "key:value\n" of each stored rule, keys sorted.
	h := sha1.New()
	for _, r := range list.Data {
		var keys []string
		for k := range r {
			if k != "pos" && k != "digest" {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(h, "%s:%v\n", k, r[k])
		}
	}
	want := fmt.Sprintf("%x", h.Sum(nil))
	for _, r := range list.Data {
		if r["digest"] != want {
			t.Errorf("rule digest %v, want %s", r["digest"], want)
		}
	}
	if _, groups := raw(t, sim, "GET", "/cluster/firewall/groups", "", true); strings.Contains(groups, `"digest":"0"`) || strings.Contains(groups, `"comment":""`) {
		t.Errorf("groups list: %s", groups)
	}
	status, one := raw(t, sim, "GET", "/cluster/firewall/groups/web/1", "", true)
	if status != "200 OK" || !strings.Contains(one, `"pos":"1"`) || !strings.Contains(one, `"action":"ACCEPT"`) {
		t.Errorf("rule 1: %s %s", status, one)
	}
	if status, _ := raw(t, sim, "PUT", "/cluster/firewall/groups/web/0", `{"comment":"","digest":"0000000000000000000000000000000000000000"}`, true); status != "500 detected modified configuration - file changed by other user? Try again." {
		t.Errorf("stale digest: %s", status)
	}
	if status, _ := raw(t, sim, "PUT", "/cluster/firewall/groups/web/0", `{"comment":"","moveto":5}`, true); status != "200 OK" {
		t.Errorf("move: %s", status)
	}
	_, body = raw(t, sim, "GET", "/cluster/firewall/groups/web", "", true)
	if !strings.Contains(body, `"pos":0,`) || strings.Index(body, `"ACCEPT"`) > strings.Index(body, `"DROP"`) {
		t.Errorf("after moveto: %s", body)
	}
	if status, _ := raw(t, sim, "GET", "/cluster/firewall/groups/web/7", "", true); status != "500 no rule at position 7" {
		t.Errorf("missing rule: %s", status)
	}
	post("/nodes/pve/qemu/9000/firewall/rules", `{"type":"out","action":"REJECT","enable":1}`)
	if status, r := raw(t, sim, "GET", "/nodes/pve/qemu/9000/firewall/rules/0", "", true); !strings.Contains(r, `"pos":"0"`) {
		t.Errorf("vm rule: %s %s", status, r)
	}
	if status, _ := raw(t, sim, "DELETE", "/nodes/pve/qemu/9000/firewall/rules/0", "", true); status != "200 OK" {
		t.Errorf("delete vm rule: %s", status)
	}
}

// TestFirewallRuleVerification follows verify_rule: the API's create and
// update raise its errors (400 "Parameter verification failed." naming the
// property, nothing written), while a listed rule whose security group was
// deleted since carries them in "errors" (the config is read with noerr).
func TestFirewallRuleVerification(t *testing.T) {
	sim := newSim(t)
	must := func(method, path, body string) string {
		t.Helper()
		status, resp := raw(t, sim, method, path, body, true)
		if status != "200 OK" {
			t.Fatalf("%s %s %s: %s %s", method, path, body, status, resp)
		}
		return resp
	}
	const vmRules = "/nodes/pve/qemu/9000/firewall/rules"
	status, body := raw(t, sim, "POST", vmRules, `{"type":"group","action":"nope","enable":1}`, true)
	if status != "400 Parameter verification failed." || !strings.Contains(body, `"action":"no such security group 'nope'"`) {
		t.Fatalf("rule with a missing group: %s %s", status, body)
	}
	if got := must("GET", vmRules, ""); strings.Contains(got, "nope") {
		t.Fatalf("a refused rule was written: %s", got)
	}
	must("POST", "/cluster/firewall/groups", `{"group":"web"}`)
	status, body = raw(t, sim, "POST", "/cluster/firewall/groups/web", `{"type":"group","action":"web"}`, true)
	if status != "400 Parameter verification failed." || !strings.Contains(body, `"type":"security groups not allowed"`) {
		t.Fatalf("group rule inside a group: %s %s", status, body)
	}
	must("POST", vmRules, `{"type":"group","action":"web","enable":1}`)
	// A bad update is refused whole: the comment is not written either.
	status, body = raw(t, sim, "PUT", vmRules+"/0", `{"action":"gone","comment":"x"}`, true)
	if status != "400 Parameter verification failed." || !strings.Contains(body, `"action":"no such security group 'gone'"`) {
		t.Fatalf("update to a missing group: %s %s", status, body)
	}
	if got := must("GET", vmRules+"/0", ""); !strings.Contains(got, `"action":"web"`) || strings.Contains(got, `"comment"`) || strings.Contains(got, `"errors"`) {
		t.Fatalf("after a refused update: %s", got)
	}
	// The group goes; the VM's rule stays and is listed with the error.
	must("DELETE", "/cluster/firewall/groups/web", "")
	if got := must("GET", vmRules, ""); !strings.Contains(got, `"errors":{"action":"no such security group 'web'"}`) {
		t.Fatalf("rule of a deleted group: %s", got)
	}
}
