package netpolicy

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/netns"
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
	if err := netns.Do(ns, fn); err != nil {
		t.Fatal(err)
	}
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
		d := net.Dialer{Timeout: 400 * time.Millisecond}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		c, err := d.Dial("tcp4", addr)
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
