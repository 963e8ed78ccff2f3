package pvesim_test

import (
	"strings"
	"testing"
)

// TestSDNPluginChecks: the zone and VNet checks PVE runs on create and
// update, with its messages: VxlanPlugin on_update_hook (peers xor fabric)
// and vnet_update_hook (a VNI unique over VXLAN zones), SectionConfig's
// check_config (options of the zone's type only; required ones on create)
// and delete_from_config, VnetPlugin's zone change with subnets. Every
// spelling PVE accepts for a peers list is accepted.
func TestSDNPluginChecks(t *testing.T) {
	sim := newCluster(t, 3, nil)
	for _, tc := range []struct {
		method, path, body string
		status, errs       string // status line; a fragment of the body (lock_sdn_config puts a parameter error's lines in the message)
	}{
		{"POST", "/cluster/sdn/zones", `{"zone":"nopeers","type":"vxlan"}`,
			"500 create sdn zone object failed: 400 Parameter verification failed.", `peers: must have exactly one of peers / fabric defined`},
		{"POST", "/cluster/sdn/zones", `{"zone":"both","type":"vxlan","peers":"10.0.0.1","fabric":"f1"}`,
			"500 create sdn zone object failed: 400 Parameter verification failed.", `fabric: must have exactly one of peers / fabric defined`},
		{"POST", "/cluster/sdn/zones", `{"zone":"vx","type":"vxlan","peers":"10.0.0.1","bridge":"vmbr0"}`, "500 unexpected property 'bridge'", ""},
		{"POST", "/cluster/sdn/zones", `{"zone":"vl","type":"vlan"}`, "500 missing value for required option 'bridge'", ""},
		{"POST", "/cluster/sdn/zones", `{"zone":"bad","type":"vxlan","peers":"10.0.0.1,nope"}`, "400 Parameter verification failed.", `"peers"`},
		// split_list: commas, semicolons and spaces.
		{"POST", "/cluster/sdn/zones", `{"zone":"z1","type":"vxlan","peers":"10.0.0.1;10.0.0.2 10.0.0.3","mtu":1450}`, "200 OK", ""},
		{"POST", "/cluster/sdn/zones", `{"zone":"z2","type":"vxlan","peers":"10.0.0.1,10.0.0.2"}`, "200 OK", ""},
		{"POST", "/cluster/sdn/zones", `{"zone":"s1","type":"simple"}`, "200 OK", ""},
		{"PUT", "/cluster/sdn/zones/z1", `{"bridge":"vmbr0"}`, "500 update sdn zone object failed: unexpected property 'bridge'", ""},
		{"PUT", "/cluster/sdn/zones/z1", `{"delete":"peers"}`,
			"500 update sdn zone object failed: 400 Parameter verification failed.", `peers: must have exactly one of peers / fabric defined`},
		{"PUT", "/cluster/sdn/zones/z1", `{"delete":"bogus"}`, "500 update sdn zone object failed: no such option 'bogus'", ""},
		{"PUT", "/cluster/sdn/zones/z1", `{"delete":"mtu","mtu":1400}`, "500 update sdn zone object failed: cannot set and delete property 'mtu' at the same time!", ""},
		{"PUT", "/cluster/sdn/zones/z1", `{"delete":"mtu"}`, "200 OK", ""},
		{"POST", "/cluster/sdn/vnets", `{"vnet":"v1","zone":"z1","tag":100}`, "200 OK", ""},
		{"POST", "/cluster/sdn/vnets", `{"vnet":"v2","zone":"z2","tag":100}`,
			"500 create sdn vnet object failed: 400 Parameter verification failed.", `tag: vxlan tag 100 already exist in vnet v1 in zone z1 `},
		{"POST", "/cluster/sdn/vnets", `{"vnet":"v2","zone":"z2","tag":101,"bridge":"x"}`, "400 Parameter verification failed.", `"bridge"`},
		{"POST", "/cluster/sdn/vnets", `{"vnet":"v2","zone":"z2","tag":101}`, "200 OK", ""},
		{"PUT", "/cluster/sdn/vnets/v2", `{"tag":100}`,
			"500 update sdn vnet object failed: 400 Parameter verification failed.", `tag: vxlan tag 100 already exist in vnet v1 in zone z1 `},
		{"PUT", "/cluster/sdn/vnets/v2", `{"tag":101}`, "200 OK", ""}, // its own VNI
		{"PUT", "/cluster/sdn/vnets/v2", `{"delete":"zone"}`, "500 update sdn vnet object failed: unable to delete required option 'zone'", ""},
		{"POST", "/cluster/sdn/vnets/v2/subnets", `{"subnet":"10.9.0.0/24","type":"subnet","gateway":"10.9.0.1"}`, "200 OK", ""},
		{"PUT", "/cluster/sdn/vnets/v2", `{"zone":"s1"}`,
			"500 update sdn vnet object failed: 400 Parameter verification failed.", `zone: can't change zone if subnets exist`},
		// A simple zone's VNets need no VNI and do not take part in the check.
		{"POST", "/cluster/sdn/vnets", `{"vnet":"v3","zone":"s1","tag":100}`, "200 OK", ""},
	} {
		status, body := raw(t, sim, tc.method, tc.path, tc.body, true)
		if status != tc.status || !strings.Contains(body, tc.errs) {
			t.Errorf("%s %s %s: %s %s; want %s with %s", tc.method, tc.path, tc.body, status, body, tc.status, tc.errs)
		}
	}
	zone := data[map[string]any](t, mustOK(t, sim, "GET", "/cluster/sdn/zones/z1", ""))
	if zone["peers"] != "10.0.0.1;10.0.0.2 10.0.0.3" || zone["mtu"] != nil {
		t.Errorf("zone z1 keeps peers as given and has no mtu: %v", zone)
	}
}
