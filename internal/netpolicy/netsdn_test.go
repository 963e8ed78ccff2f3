package netpolicy

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestSDNTwoNodes: two nodes whose agent bridges (the VNet agentnet, each
// with the gateway address and the shared gateway MAC) are joined by their
// tunnel ports, as the VXLAN zone joins them; each node loads the ruleset
// of its own sandboxes only (its node duties). A sandbox's gateway is its
// own node, never the other: B on node 2 reaches node 2's guest listener, A on
// node 1 does not (the gateway's ARP and frames never cross the tunnel).
// Sandboxes of two nodes talk with isolate_sandboxes off, not with it on,
// with and without br_netfilter; a spoofed source from node 1 is dropped
// there, before the tunnel.
func TestSDNTwoNodes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test builds network namespaces and needs root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required: %v", tool, err)
		}
	}
	l := &sandboxLab{lab: &lab{t: t, prefix: fmt.Sprintf("as%d-", os.Getpid()%100000)}, sbx: map[string]string{}, addr: map[string]string{}, vmid: map[string]int{}}
	t.Cleanup(l.close)
	host := netip.MustParseAddr("10.77.0.1")
	nodes := map[string]string{"A": l.ns("n1"), "B": l.ns("n2")}
	for _, n := range []string{nodes["A"], nodes["B"]} {
		l.ip("-n", n, "link", "add", "agentnet", "type", "bridge")
		l.ip("-n", n, "link", "set", "agentnet", "address", MAC(host).String())
		l.ip("-n", n, "addr", "add", "10.77.0.1/16", "dev", "agentnet")
		l.ip("-n", n, "link", "set", "agentnet", "up")
	}
	// The tunnel: one L2 link between the two bridges, named as VxlanPlugin
	// names the VXLAN port.
	l.ip("link", "add", "vxlan_agentnet", "netns", nodes["A"], "type", "veth", "peer", "name", "vxlan_agentnet", "netns", nodes["B"])
	for _, n := range []string{nodes["A"], nodes["B"]} {
		l.ip("-n", n, "link", "set", "vxlan_agentnet", "master", "agentnet")
		l.ip("-n", n, "link", "set", "vxlan_agentnet", "up")
	}
	for i, name := range []string{"A", "B"} {
		ns := l.ns("s" + name)
		addr := fmt.Sprintf("10.77.0.%d", 10+i)
		vmid := 101 + i
		l.sbx[name], l.addr[name], l.vmid[name] = ns, addr, vmid
		port := fmt.Sprintf("tap%di0", vmid)
		l.ip("link", "add", port, "netns", nodes[name], "type", "veth", "peer", "name", "eth0", "netns", ns)
		l.ip("-n", ns, "link", "set", "eth0", "address", MAC(netip.MustParseAddr(addr)).String())
		l.ip("-n", ns, "addr", "add", addr+"/16", "dev", "eth0")
		l.ip("-n", ns, "link", "set", "eth0", "up")
		l.ip("-n", ns, "route", "add", "default", "via", "10.77.0.1")
		l.ip("-n", nodes[name], "link", "set", port, "master", "agentnet")
		l.ip("-n", nodes[name], "link", "set", port, "up")
		serve(t, ns, addr+":80")
	}
	serve(t, nodes["B"], "10.77.0.1:8844") // the guest listener, on node 2 only
	load := func(node string, isolate bool) {
		p := &Policy{Bridge: "agentnet", Tunnel: "vxlan_agentnet", Subnet: netip.MustParsePrefix("10.77.0.0/16"), HostAddr: host,
			Uplink: "wan0", GuestPort: 8844, IsolateSandboxes: isolate, Bindings: []Binding{l.binding(node, "nat")}, NoBridgeMeta: noBridgeMeta(t)}
		rs, err := p.Ruleset()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("ip", "netns", "exec", nodes[node], "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rs)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft -f on node of %s: %v: %s", node, err, out)
		}
	}
	flush := func() {
		for _, ns := range []string{l.sbx["A"], l.sbx["B"]} {
			_ = exec.Command("ip", "-n", ns, "neigh", "flush", "dev", "eth0").Run()
		}
	}
	// Without rules the lab carries A ↔ B (fresh links may need a moment
	// before the first frame crosses).
	up := false
	for i := 0; i < 20 && !up; i++ {
		up = connect(t, l.sbx["A"], "", l.addr["B"]+":80")
	}
	if !up {
		t.Fatal("the lab carries nothing between the nodes even without rules")
	}
	for _, brnf := range []string{"0", "1"} {
		for _, n := range []string{nodes["A"], nodes["B"]} {
			l.sysctl(n, "net.bridge.bridge-nf-call-iptables="+brnf)
		}
		for _, isolate := range []bool{false, true} {
			load("A", isolate)
			load("B", isolate)
			flush()
			what := fmt.Sprintf("bridge-nf-call-iptables=%s isolate=%v", brnf, isolate)
			if !connect(t, l.sbx["B"], "", "10.77.0.1:8844") {
				t.Errorf("%s: B cannot reach its own node's guest listener", what)
			}
			if connect(t, l.sbx["A"], "", "10.77.0.1:8844") {
				t.Errorf("%s: A on node 1 reached node 2's guest listener through the tunnel", what)
			}
			if got := connect(t, l.sbx["A"], "", l.addr["B"]+":80"); got == isolate {
				t.Errorf("%s: A reaches B across the nodes: %v", what, got)
			}
			if got := connect(t, l.sbx["B"], "", l.addr["A"]+":80"); got == isolate {
				t.Errorf("%s: B reaches A across the nodes: %v", what, got)
			}
			// A claims an address that is not its own: node 1 drops it
			// before the tunnel.
			_ = exec.Command("ip", "-n", l.sbx["A"], "addr", "add", "10.77.0.99/16", "dev", "eth0").Run()
			if connect(t, l.sbx["A"], "10.77.0.99", l.addr["B"]+":80") {
				t.Errorf("%s: A's spoofed 10.77.0.99 reached B on node 2", what)
			}
			_ = exec.Command("ip", "-n", l.sbx["A"], "addr", "del", "10.77.0.99/16", "dev", "eth0").Run()
		}
	}
}
