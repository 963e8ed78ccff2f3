package agent_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/conntrack"
	"github.com/agentlab/terraform-provider-agentlab/internal/netns"
)

// TestIdleStopSeesOpenSSHSession drives idle stop with real TCP sessions to
// port 22 in network namespaces and the real conntrack tool reading the
// kernel's table (production's conntrack.Command, run inside the "host"
// namespace): a sandbox with an open session is never stopped as idle, one
// whose session was closed is, and the first one is once its session ends.
func TestIdleStopSeesOpenSSHSession(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test builds network namespaces and needs root")
	}
	for _, tool := range []string{"ip", "nft", "conntrack"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (make host-deps installs it): %v", tool, err)
		}
	}
	clk := &fakeClock{t: time.Now().UTC().Truncate(time.Second)}
	prefix := fmt.Sprintf("al-ssh%d-", os.Getpid()%100000)
	hostNS, guestNS := prefix+"h", prefix+"g"
	var lister = func(ctx context.Context) (out []byte, err error) {
		inNS(t, hostNS, func() { out, err = conntrack.Command(ctx) })
		return out, err
	}
	d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{Now: clk.Now, Conntrack: lister, NoLoops: true}})
	ctx := tctx(t)
	ips := map[string]string{}
	for _, n := range []string{"open", "closed"} {
		c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: n, Profile: "yolo-ephemeral", TTL: "0"}) // idle window 30 min
		sb, err := c.WaitSandbox(ctx, n, 10*time.Millisecond)
		if err != nil || sb.IP == "" {
			t.Fatalf("%s: %v %+v", n, err, sb)
		}
		ips[n] = sb.IP
		d.Sim.SetCPU(sb.VMID, 0.01)
	}

	// The host and one guest namespace holding both sandboxes' addresses; a
	// ct rule makes the kernel track connections in the host namespace.
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	for _, ns := range []string{hostNS, guestNS} {
		run("ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		run("ip", "-n", ns, "link", "set", "lo", "up")
	}
	run("ip", "link", "add", "h0", "netns", hostNS, "type", "veth", "peer", "name", "g0", "netns", guestNS)
	run("ip", "-n", hostNS, "addr", "add", "10.77.0.1/16", "dev", "h0")
	for _, ip := range ips {
		run("ip", "-n", guestNS, "addr", "add", ip+"/16", "dev", "g0")
	}
	run("ip", "-n", hostNS, "link", "set", "h0", "up")
	run("ip", "-n", guestNS, "link", "set", "g0", "up")
	run("ip", "netns", "exec", hostNS, "nft", "add table inet t; add chain inet t out { type filter hook output priority 0; ct state established accept; }")

	// An "sshd" in the guest namespace: accepts and holds connections.
	var ln net.Listener
	inNS(t, guestNS, func() {
		var err error
		if ln, err = net.Listen("tcp", ":22"); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, conn); conn.Close() }()
		}
	}()
	dial := func(ip string) net.Conn {
		t.Helper()
		var conn net.Conn
		inNS(t, hostNS, func() {
			var err error
			// The veth pair may take a moment to come up.
			for i := 0; i < 50; i++ {
				if conn, err = net.DialTimeout("tcp", ip+":22", time.Second); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("connect to %s:22: %v", ip, err)
			}
		})
		if _, err := conn.Write([]byte("SSH-2.0-test\r\n")); err != nil {
			t.Fatal(err)
		}
		return conn
	}
	open := dial(ips["open"])
	defer open.Close()
	dial(ips["closed"]).Close()

	ct, err := lister(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if flows := conntrack.Established(ct); !flows[mustAddr(t, ips["open"])] || flows[mustAddr(t, ips["closed"])] {
		t.Fatalf("conntrack sees %v, want only %s established:\n%s", flows, ips["open"], ct)
	}
	step := func(dur time.Duration) {
		t.Helper()
		clk.Add(dur)
		if err := d.Manager.IdleStop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	step(20 * time.Minute)
	step(11 * time.Minute) // 31 min: past the 30 min window
	if got := state(t, c, "open"); got != api.StateRunning {
		t.Fatalf("the sandbox with an open SSH session is %s after 31 idle minutes", got)
	}
	if got := state(t, c, "closed"); got != api.StateStopped {
		t.Fatalf("the sandbox whose session closed is %s after 31 idle minutes, want STOPPED", got)
	}
	// The session ends: the window starts from the last time it was seen.
	open.Close()
	step(time.Minute)
	if got := state(t, c, "open"); got != api.StateRunning {
		t.Fatalf("stopped one minute after its session ended: %s", got)
	}
	step(30 * time.Minute)
	if got := state(t, c, "open"); got != api.StateStopped {
		t.Fatalf("31 minutes after its session ended the sandbox is %s, want STOPPED", got)
	}
}

// inNS runs fn on the calling goroutine's thread inside network namespace ns:
// sockets it opens and processes it starts live there.
func inNS(t *testing.T, ns string, fn func()) {
	t.Helper()
	if err := netns.Do(ns, fn); err != nil {
		t.Fatal(err)
	}
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
