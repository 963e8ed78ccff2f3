package netpolicy

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lab is a set of network namespaces this test creates and removes: no packet
// leaves them.
type lab struct {
	t      *testing.T
	prefix string
	nss    []string
}

func (l *lab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func (l *lab) ns(name string) string {
	full := l.prefix + name
	l.ip("netns", "add", full)
	l.nss = append(l.nss, full)
	l.ip("-n", full, "link", "set", "lo", "up")
	return full
}

// link connects two namespaces with a veth pair and addresses both ends.
func (l *lab) link(a, aIf, aAddr, b, bIf, bAddr string) {
	l.ip("link", "add", aIf, "netns", a, "type", "veth", "peer", "name", bIf, "netns", b)
	l.ip("-n", a, "addr", "add", aAddr, "dev", aIf)
	l.ip("-n", b, "addr", "add", bAddr, "dev", bIf)
	l.ip("-n", a, "link", "set", aIf, "up")
	l.ip("-n", b, "link", "set", bIf, "up")
}

func (l *lab) close() {
	for _, n := range l.nss {
		_ = exec.Command("ip", "netns", "del", n).Run()
	}
}

// in runs fn with the calling goroutine's thread inside namespace ns; sockets
// created there stay in that namespace.
func in(t *testing.T, ns string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			panic(err)
		}
	}()
	fn()
}

// serve accepts and closes connections on addr inside ns.
func serve(t *testing.T, ns, addr string) {
	var ln net.Listener
	in(t, ns, func() {
		var err error
		if ln, err = net.Listen("tcp4", addr); err != nil {
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

// connect reports whether a TCP connection from ns (optionally from source
// address src) to addr completes and is answered.
func connect(t *testing.T, ns, src, addr string) bool {
	ok := false
	in(t, ns, func() {
		d := net.Dialer{Timeout: 700 * time.Millisecond}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		c, err := d.Dial("tcp4", addr)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
		buf := make([]byte, 2)
		n, _ := c.Read(buf)
		ok = n == 2
	})
	return ok
}

// TestIsolationWithPackets builds router, sandbox, lan and internet hosts in
// network namespaces, applies the rendered ruleset on the router and checks
// what real TCP connections can reach, in every mode.
func TestIsolationWithPackets(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test builds network namespaces and needs root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required: %v", tool, err)
		}
	}
	l := &lab{t: t, prefix: fmt.Sprintf("al%d-", os.Getpid()%100000)}
	defer l.close()
	rtr, sbx, lan, inet := l.ns("rtr"), l.ns("sbx"), l.ns("lan"), l.ns("inet")
	// The router's sandbox side is named like the agent bridge.
	l.link(rtr, "vmbr1", "10.77.0.1/16", sbx, "eth0", "10.77.0.10/16")
	l.link(rtr, "wan0", "198.51.100.2/24", inet, "eth0", "198.51.100.1/24")
	l.link(rtr, "lan0", "192.168.50.1/24", lan, "eth0", "192.168.50.2/24")
	l.ip("-n", lan, "addr", "add", "169.254.169.254/32", "dev", "eth0") // the metadata service lives on the LAN side
	l.ip("-n", rtr, "route", "add", "169.254.169.254/32", "via", "192.168.50.2")
	l.ip("-n", sbx, "route", "add", "default", "via", "10.77.0.1")
	l.ip("-n", sbx, "addr", "add", "10.77.0.11/16", "dev", "eth0")    // a second address: allowlist host
	l.ip("-n", sbx, "addr", "add", "192.0.2.99/32", "dev", "eth0")    // a spoofed source
	l.ip("-n", lan, "route", "add", "default", "via", "192.168.50.1") // so a lan host would answer if reached
	if out, err := exec.Command("ip", "netns", "exec", rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		t.Fatalf("ip_forward: %v %s", err, out)
	}
	serve(t, inet, "198.51.100.1:80")
	serve(t, inet, "198.51.100.1:443")
	serve(t, lan, "192.168.50.2:80")
	serve(t, lan, "169.254.169.254:80")
	serve(t, rtr, "10.77.0.1:2222") // a host service (think the PVE API or sshd)
	serve(t, rtr, "10.77.0.1:8844") // agentd's guest listener

	// Without the ruleset everything is reachable: the lab itself works.
	if !connect(t, sbx, "", "192.168.50.2:80") || !connect(t, sbx, "", "10.77.0.1:2222") {
		t.Fatal("lab is broken: the sandbox cannot reach the lan or the host before any rules")
	}
	apply := func(p *Policy) {
		t.Helper()
		rs, err := p.Ruleset()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("ip", "netns", "exec", rtr, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rs)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft -f: %v: %s", err, out)
		}
	}
	sbxA, sbxB := netip.MustParseAddr("10.77.0.10"), netip.MustParseAddr("10.77.0.11")
	p := &Policy{Bridge: "vmbr1", Subnet: netip.MustParsePrefix("10.77.0.0/16"), HostAddr: netip.MustParseAddr("10.77.0.1"),
		Uplink: "wan0", GuestPort: 8844, Members: map[netip.Addr]string{sbxA: "nat", sbxB: "nat"},
		Allowlists: map[string][]Allow{"tight": {{Prefix: netip.MustParsePrefix("198.51.100.1/32"), Port: 443}}}}
	apply(p)
	apply(p) // applying twice is idempotent
	cases := []struct {
		name, src, dst string
		want           bool
	}{
		{"internet", "10.77.0.10", "198.51.100.1:80", true},
		{"lan host", "10.77.0.10", "192.168.50.2:80", false},
		{"metadata", "10.77.0.10", "169.254.169.254:80", false},
		{"host service", "10.77.0.10", "10.77.0.1:2222", false},
		{"guest listener", "10.77.0.10", "10.77.0.1:8844", true},
		{"spoofed source to the internet", "192.0.2.99", "198.51.100.1:80", false},
		{"spoofed source to the guest listener", "192.0.2.99", "10.77.0.1:8844", false},
	}
	for _, tc := range cases {
		if got := connect(t, sbx, tc.src, tc.dst); got != tc.want {
			t.Errorf("nat mode: %s (%s → %s): connected=%v, want %v", tc.name, tc.src, tc.dst, got, tc.want)
		}
	}
	// Mode off for A, allowlist (198.51.100.1:443 only) for B.
	p.Members = map[netip.Addr]string{sbxA: "off", sbxB: "allowlist:tight"}
	apply(p)
	for _, tc := range []struct {
		name, src, dst string
		want           bool
	}{
		{"off: internet", "10.77.0.10", "198.51.100.1:80", false},
		{"off: internet 443", "10.77.0.10", "198.51.100.1:443", false},
		{"off: lan", "10.77.0.10", "192.168.50.2:80", false},
		{"allowlist: listed port", "10.77.0.11", "198.51.100.1:443", true},
		{"allowlist: other port", "10.77.0.11", "198.51.100.1:80", false},
		{"allowlist: lan", "10.77.0.11", "192.168.50.2:80", false},
		{"allowlist: guest listener", "10.77.0.11", "10.77.0.1:8844", true},
	} {
		if got := connect(t, sbx, tc.src, tc.dst); got != tc.want {
			t.Errorf("%s (%s → %s): connected=%v, want %v", tc.name, tc.src, tc.dst, got, tc.want)
		}
	}
	// Live set updates (what agentd does as sandboxes come and go), no re-apply.
	sets := Sets{Command: []string{"ip", "netns", "exec", rtr, "nft"}}
	ctx := t.Context()
	if err := sets.Remove(ctx, sbxA, "off"); err != nil {
		t.Fatal(err)
	}
	if err := sets.Add(ctx, sbxA, "nat"); err != nil {
		t.Fatal(err)
	}
	if err := sets.Add(ctx, sbxA, "nat"); err != nil { // idempotent
		t.Fatal(err)
	}
	if !connect(t, sbx, "10.77.0.10", "198.51.100.1:80") {
		t.Error("after moving A to nat live: internet blocked")
	}
	sets.Remove(ctx, sbxA, "nat")
	sets.Add(ctx, sbxA, "off")
	if connect(t, sbx, "10.77.0.10", "198.51.100.1:80") {
		t.Error("after moving A to off live: internet reachable")
	}
	if SetName("allowlist:locked-down") != "allow_locked_down_hosts" {
		t.Error(SetName("allowlist:locked-down"))
	}
}
