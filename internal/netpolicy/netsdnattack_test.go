package netpolicy

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// sdnLab is two nodes of an SDN VNet in network namespaces, as
// TestSDNTwoNodes builds them: each node's bridge agentnet holds the gateway
// address and the shared gateway MAC, with no_linklocal_learn as the VNet
// stanza sets it (VNetInterfaces); a veth pair named vxlan_agentnet on both
// ends stands for the VXLAN port. Node 1 runs sandbox A, node 2 runs B and D;
// each node has a host service on every address (UDP 9998) and an uplink
// address of its own (wan0, 192.168.60.N).
type sdnLab struct {
	*sandboxLab
	node  map[string]string // "1", "2" → namespace
	on    map[string]string // sandbox → node
	sink2 *udpSink          // node 2's host service
}

const sdnTunnel = "vxlan_agentnet"

func newSDNLab(t *testing.T) *sdnLab {
	if os.Geteuid() != 0 {
		t.Fatal("this test builds network namespaces and needs root")
	}
	for _, tool := range []string{"ip", "nft", "bridge"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required: %v", tool, err)
		}
	}
	l := &sdnLab{sandboxLab: &sandboxLab{lab: &lab{t: t, prefix: fmt.Sprintf("ak%d-", os.Getpid()%100000)}, sbx: map[string]string{}, addr: map[string]string{}, vmid: map[string]int{}},
		node: map[string]string{}, on: map[string]string{}}
	t.Cleanup(l.close)
	host := netip.MustParseAddr("10.77.0.1")
	for _, n := range []string{"1", "2"} {
		ns := l.ns("n" + n)
		l.node[n] = ns
		l.ip("-n", ns, "link", "add", "agentnet", "type", "bridge")
		l.ip("-n", ns, "link", "set", "agentnet", "address", MAC(host).String())
		l.ip("-n", ns, "addr", "add", "10.77.0.1/16", "dev", "agentnet")
		l.ip(append([]string{"-n", ns}, NoLinkLocalLearn("agentnet")...)...)
		l.ip("-n", ns, "link", "set", "agentnet", "up")
		l.ip("-n", ns, "link", "add", "wan0", "type", "veth", "peer", "name", "wan0p")
		l.ip("-n", ns, "link", "set", "wan0p", "up")
		l.ip("-n", ns, "addr", "add", "192.168.60."+n+"/24", "dev", "wan0")
		l.ip("-n", ns, "link", "set", "wan0", "up")
		l.sysctl(ns, "net.ipv4.ip_forward=1")
	}
	l.ip("link", "add", sdnTunnel, "netns", l.node["1"], "type", "veth", "peer", "name", sdnTunnel, "netns", l.node["2"])
	for _, n := range []string{"1", "2"} {
		l.ip("-n", l.node[n], "link", "set", sdnTunnel, "master", "agentnet")
		l.ip("-n", l.node[n], "link", "set", sdnTunnel, "up")
	}
	for _, s := range []struct {
		name, node, addr string
		vmid             int
	}{{"A", "1", "10.77.0.10", 101}, {"B", "2", "10.77.0.11", 102}, {"D", "2", "10.77.0.13", 104}} {
		ns := l.ns("s" + s.name)
		l.sbx[s.name], l.addr[s.name], l.vmid[s.name], l.on[s.name] = ns, s.addr, s.vmid, s.node
		port := fmt.Sprintf("tap%di0", s.vmid)
		l.ip("link", "add", port, "netns", l.node[s.node], "type", "veth", "peer", "name", "eth0", "netns", ns)
		l.ip("-n", ns, "link", "set", "eth0", "address", MAC(netip.MustParseAddr(s.addr)).String())
		l.ip("-n", ns, "addr", "add", s.addr+"/16", "dev", "eth0")
		l.ip("-n", ns, "link", "set", "eth0", "up")
		l.ip("-n", ns, "route", "add", "default", "via", "10.77.0.1")
		l.ip("-n", l.node[s.node], "link", "set", port, "master", "agentnet")
		l.ip("-n", l.node[s.node], "link", "set", port, "up")
	}
	l.sink2 = newUDPSink(t, l.node["2"], "0.0.0.0:9998")
	return l
}

// load applies on node n the ruleset of its own sandboxes (its node duties),
// all but those in live, which are bound afterwards as agentd binds a
// sandbox that boots (Sets).
func (l *sdnLab) load(n string, isolate bool, live ...string) {
	l.t.Helper()
	var bs []Binding
	for name, on := range l.on {
		if on == n && !slices.Contains(live, name) {
			bs = append(bs, l.binding(name, "nat"))
		}
	}
	p := &Policy{Bridge: "agentnet", Tunnel: sdnTunnel, Subnet: netip.MustParsePrefix("10.77.0.0/16"), HostAddr: netip.MustParseAddr("10.77.0.1"),
		Uplink: "wan0", GuestPort: 8844, IsolateSandboxes: isolate, Bindings: bs, NoBridgeMeta: noBridgeMeta(l.t)}
	rs, err := p.Ruleset()
	if err != nil {
		l.t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", l.node[n], "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rs)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("nft -f on node %s: %v: %s", n, err, out)
	}
	sets := Sets{Command: []string{"ip", "netns", "exec", l.node[n], "nft"}}
	for _, name := range live {
		if err := sets.Add(l.t.Context(), l.binding(name, "nat")); err != nil {
			l.t.Fatal(err)
		}
	}
}

func (l *sdnLab) unload() {
	for _, ns := range l.node {
		_ = exec.Command("ip", "netns", "exec", ns, "nft", "delete table bridge agentlab; delete table inet agentlab").Run()
	}
}

// macOf is the MAC of interface dev in ns.
func (l *sdnLab) macOf(ns, dev string) string {
	mac := ""
	in(l.t, ns, func() {
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			l.t.Fatal(err)
		}
		mac = ifc.HardwareAddr.String()
	})
	return mac
}

// fdbOn is the port node n's bridge has learned mac on ("" none).
func (l *sdnLab) fdbOn(n, mac string) string {
	out, _ := exec.Command("bridge", "-n", l.node[n], "fdb", "show", "br", "agentnet").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && strings.EqualFold(f[0], mac) && f[1] == "dev" {
			return f[2]
		}
	}
	return ""
}

// ra6 is an IPv6 router advertisement from fe80::1 to ff02::1 carrying tok.
func ra6(tok string) []byte {
	ip6 := make([]byte, 40)
	ip6[0] = 0x60
	payload := append([]byte{134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, tok...)
	binary.BigEndian.PutUint16(ip6[4:], uint16(len(payload)))
	ip6[6], ip6[7] = 58, 255
	copy(ip6[8:], net.ParseIP("fe80::1"))
	copy(ip6[24:], net.ParseIP("ff02::1"))
	return append(ip6, payload...)
}

// TestSDNAttacks is the attack matrix of the SDN VNet with real frames, in
// two parts. What a guest on node 1 sends, past node 1's rules, towards node
// 2: it may only ever be itself (its bound address and MAC), never the
// gateway or a sandbox of either node, and never reaches node 2's stack.
// What node 2 receives from the tunnel straight, sent into the tunnel past
// node 1's bridge: a peer that enforces nothing (a node of the zone without
// agentd, or a VM attached to the VNet there). Node 2 must hold on its own:
// nothing from the tunnel is the gateway or one of node 2's sandboxes,
// poisons its bridge's FDB, or reaches its stack. Every case is first shown
// to get through without rules (the lab can carry it), then checked with
// both nodes' rulesets, isolate_sandboxes off and on, br_netfilter off and
// on.
func TestSDNAttacks(t *testing.T) {
	l := newSDNLab(t)
	n1, n2 := l.node["1"], l.node["2"]
	A, B, D := l.addr["A"], l.addr["B"], l.addr["D"]
	macA, macB, macD := MAC(netip.MustParseAddr(A)).String(), MAC(netip.MustParseAddr(B)).String(), MAC(netip.MustParseAddr(D)).String()
	gwMAC, gw := MAC(netip.MustParseAddr("10.77.0.1")).String(), "10.77.0.1"
	tunnel2 := l.macOf(n2, sdnTunnel)    // node 2's own port: a local FDB entry, its frames go up to node 2's stack
	const stranger = "02:00:00:00:00:77" // a MAC no sandbox has
	wireB, wireD := newTap(t, l.sbx["B"], "eth0"), newTap(t, l.sbx["D"], "eth0")
	seen2 := func(tok string) bool {
		time.Sleep(100 * time.Millisecond)
		l.sink2.mu.Lock()
		defer l.sink2.mu.Unlock()
		return l.sink2.seen[tok]
	}
	// fromA sends a frame out of A's eth0; fromTunnel one into the tunnel at
	// node 1's end, so that only node 2's rules see it.
	fromA := func(f []byte) { sendFrame(t, l.sbx["A"], f) }
	fromTunnel := func(f []byte) { sendFrameOn(t, n1, sdnTunnel, f) }
	// reaches: a frame built around a fresh token, sent, and looked for on a
	// sandbox's wire or in node 2's host service.
	reaches := func(send func([]byte), w *tap, build func(tok string) []byte) func() bool {
		return func() bool {
			tok := nextToken("sdn")
			send(build(tok))
			if w == nil {
				return seen2(tok)
			}
			time.Sleep(50 * time.Millisecond)
			return w.saw(tok)
		}
	}
	ipTo := func(dstMAC, srcMAC, src, dst string, sport, dport uint16, tags [][2]uint16) func(string) []byte {
		return func(tok string) []byte {
			return frame(dstMAC, srcMAC, tags, 0x0800, udp4(src, dst, sport, dport, []byte(tok)))
		}
	}
	arpTo := func(dstMAC, srcMAC string, op uint16, sha, spa, tha, tpa string) func(string) []byte {
		return func(tok string) []byte {
			return frame(dstMAC, srcMAC, nil, 0x0806, append(arpPkt(op, sha, spa, tha, tpa), tok...))
		}
	}
	const bcast = "ff:ff:ff:ff:ff:ff"
	// refresh: the owners' own frames put their MACs on their ports, so a
	// learning case starts from the truth.
	refresh := func() {
		for _, s := range []string{"A", "B", "D"} {
			mac := MAC(netip.MustParseAddr(l.addr[s])).String()
			sendNow(t, l.sbx[s], "eth0", frame(bcast, mac, nil, 0x0806, arpPkt(1, mac, l.addr[s], "00:00:00:00:00:00", l.addr[s])))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// learns: after a frame from send with source mac, node n's FDB has mac
	// on port (tried a few times; the owner's own frames move it back).
	learns := func(send func([]byte), mac, n, port string) func() bool {
		return func() bool {
			refresh()
			for i := 0; i < 5; i++ {
				send(frame(bcast, mac, nil, 0x0800, udp4(A, "10.77.255.255", 4000, 9, []byte("learn-me"))))
				if l.fdbOn(n, mac) == port {
					return true
				}
			}
			return false
		}
	}
	type probe struct {
		name    string
		run     func() bool
		without bool // result without rules
		// crosses: with rules, the case gets through exactly when
		// isolate_sandboxes is off (a sandbox being itself); otherwise never.
		crosses bool
	}
	probes := []probe{
		// A guest on node 1.
		{"A, itself, → B on node 2", reaches(fromA, wireB, ipTo(macB, macA, A, B, 4000, 9, nil)), true, true},
		{"A's own subnet broadcast → node 2", reaches(fromA, wireB, ipTo(bcast, macA, A, "10.77.255.255", 4000, 9, nil)), true, true},
		{"A as B's address → D on node 2", reaches(fromA, wireD, ipTo(macD, macA, B, D, 4000, 9, nil)), true, false},
		{"A as the gateway address → B", reaches(fromA, wireB, ipTo(macB, macA, gw, B, 53, 4000, nil)), true, false},
		{"A with B's MAC → D", reaches(fromA, wireD, ipTo(macD, macB, A, D, 4000, 9, nil)), true, false},
		{"A with the gateway MAC and address → B", reaches(fromA, wireB, ipTo(macB, gwMAC, gw, B, 53, 4000, nil)), true, false},
		{"A's ARP reply: gateway at A's MAC → B", reaches(fromA, wireB, arpTo(macB, macA, 2, macA, gw, macB, B)), true, false},
		{"A's ARP reply: D's address at A's MAC → B", reaches(fromA, wireB, arpTo(macB, macA, 2, macA, D, macB, B)), true, false},
		{"A's ARP request for the gateway → node 2", reaches(fromA, wireB, arpTo(bcast, macA, 1, macA, A, "00:00:00:00:00:00", gw)), true, false},
		{"A's gratuitous ARP for the gateway → node 2", reaches(fromA, wireB, arpTo(bcast, macA, 1, macA, gw, "00:00:00:00:00:00", gw)), true, false},
		{"A's IPv6 router advertisement → node 2", reaches(fromA, wireB, func(tok string) []byte { return frame("33:33:00:00:00:01", macA, nil, 0x86dd, ra6(tok)) }), true, false},
		{"A's 802.1Q-tagged frame, itself → B", reaches(fromA, wireB, ipTo(macB, macA, A, B, 4000, 9, [][2]uint16{{0x8100, 5}})), true, false},
		{"A's QinQ frame, itself → B", reaches(fromA, wireB, ipTo(macB, macA, A, B, 4000, 9, [][2]uint16{{0x88a8, 7}, {0x8100, 5}})), true, false},
		{"A to the STP group (bridged, STP off) → node 2", reaches(fromA, wireB, ipTo("01:80:c2:00:00:00", macA, A, B, 4000, 9, nil)), true, false},
		{"A → node 2's stack: gateway address, broadcast frame", reaches(fromA, nil, ipTo(bcast, macA, A, gw, 4000, 9998, nil)), true, false},
		{"A → node 2's stack: gateway address, to node 2's tunnel port MAC", reaches(fromA, nil, ipTo(tunnel2, macA, A, gw, 4000, 9998, nil)), true, false},
		{"A → node 2's stack: its uplink address, broadcast frame", reaches(fromA, nil, ipTo(bcast, macA, A, "192.168.60.2", 4000, 9998, nil)), true, false},
		{"A with B's MAC → node 2 learns B on the tunnel", learns(fromA, macB, "2", sdnTunnel), true, false},
		// Straight from the tunnel, into node 2.
		{"tunnel: a remote sandbox, itself, → B", reaches(fromTunnel, wireB, ipTo(macB, macA, A, B, 4000, 9, nil)), true, true},
		{"tunnel: gateway MAC and address → B", reaches(fromTunnel, wireB, ipTo(macB, gwMAC, gw, B, 53, 4000, nil)), true, false},
		{"tunnel: gateway address, other MAC → B (a DNS answer)", reaches(fromTunnel, wireB, ipTo(macB, stranger, gw, B, 53, 4000, nil)), true, false},
		{"tunnel: B's address → D", reaches(fromTunnel, wireD, ipTo(macD, stranger, B, D, 4000, 9, nil)), true, false},
		{"tunnel: an address outside the subnet → B", reaches(fromTunnel, wireB, ipTo(macB, stranger, "198.51.100.1", B, 443, 4000, nil)), true, false},
		{"tunnel: ARP reply, gateway at another MAC → B", reaches(fromTunnel, wireB, arpTo(macB, stranger, 2, stranger, gw, macB, B)), true, false},
		{"tunnel: ARP reply, D's address at another MAC → B", reaches(fromTunnel, wireB, arpTo(macB, stranger, 2, stranger, D, macB, B)), true, false},
		{"tunnel: ARP reply, an address at the gateway MAC → B", reaches(fromTunnel, wireB, arpTo(macB, stranger, 2, gwMAC, "10.77.0.50", macB, B)), true, false},
		{"tunnel: ARP reply, an address at D's MAC → B", reaches(fromTunnel, wireB, arpTo(macB, stranger, 2, macD, "10.77.0.50", macB, B)), true, false},
		{"tunnel: ARP request for the gateway → node 2", reaches(fromTunnel, wireB, arpTo(bcast, stranger, 1, stranger, "10.77.0.50", "00:00:00:00:00:00", gw)), true, false},
		{"tunnel: IPv6 router advertisement → node 2", reaches(fromTunnel, wireB, func(tok string) []byte { return frame("33:33:00:00:00:01", stranger, nil, 0x86dd, ra6(tok)) }), true, false},
		{"tunnel: 802.1Q-tagged frame → B", reaches(fromTunnel, wireB, ipTo(macB, macA, A, B, 4000, 9, [][2]uint16{{0x8100, 5}})), true, false},
		{"tunnel: to the STP group → node 2", reaches(fromTunnel, wireB, ipTo("01:80:c2:00:00:00", macA, A, B, 4000, 9, nil)), true, false},
		{"tunnel: → node 2's stack, broadcast frame", reaches(fromTunnel, nil, ipTo(bcast, macA, A, gw, 4000, 9998, nil)), true, false},
		{"tunnel: → node 2's stack, to the gateway MAC", reaches(fromTunnel, nil, ipTo(gwMAC, macA, A, gw, 4000, 9998, nil)), true, false},
		{"tunnel: → node 2's stack, to its tunnel port MAC", reaches(fromTunnel, nil, ipTo(tunnel2, macA, A, gw, 4000, 9998, nil)), true, false},
		{"tunnel: → node 2's stack, to the LLDP group", reaches(fromTunnel, nil, ipTo("01:80:c2:00:00:0e", macA, A, gw, 4000, 9998, nil)), true, false},
		{"tunnel: → node 2's uplink address, to the LLDP group", reaches(fromTunnel, nil, ipTo("01:80:c2:00:00:0e", macA, A, "192.168.60.2", 4000, 9998, nil)), true, false},
		{"tunnel: D's MAC → node 2 learns D on the tunnel", learns(fromTunnel, macD, "2", sdnTunnel), true, false},
	}
	// The gateway MAC is a local FDB entry on every node: no frame moves it,
	// with or without rules (the kernel refuses to learn its own address).
	gwLearned := func() bool {
		return learns(fromA, gwMAC, "2", sdnTunnel)() || learns(fromA, gwMAC, "1", "tap101i0")() || learns(fromTunnel, gwMAC, "2", sdnTunnel)()
	}
	for _, n := range []string{"1", "2"} {
		l.sysctl(l.node[n], "net.bridge.bridge-nf-call-iptables=0")
	}
	// Fresh links may need a moment before the first frame crosses.
	up := false
	for i := 0; i < 20 && !up; i++ {
		up = probes[0].run()
	}
	if !up {
		t.Fatal("the lab carries nothing between the nodes even without rules")
	}
	for _, pr := range probes {
		refresh() // without rules, the cases before moved MACs about
		if got := pr.run(); got != pr.without {
			t.Errorf("without rules: %s = %v, want %v (the lab cannot show this case)", pr.name, got, pr.without)
		}
	}
	if gwLearned() {
		t.Error("without rules: a frame moved the gateway MAC off its node's bridge")
	}
	for _, brnf := range []string{"0", "1"} {
		for _, n := range []string{"1", "2"} {
			l.sysctl(l.node[n], "net.bridge.bridge-nf-call-iptables="+brnf)
		}
		for _, isolate := range []bool{false, true} {
			l.load("1", isolate)
			l.load("2", isolate, "D") // D bound live: the tunnel cases about D hold for it too
			what := fmt.Sprintf("bridge-nf-call-iptables=%s isolate=%v", brnf, isolate)
			for _, pr := range probes {
				want := pr.crosses && !isolate
				if got := pr.run(); got != want {
					t.Errorf("%s: %s = %v, want %v", what, pr.name, got, want)
				}
			}
			if gwLearned() {
				t.Errorf("%s: a frame moved the gateway MAC off its node's bridge", what)
			}
		}
	}
	l.unload()
}
