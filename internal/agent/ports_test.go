package agent_test

import (
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

func exposedOf(t *testing.T, c *client.Client, ref string) []api.ExposedPort {
	t.Helper()
	l, err := c.ExposedPorts(tctx(t), ref)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func eventWith(t *testing.T, c *client.Client, ref, kind, text string) bool {
	t.Helper()
	l, err := c.Events(tctx(t), ref, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range l.Events {
		if e.Kind == kind && strings.Contains(e.Message, text) {
			return true
		}
	}
	return false
}

// TestPortGCExpiry: the port_expiry loop (PortGC) withdraws a port whose TTL
// ended, not one before it does, and the ports of a sandbox that stopped
// without agentd seeing it (a change its own stop path would have synced).
func TestPortGCExpiry(t *testing.T) {
	d, c, clk, _ := startLoopsDev(t)
	ctx := tctx(t)
	m := d.Manager
	for _, n := range []string{"web", "parked"} {
		if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: n, Profile: "yolo-ephemeral", TTL: "0"}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.WaitSandbox(ctx, n, 10*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	src := []string{"192.168.1.0/24"}
	short, err := c.Expose(ctx, "web", api.ExposeRequest{Port: 8080, Sources: src, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	if short.ExpiresAt == nil || !short.ExpiresAt.Equal(clk.Now().Add(time.Hour)) {
		t.Fatalf("expires_at %v, want %v", short.ExpiresAt, clk.Now().Add(time.Hour))
	}
	if _, err := c.Expose(ctx, "web", api.ExposeRequest{Port: 9090, Sources: src}); err != nil { // no TTL
		t.Fatal(err)
	}
	if _, err := c.Expose(ctx, "parked", api.ExposeRequest{Port: 8080, Sources: src}); err != nil {
		t.Fatal(err)
	}
	if n := len(exposedOf(t, c, "")); n != 3 {
		t.Fatalf("%d exposed ports, want 3", n)
	}

	clk.Add(59 * time.Minute)
	if err := m.PortGC(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(exposedOf(t, c, "web")); n != 2 {
		t.Fatalf("a minute before its TTL: web has %d exposed ports, want 2", n)
	}
	clk.Add(2 * time.Minute)
	if err := m.PortGC(ctx); err != nil {
		t.Fatal(err)
	}
	web := exposedOf(t, c, "web")
	if len(web) != 1 || web[0].Port != 9090 {
		t.Fatalf("after the TTL: web exposes %+v, want port 9090 only", web)
	}
	if !eventWith(t, c, "web", "sandbox.port_unexposed", "port 8080") || !eventWith(t, c, "web", "sandbox.port_unexposed", "expired") {
		t.Fatal("no sandbox.port_unexposed event for the expired port")
	}
	if n := len(exposedOf(t, c, "parked")); n != 1 {
		t.Fatalf("parked lost its port while running: %d", n)
	}

	// parked stops behind agentd's back (its record changes, its stop path
	// never runs): the port is still listed until PortGC withdraws it.
	sb, err := d.Agent.Store.Sandbox(ctx, mustID(t, c, "parked"))
	if err != nil {
		t.Fatal(err)
	}
	from := sb.State
	sb.State = api.StateStopped
	if err := d.Agent.Store.Save(ctx, sb, from, store.Event{Kind: "test.stopped", Message: "stopped outside agentd"}); err != nil {
		t.Fatal(err)
	}
	if n := len(exposedOf(t, c, "parked")); n != 1 {
		t.Fatalf("the port went before PortGC ran (%d): the test does not exercise PortGC", n)
	}
	if err := m.PortGC(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(exposedOf(t, c, "parked")); n != 0 {
		t.Fatalf("stopped sandbox still exposes %d ports", n)
	}
	if !eventWith(t, c, "parked", "sandbox.port_unexposed", "the sandbox is STOPPED") {
		t.Fatal("no sandbox.port_unexposed event for the stopped sandbox's port")
	}
	if n := len(exposedOf(t, c, "web")); n != 1 {
		t.Fatalf("web's untimed port withdrawn: %d left", n)
	}
}

func mustID(t *testing.T, c *client.Client, ref string) string {
	t.Helper()
	sb, err := c.Sandbox(tctx(t), ref)
	if err != nil {
		t.Fatal(err)
	}
	return sb.ID
}
