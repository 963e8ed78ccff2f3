package netpolicy

import (
	"context"
	"flag"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func testPolicy() *Policy {
	return &Policy{Bridge: "vmbr1", Subnet: netip.MustParsePrefix("10.77.0.0/16"), HostAddr: netip.MustParseAddr("10.77.0.1"),
		Uplink: "vmbr0", GuestPort: 8844, IsolateSandboxes: true,
		Allowlists: map[string][]Allow{"locked-down": {{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Port: 443},
			{Prefix: netip.MustParsePrefix("198.51.100.7/32")}}},
		Bindings: []Binding{bind("10.77.0.21", 121, "nat"), bind("10.77.0.20", 120, "off"), bind("10.77.0.22", 122, "allowlist:locked-down")},
		Exposed: []Expose{{HostPort: 20001, Addr: netip.MustParseAddr("10.77.0.21"), Port: 8080,
			Sources: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("198.51.100.9/32")}}}}
}

func bind(addr string, vmid int, mode string) Binding {
	a := netip.MustParseAddr(addr)
	return Binding{Addr: a, MAC: MAC(a), Ports: Ports(vmid), Mode: mode}
}

func TestRulesetGolden(t *testing.T) {
	got, err := testPolicy().Ruleset()
	if err != nil {
		t.Fatal(err)
	}
	golden := "testdata/ruleset.nft"
	if *update {
		os.WriteFile(golden, []byte(got), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("ruleset differs from %s (go test -update to accept):\n%s", golden, got)
	}
	outside := testPolicy()
	outside.Bindings = append(outside.Bindings, bind("192.0.2.1", 130, "nat"))
	if _, err := outside.Ruleset(); err == nil || !strings.Contains(err.Error(), "not an address of the agent subnet") {
		t.Fatalf("an address outside the agent subnet: %v", err)
	}
	// On an SDN VNet: the tunnel chains (golden), each gateway kept on its node.
	sdn := testPolicy()
	sdn.Bridge, sdn.Tunnel = "agentnet", "vxlan_agentnet"
	gotSDN, err := sdn.Ruleset()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		os.WriteFile("testdata/ruleset-sdn.nft", []byte(gotSDN), 0o644)
	}
	if want, _ := os.ReadFile("testdata/ruleset-sdn.nft"); gotSDN != string(want) {
		t.Fatalf("ruleset differs from testdata/ruleset-sdn.nft (go test -update to accept):\n%s", gotSDN)
	}
	if v := sdn.VNetInterfaces(); !strings.Contains(v, "iface agentnet inet static\n\taddress 10.77.0.1/16\n\thwaddress 02:a1:0a:4d:00:01\n") || strings.Contains(v, "bridge-ports") {
		t.Fatalf("VNet stanza:\n%s", v)
	}
	iface := testPolicy().Interfaces()
	if !strings.Contains(iface, "address 10.77.0.1/16") || !strings.Contains(iface, "bridge-ports none") {
		t.Fatalf("interfaces stanza:\n%s", iface)
	}
}

// TestRulesetLoads: nft itself accepts the ruleset (nft -c), empty and full.
func TestRulesetLoads(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatal("nft is required (make test installs nftables): ", err)
	}
	ports := testPolicy()
	ports.NoBridgeMeta = true
	policies := []*Policy{ports, {Bridge: "vmbr1", Subnet: netip.MustParsePrefix("10.77.0.0/16"),
		HostAddr: netip.MustParseAddr("10.77.0.1"), Uplink: "eno1", GuestPort: 8844, NoBridgeMeta: true}}
	// The agent bridge as an SDN VNet, with and without isolation.
	for _, isolate := range []bool{true, false} {
		p := testPolicy()
		p.Bridge, p.Tunnel, p.IsolateSandboxes, p.NoBridgeMeta = "agentnet", "vxlan_agentnet", isolate, true
		policies = append(policies, p)
	}
	if HasBridgeMeta(context.Background()) {
		sdn := testPolicy()
		sdn.Bridge, sdn.Tunnel = "agentnet", "vxlan_agentnet"
		policies = append(policies, testPolicy(), sdn)
	} else {
		t.Log("kernel without nft bridge meta (CONFIG_NFT_BRIDGE_META): the meta ibrname form is checked by the golden file only")
	}
	for _, p := range policies {
		rs, err := p.Ruleset()
		if err != nil {
			t.Fatal(err)
		}
		if err := Check(context.Background(), rs); err != nil {
			t.Fatalf("%v\n%s", err, rs)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		mut  func(*Policy)
		want string
	}{
		{func(p *Policy) { p.Uplink = "vmbr1" }, "must differ"},
		{func(p *Policy) { p.HostAddr = netip.MustParseAddr("10.78.0.1") }, "not inside the agent subnet"},
		{func(p *Policy) { p.GuestPort = 0 }, "not a TCP port"},
		{func(p *Policy) { p.Allowlists = map[string][]Allow{"Bad Name": nil} }, "cannot name an nftables set"},
	} {
		p := testPolicy()
		tc.mut(p)
		if _, err := p.Ruleset(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}
