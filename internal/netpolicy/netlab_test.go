package netpolicy

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sandboxLab is the agent bridge of a Proxmox host in network namespaces: the
// router "rtr" holds vmbr1 (10.77.0.1/16) with one veth "tap" port per
// sandbox namespace, an uplink wan0 to "inet" and lan0 to "lan" (which also
// holds the metadata address). Each sandbox has the MAC agentd derives from
// its address, as provisioning configures it.
type sandboxLab struct {
	*lab
	rtr, lan, inet string
	sbx            map[string]string // name → namespace
	addr           map[string]string // name → IPv4
	vmid           map[string]int
	hostMAC        string
	sink           *udpSink
}

func newSandboxLab(t *testing.T) *sandboxLab {
	if os.Geteuid() != 0 {
		t.Fatal("this test builds network namespaces and needs root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required: %v", tool, err)
		}
	}
	l := &sandboxLab{lab: &lab{t: t, prefix: fmt.Sprintf("al%d-", os.Getpid()%100000)},
		sbx: map[string]string{}, addr: map[string]string{}, vmid: map[string]int{}}
	t.Cleanup(l.close)
	l.rtr, l.lan, l.inet = l.ns("rtr"), l.ns("lan"), l.ns("inet")
	l.ip("-n", l.rtr, "link", "add", "vmbr1", "type", "bridge")
	l.ip("-n", l.rtr, "addr", "add", "10.77.0.1/16", "dev", "vmbr1")
	l.ip("-n", l.rtr, "link", "set", "vmbr1", "up")
	// As the interfaces stanza configures it (Interfaces); the link-local
	// test shows what it is for by clearing it.
	l.ip(append([]string{"-n", l.rtr}, NoLinkLocalLearn("vmbr1")...)...)
	l.link(l.rtr, "wan0", "198.51.100.2/24", l.inet, "eth0", "198.51.100.1/24")
	l.link(l.rtr, "lan0", "192.168.50.1/24", l.lan, "eth0", "192.168.50.2/24")
	l.ip("-n", l.lan, "addr", "add", "169.254.169.254/32", "dev", "eth0")
	l.ip("-n", l.rtr, "route", "add", "169.254.169.254/32", "via", "192.168.50.2")
	l.ip("-n", l.lan, "route", "add", "default", "via", "192.168.50.1")
	// The internet answers the agent subnet directly, so that without rules
	// (no masquerade) the lab still carries sandbox traffic both ways.
	l.ip("-n", l.inet, "route", "add", "10.77.0.0/16", "via", "198.51.100.2")
	l.sysctl(l.rtr, "net.ipv4.ip_forward=1")
	for i, name := range []string{"A", "B", "C", "D"} {
		ns := l.ns("s" + name)
		addr := fmt.Sprintf("10.77.0.%d", 10+i)
		vmid := 101 + i
		l.sbx[name], l.addr[name], l.vmid[name] = ns, addr, vmid
		// No DAD: the IPv6 link-local address is usable at once (it is what
		// the sandbox ↔ sandbox IPv6 case sends from).
		l.sysctl(ns, "net.ipv6.conf.default.accept_dad=0")
		port := fmt.Sprintf("tap%di0", vmid)
		l.ip("link", "add", port, "netns", l.rtr, "type", "veth", "peer", "name", "eth0", "netns", ns)
		l.ip("-n", ns, "link", "set", "eth0", "address", MAC(netip.MustParseAddr(addr)).String())
		l.ip("-n", ns, "addr", "add", addr+"/16", "dev", "eth0")
		l.ip("-n", ns, "link", "set", "eth0", "up")
		l.ip("-n", ns, "route", "add", "default", "via", "10.77.0.1")
		l.ip("-n", l.rtr, "link", "set", port, "master", "vmbr1")
		l.ip("-n", l.rtr, "link", "set", port, "up")
		serve(t, ns, addr+":80")
		serve6(t, ns, "[::]:81")
	}
	in(t, l.rtr, func() {
		ifc, err := net.InterfaceByName("vmbr1")
		if err != nil {
			t.Fatal(err)
		}
		l.hostMAC = ifc.HardwareAddr.String()
	})
	serve(t, l.inet, "198.51.100.1:80")
	serve(t, l.inet, "198.51.100.1:443")
	serve(t, l.lan, "192.168.50.2:80")
	serve(t, l.lan, "169.254.169.254:80")
	serve(t, l.rtr, "10.77.0.1:2222") // a host service (think sshd or the PVE API)
	serve(t, l.rtr, "0.0.0.0:8844")   // agentd's guest listener (all addresses: the rules must confine it)
	udpEcho(t, l.rtr, "10.77.0.1:53") // the host's resolver
	l.sink = newUDPSink(t, l.inet, "198.51.100.1:9999")
	return l
}

func (l *sandboxLab) sysctl(ns, kv string) {
	l.t.Helper()
	if out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-qw", kv).CombinedOutput(); err != nil {
		l.t.Fatalf("sysctl %s in %s: %v %s", kv, ns, err, out)
	}
}

func (l *sandboxLab) nft(script string) {
	l.t.Helper()
	cmd := exec.Command("ip", "netns", "exec", l.rtr, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("nft -f: %v: %s\n%s", err, out, script)
	}
}

func (l *sandboxLab) binding(name, mode string) Binding {
	a := netip.MustParseAddr(l.addr[name])
	return Binding{Addr: a, MAC: MAC(a), Ports: Ports(l.vmid[name]), Mode: mode}
}

// neigh is the MAC the router's neighbour table has for ip on vmbr1 ("" none).
func (l *sandboxLab) neigh(ip string) string {
	out, _ := exec.Command("ip", "-n", l.rtr, "neigh", "show", ip, "dev", "vmbr1").Output()
	f := strings.Fields(string(out))
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

func serve6(t *testing.T, ns, addr string) {
	var ln net.Listener
	in(t, ns, func() {
		var err error
		if ln, err = net.Listen("tcp6", addr); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
}

// linkLocal is the IPv6 link-local address of eth0 in ns.
func linkLocal(t *testing.T, ns string) string {
	ll := ""
	in(t, ns, func() {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() == nil && ipn.IP.IsLinkLocalUnicast() {
				ll = ipn.IP.String()
			}
		}
	})
	if ll == "" {
		t.Fatalf("no link-local address in %s", ns)
	}
	return ll
}

func connect6(t *testing.T, ns, addr string) bool {
	ok := false
	in(t, ns, func() {
		c, err := net.DialTimeout("tcp6", addr, 400*time.Millisecond)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(400 * time.Millisecond))
		buf := make([]byte, 2)
		n, _ := c.Read(buf)
		ok = n == 2
	})
	return ok
}

func udpEcho(t *testing.T, ns, addr string) {
	var pc net.PacketConn
	in(t, ns, func() {
		var err error
		if pc, err = net.ListenPacket("udp4", addr); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
}

// udpAsk reports whether a datagram from ns (source src, "" for the
// default) to addr is answered.
func udpAsk(t *testing.T, ns, src, addr string) bool {
	ok := false
	in(t, ns, func() {
		d := net.Dialer{}
		if src != "" {
			d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(src)}
		}
		c, err := d.Dial("udp4", addr)
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("query"))
		c.SetReadDeadline(time.Now().Add(400 * time.Millisecond))
		buf := make([]byte, 16)
		n, _ := c.Read(buf)
		ok = n == 5
	})
	return ok
}

// udpSink records the payloads it receives: one-way probes (a spoofed
// source never gets an answer, but its packet may still arrive).
type udpSink struct {
	mu   sync.Mutex
	seen map[string]bool
}

func newUDPSink(t *testing.T, ns, addr string) *udpSink {
	s := &udpSink{seen: map[string]bool{}}
	var pc net.PacketConn
	in(t, ns, func() {
		var err error
		if pc, err = net.ListenPacket("udp4", addr); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.seen[string(buf[:n])] = true
			s.mu.Unlock()
		}
	}()
	return s
}

var probeSeq int

// spoofUDP sends one datagram from ns with a source address ns does not
// hold (IP_TRANSPARENT: as root, any source) and reports whether the sink received it.
func (l *sandboxLab) spoofUDP(ns, src, dst string) bool {
	probeSeq++
	token := fmt.Sprintf("probe-%d", probeSeq)
	in(l.t, ns, func() {
		d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}, Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TRANSPARENT, 1) })
			return serr
		}}
		c, err := d.Dial("udp4", dst)
		if err != nil {
			l.t.Fatalf("spoof from %s: %v", src, err)
		}
		c.Write([]byte(token))
		c.Close()
	})
	time.Sleep(200 * time.Millisecond)
	l.sink.mu.Lock()
	defer l.sink.mu.Unlock()
	return l.sink.seen[token]
}

// ping sends one ICMP echo request from ns to dst and waits for the reply.
func ping(t *testing.T, ns, dst string) bool {
	ok := false
	in(t, ns, func() {
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		id := uint16(os.Getpid())
		msg := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 'a', 'l'}
		binary.BigEndian.PutUint16(msg[2:], checksum(msg))
		if _, err := c.WriteTo(msg, &net.IPAddr{IP: net.ParseIP(dst)}); err != nil {
			return
		}
		deadline := time.Now().Add(400 * time.Millisecond)
		c.SetReadDeadline(deadline)
		buf := make([]byte, 1500)
		for time.Now().Before(deadline) {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			if n >= 8 && buf[0] == 0 && from.String() == dst && binary.BigEndian.Uint16(buf[4:]) == id {
				ok = true
				return
			}
		}
	})
	return ok
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// sendARP sends an ARP reply out of eth0 in ns: "senderIP is at senderMAC",
// to the host's bridge MAC (what a guest poisoning the host's cache sends).
func sendARP(t *testing.T, ns, senderMAC, senderIP, targetMAC, targetIP string) {
	in(t, ns, func() {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		sm, _ := net.ParseMAC(senderMAC)
		tm, _ := net.ParseMAC(targetMAC)
		frame := append(append([]byte{}, tm...), ifc.HardwareAddr...) // the frame comes from the port's own MAC
		frame = append(frame, 0x08, 0x06)
		frame = append(frame, 0, 1, 8, 0, 6, 4, 0, 2) // Ethernet, IPv4, reply
		frame = append(frame, sm...)
		frame = append(frame, net.ParseIP(senderIP).To4()...)
		frame = append(frame, tm...)
		frame = append(frame, net.ParseIP(targetIP).To4()...)
		sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifc.Index, Halen: 6}
		copy(sa.Addr[:], tm)
		if err := unix.Sendto(fd, frame, 0, sa); err != nil {
			t.Fatal(err)
		}
	})
	time.Sleep(100 * time.Millisecond)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestIsolationWithPackets is the network attack matrix with real packets:
// every case runs first without any ruleset (showing the lab can carry the
// packet, so a "blocked" result means the rules blocked it), then with the
// rendered ruleset loaded with br_netfilter passing bridged frames to
// iptables/nftables (bridge-nf-call-iptables=1) and not (=0).
func TestIsolationWithPackets(t *testing.T) {
	l := newSandboxLab(t)
	A, B := l.addr["A"], l.addr["B"]
	llB := linkLocal(t, l.sbx["B"])
	p := &Policy{Bridge: "vmbr1", Subnet: netip.MustParsePrefix("10.77.0.0/16"), HostAddr: netip.MustParseAddr("10.77.0.1"),
		Uplink: "wan0", GuestPort: 8844, IsolateSandboxes: true,
		Allowlists: map[string][]Allow{"tight": {{Prefix: netip.MustParsePrefix("198.51.100.1/32"), Port: 443}}},
		Bindings:   []Binding{l.binding("A", "nat"), l.binding("B", "nat"), l.binding("C", "off")}}
	p.NoBridgeMeta = noBridgeMeta(t)
	rs, err := p.Ruleset()
	if err != nil {
		t.Fatal(err)
	}
	// The unassigned address 10.77.0.99 is a second address of A's interface:
	// the guest simply configures it.
	l.ip("-n", l.sbx["A"], "addr", "add", "10.77.0.99/16", "dev", "eth0")

	// arpSpoof: A tells the host that B's address is at A's MAC; the
	// result is whether the host's neighbour entry for B now names A.
	arpSpoof := func() bool {
		connect(t, l.rtr, "", B+":80") // the host knows B
		if got := l.neigh(B); !strings.EqualFold(got, MAC(netip.MustParseAddr(B)).String()) {
			t.Fatalf("neighbour entry of B before the spoof: %q", got)
		}
		time.Sleep(1100 * time.Millisecond) // past the neighbour locktime, so an override could apply
		macA := MAC(netip.MustParseAddr(A)).String()
		sendARP(t, l.sbx["A"], macA, B, l.hostMAC, "10.77.0.1")
		spoofed := strings.EqualFold(l.neigh(B), macA)
		exec.Command("ip", "-n", l.rtr, "neigh", "flush", "dev", "vmbr1").Run()
		return spoofed
	}
	type probe struct {
		name            string
		run             func() bool
		without, wanted bool // result without rules, and required with them
	}
	probes := []probe{
		{"unassigned source → internet", func() bool { return connect(t, l.sbx["A"], "10.77.0.99", "198.51.100.1:80") }, true, false},
		{"unassigned source → guest listener", func() bool { return connect(t, l.sbx["A"], "10.77.0.99", "10.77.0.1:8844") }, true, false},
		{"unassigned source → host DNS", func() bool { return udpAsk(t, l.sbx["A"], "10.77.0.99", "10.77.0.1:53") }, true, false},
		{"unbound sandbox (D, no binding) → internet", func() bool { return connect(t, l.sbx["D"], "", "198.51.100.1:80") }, true, false},
		{"off → internet", func() bool { return connect(t, l.sbx["C"], "", "198.51.100.1:80") }, true, false},
		{"off → internet 443", func() bool { return connect(t, l.sbx["C"], "", "198.51.100.1:443") }, true, false},
		{"off → host DNS", func() bool { return udpAsk(t, l.sbx["C"], "", "10.77.0.1:53") }, true, false},
		{"off → guest listener", func() bool { return connect(t, l.sbx["C"], "", "10.77.0.1:8844") }, true, true},
		{"IP spoof (A sends as B) → internet", func() bool { return l.spoofUDP(l.sbx["A"], B, "198.51.100.1:9999") }, true, false},
		{"IP spoof (A sends as 192.0.2.99) → internet", func() bool { return l.spoofUDP(l.sbx["A"], "192.0.2.99", "198.51.100.1:9999") }, true, false},
		{"ARP spoof of B's address → host neighbour entry", arpSpoof, true, false},
		{"sandbox → sandbox TCP", func() bool { return connect(t, l.sbx["A"], "", B+":80") }, true, false},
		{"sandbox → sandbox ICMP", func() bool { return ping(t, l.sbx["A"], B) }, true, false},
		{"sandbox → sandbox IPv6 link-local TCP", func() bool { return connect6(t, l.sbx["A"], "["+llB+"%eth0]:81") }, true, false},
		{"LAN host → guest listener", func() bool { return connect(t, l.lan, "", "10.77.0.1:8844") }, true, false},
		{"bound sandbox → guest listener", func() bool { return connect(t, l.sbx["A"], "", "10.77.0.1:8844") }, true, true},
		{"bound sandbox → host service", func() bool { return connect(t, l.sbx["A"], "", "10.77.0.1:2222") }, true, false},
		{"nat → internet", func() bool { return connect(t, l.sbx["A"], "", "198.51.100.1:80") }, true, true},
		{"nat → host DNS", func() bool { return udpAsk(t, l.sbx["A"], "", "10.77.0.1:53") }, true, true},
		{"nat → LAN host", func() bool { return connect(t, l.sbx["A"], "", "192.168.50.2:80") }, true, false},
		{"nat → metadata", func() bool { return connect(t, l.sbx["A"], "", "169.254.169.254:80") }, true, false},
		{"host → bound sandbox", func() bool { return connect(t, l.rtr, "", A+":80") }, true, true},
	}
	// Without rules: the lab carries every packet.
	l.sysctl(l.rtr, "net.bridge.bridge-nf-call-iptables=0")
	for _, pr := range probes {
		if got := pr.run(); got != pr.without {
			t.Errorf("without rules: %s = %v, want %v (the lab cannot show this case)", pr.name, got, pr.without)
		}
	}
	allow := []probe{
		{"allowlist → listed port", func() bool { return connect(t, l.sbx["D"], "", "198.51.100.1:443") }, true, true},
		{"allowlist → other port", func() bool { return connect(t, l.sbx["D"], "", "198.51.100.1:80") }, true, false},
		{"allowlist → LAN host", func() bool { return connect(t, l.sbx["D"], "", "192.168.50.2:80") }, true, false},
		{"allowlist → guest listener", func() bool { return connect(t, l.sbx["D"], "", "10.77.0.1:8844") }, true, true},
		{"allowlist → host DNS", func() bool { return udpAsk(t, l.sbx["D"], "", "10.77.0.1:53") }, true, true},
	}
	for _, pr := range allow {
		if got := pr.run(); got != pr.without {
			t.Errorf("without rules: %s = %v, want %v", pr.name, got, pr.without)
		}
	}
	sets := Sets{Command: []string{"ip", "netns", "exec", l.rtr, "nft"}}
	ctx := t.Context()
	for _, brnf := range []string{"0", "1"} {
		l.sysctl(l.rtr, "net.bridge.bridge-nf-call-iptables="+brnf)
		l.nft(rs)
		l.nft(rs) // applying twice is idempotent
		for _, pr := range probes {
			if got := pr.run(); got != pr.wanted {
				t.Errorf("bridge-nf-call-iptables=%s: %s = %v, want %v", brnf, pr.name, got, pr.wanted)
			}
		}
		// D bound live, as agentd does when it boots: its allowlist applies.
		if err := sets.Add(ctx, l.binding("D", "allowlist:tight")); err != nil {
			t.Fatal(err)
		}
		for _, pr := range allow {
			if got := pr.run(); got != pr.wanted {
				t.Errorf("bridge-nf-call-iptables=%s: %s = %v, want %v", brnf, pr.name, got, pr.wanted)
			}
		}
		// Unbinding (idempotent) cuts A off at once, rebinding restores it.
		for i := 0; i < 2; i++ {
			if err := sets.Remove(ctx, l.binding("A", "nat")); err != nil {
				t.Fatal(err)
			}
		}
		if connect(t, l.sbx["A"], "", "198.51.100.1:80") || connect(t, l.sbx["A"], "", "10.77.0.1:8844") {
			t.Errorf("bridge-nf-call-iptables=%s: A still reaches out after its binding was removed", brnf)
		}
		if err := sets.Add(ctx, l.binding("A", "nat")); err != nil {
			t.Fatal(err)
		}
		if !connect(t, l.sbx["A"], "", "198.51.100.1:80") {
			t.Errorf("bridge-nf-call-iptables=%s: A cut off after rebinding", brnf)
		}
		// Moving D from allowlist to off, live.
		sets.Remove(ctx, l.binding("D", "allowlist:tight"))
		sets.Add(ctx, l.binding("D", "off"))
		if connect(t, l.sbx["D"], "", "198.51.100.1:443") || udpAsk(t, l.sbx["D"], "", "10.77.0.1:53") {
			t.Errorf("bridge-nf-call-iptables=%s: D reaches out after moving to off", brnf)
		}
		sets.Remove(ctx, l.binding("D", "off"))
		l.nft("delete table bridge agentlab\ndelete table inet agentlab\n")
	}
	if SetName("allowlist:locked-down") != "allow_locked_down_hosts" {
		t.Error(SetName("allowlist:locked-down"))
	}
}

// TestSandboxesTalkWhenNotIsolated: with isolate_sandboxes off, bound
// sandboxes reach each other (bridged or, with br_netfilter, through the
// forward chain) but a sandbox whose binding ended does not.
func TestSandboxesTalkWhenNotIsolated(t *testing.T) {
	l := newSandboxLab(t)
	p := &Policy{Bridge: "vmbr1", Subnet: netip.MustParsePrefix("10.77.0.0/16"), HostAddr: netip.MustParseAddr("10.77.0.1"),
		Uplink: "wan0", GuestPort: 8844, Bindings: []Binding{l.binding("A", "nat"), l.binding("B", "nat")}, NoBridgeMeta: noBridgeMeta(t)}
	rs, err := p.Ruleset()
	if err != nil {
		t.Fatal(err)
	}
	sets := Sets{Command: []string{"ip", "netns", "exec", l.rtr, "nft"}}
	for _, brnf := range []string{"0", "1"} {
		l.sysctl(l.rtr, "net.bridge.bridge-nf-call-iptables="+brnf)
		l.nft(rs)
		// C was a sandbox: bound while it ran, unbound when it stopped.
		if err := sets.Add(t.Context(), l.binding("C", "nat")); err != nil {
			t.Fatal(err)
		}
		if !connect(t, l.sbx["C"], "", l.addr["B"]+":80") {
			t.Errorf("bridge-nf-call-iptables=%s: bound C cannot reach B", brnf)
		}
		if err := sets.Remove(t.Context(), l.binding("C", "nat")); err != nil {
			t.Fatal(err)
		}
		if !connect(t, l.sbx["A"], "", l.addr["B"]+":80") {
			t.Errorf("bridge-nf-call-iptables=%s: A cannot reach B with isolate_sandboxes off", brnf)
		}
		if connect(t, l.sbx["C"], "", l.addr["B"]+":80") {
			t.Errorf("bridge-nf-call-iptables=%s: C reaches B after its binding ended", brnf)
		}
	}
}

// noBridgeMeta: the ruleset form this kernel can load. The lab kernel may
// lack CONFIG_NFT_BRIDGE_META (then the ports-set form is what is tested
// with packets; the meta ibrname form is covered by the golden file and,
// where the kernel has it, nft -c and these packets).
func noBridgeMeta(t *testing.T) bool {
	if HasBridgeMeta(t.Context()) {
		return false
	}
	t.Log("kernel without nft bridge meta (CONFIG_NFT_BRIDGE_META): testing the ports-set form of the bridge table")
	return true
}
