package netpolicy

import (
	"net/netip"
	"testing"
)

// TestExposeWithPackets: the DNAT of exposed ports with real packets. The
// host's uplink here is lan0 (192.168.50.1), facing the LAN namespace, which
// holds 192.168.50.2 (an allowed source) and 192.168.50.3 (not one). Sandbox
// A's port 80 is exposed on host port 20000 to 192.168.50.2/32 by the
// rendered ruleset; B's port 80 on 20001 to the whole LAN live, through
// Sets.Expose; then 20000 is withdrawn through Sets.Unexpose.
func TestExposeWithPackets(t *testing.T) {
	l := newSandboxLab(t)
	A, B := l.addr["A"], l.addr["B"]
	l.ip("-n", l.lan, "addr", "add", "192.168.50.3/24", "dev", "eth0")
	const host = "192.168.50.1"
	toA := Expose{HostPort: 20000, Addr: netip.MustParseAddr(A), Port: 80, Sources: []netip.Prefix{netip.MustParsePrefix("192.168.50.2/32")}}
	toB := Expose{HostPort: 20001, Addr: netip.MustParseAddr(B), Port: 80, Sources: []netip.Prefix{netip.MustParsePrefix("192.168.50.0/24")}}
	p := &Policy{Bridge: "vmbr1", Subnet: netip.MustParsePrefix("10.77.0.0/16"), HostAddr: netip.MustParseAddr("10.77.0.1"),
		Uplink: "lan0", GuestPort: 8844, IsolateSandboxes: true,
		Bindings: []Binding{l.binding("A", "nat"), l.binding("B", "nat")}, Exposed: []Expose{toA}, NoBridgeMeta: noBridgeMeta(t)}
	rs, err := p.Ruleset()
	if err != nil {
		t.Fatal(err)
	}
	lan := func(src, addr string) func() bool { return func() bool { return connect(t, l.lan, src, addr) } }
	type probe struct {
		name string
		run  func() bool
		want bool
	}
	// Without rules: nothing listens on the host ports (a connection there
	// only succeeds through the DNAT), and the lab carries LAN ↔ sandbox
	// traffic both ways for either LAN address (so a refused source is
	// refused by the rules, not by the lab).
	for _, pr := range []probe{
		{"allowed source → host port 20000", lan("192.168.50.2", host+":20000"), false},
		{"other source → host port 20000", lan("192.168.50.3", host+":20000"), false},
		{"allowed source → A directly", lan("192.168.50.2", A+":80"), true},
		{"other source → A directly", lan("192.168.50.3", A+":80"), true},
		{"other source → B directly", lan("192.168.50.3", B+":80"), true},
	} {
		if got := pr.run(); got != pr.want {
			t.Errorf("without rules: %s = %v, want %v", pr.name, got, pr.want)
		}
	}
	sets := Sets{Command: []string{"ip", "netns", "exec", l.rtr, "nft"}}
	ctx := t.Context()
	for _, brnf := range []string{"0", "1"} {
		l.sysctl(l.rtr, "net.bridge.bridge-nf-call-iptables="+brnf)
		l.nft(rs)
		check := func(stage string, probes []probe) {
			t.Helper()
			for _, pr := range probes {
				if got := pr.run(); got != pr.want {
					t.Errorf("bridge-nf-call-iptables=%s, %s: %s = %v, want %v", brnf, stage, pr.name, got, pr.want)
				}
			}
		}
		check("rendered", []probe{
			{"allowed source → host port 20000 (A:80)", lan("192.168.50.2", host+":20000"), true},
			{"other source → host port 20000", lan("192.168.50.3", host+":20000"), false},
			{"allowed source → A directly (no DNAT)", lan("192.168.50.2", A+":80"), false},
			{"allowed source → host port 20001 (not exposed yet)", lan("192.168.50.2", host+":20001"), false},
		})
		// Live, as agentd exposes a port (twice: idempotent).
		for i := 0; i < 2; i++ {
			if err := sets.Expose(ctx, toB); err != nil {
				t.Fatal(err)
			}
		}
		check("B exposed live", []probe{
			{"other source → host port 20001 (B:80, its sources)", lan("192.168.50.3", host+":20001"), true},
			{"allowed source → host port 20001 (B:80)", lan("192.168.50.2", host+":20001"), true},
			{"other source → host port 20000 (still not its source)", lan("192.168.50.3", host+":20000"), false},
			{"allowed source → host port 20000 (A:80)", lan("192.168.50.2", host+":20000"), true},
		})
		// Withdrawn (twice: idempotent): 20000 is gone, 20001 is untouched.
		for i := 0; i < 2; i++ {
			if err := sets.Unexpose(ctx, toA); err != nil {
				t.Fatal(err)
			}
		}
		check("A unexposed", []probe{
			{"allowed source → host port 20000 (withdrawn)", lan("192.168.50.2", host+":20000"), false},
			{"allowed source → A directly", lan("192.168.50.2", A+":80"), false},
			{"allowed source → host port 20001 (B:80)", lan("192.168.50.2", host+":20001"), true},
		})
		if err := sets.Unexpose(ctx, toB); err != nil {
			t.Fatal(err)
		}
		check("B unexposed", []probe{
			{"other source → host port 20001 (withdrawn)", lan("192.168.50.3", host+":20001"), false},
		})
		l.nft("delete table bridge agentlab\ndelete table inet agentlab\n")
	}
}
