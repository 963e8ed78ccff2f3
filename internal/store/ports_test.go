package store

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestAddPort: a zero host port takes the lowest free one of the range
// (freed ones are reused), the same sandbox port or a taken host port is
// ErrPortTaken, and a full range is ErrNoHostPort naming the range; each
// port added is an event.
func TestAddPort(t *testing.T) {
	s, _, _ := open(t)
	ctx := context.Background()
	a, b := newSB("sbx-a", "a"), newSB("sbx-b", "b")
	for _, sb := range []*Sandbox{a, b} {
		if err := s.CreateSandbox(ctx, sb, Event{}); err != nil {
			t.Fatal(err)
		}
	}
	ev := func(p *Port) Event {
		return Event{Kind: "sandbox.port_exposed", Message: strings.Repeat("x", p.HostPort%3+1)}
	}
	add := func(sb *Sandbox, port, host int) (*Port, error) {
		p := &Port{SandboxID: sb.ID, Port: port, HostPort: host, Addr: "10.77.0.5", Sources: []string{"192.168.1.0/24"}}
		return p, s.AddPort(ctx, sb, p, 20000, 20002, ev)
	}
	for i, want := range []int{20000, 20001} {
		p, err := add(a, 8080+i, 0)
		if err != nil || p.HostPort != want {
			t.Fatalf("port %d: host port %d, %v; want %d", 8080+i, p.HostPort, err, want)
		}
	}
	if _, err := add(a, 8080, 0); !errors.Is(err, ErrPortTaken) || !strings.Contains(err.Error(), "port 8080 of sandbox a") {
		t.Fatalf("same sandbox port twice: %v", err)
	}
	if _, err := add(b, 8080, 20001); !errors.Is(err, ErrPortTaken) || !strings.Contains(err.Error(), "host port 20001") {
		t.Fatalf("taken host port: %v", err)
	}
	// Another sandbox may expose the same guest port; a chosen host port
	// outside the range is taken as it is.
	if p, err := add(b, 8080, 0); err != nil || p.HostPort != 20002 {
		t.Fatalf("b:8080: %d %v", p.HostPort, err)
	}
	if p, err := add(b, 9000, 30000); err != nil || p.HostPort != 30000 {
		t.Fatalf("chosen host port: %d %v", p.HostPort, err)
	}
	if _, err := add(b, 9001, 0); !errors.Is(err, ErrNoHostPort) || !strings.Contains(err.Error(), "20000-20002") {
		t.Fatalf("range exhausted: %v", err)
	}
	// A freed host port is taken again, the lowest first.
	if gone, err := s.DeletePort(ctx, a, 8080, Event{Kind: "sandbox.port_unexposed", Message: "x"}); err != nil || !gone {
		t.Fatalf("delete: %v %v", gone, err)
	}
	if gone, _ := s.DeletePort(ctx, a, 8080, Event{}); gone {
		t.Fatal("a second delete found the port")
	}
	if p, err := add(b, 9001, 0); err != nil || p.HostPort != 20000 {
		t.Fatalf("reuse: %d %v", p.HostPort, err)
	}
	all, err := s.Ports(ctx, "")
	if err != nil || len(all) != 4 {
		t.Fatalf("ports: %d %v", len(all), err)
	}
	for i, want := range []int{20000, 20001, 20002, 30000} {
		if all[i].HostPort != want {
			t.Fatalf("ports not by host port: %d at %d", all[i].HostPort, i)
		}
	}
	if mine, _ := s.Ports(ctx, a.ID); len(mine) != 1 || mine[0].Port != 8081 || mine[0].Sources[0] != "192.168.1.0/24" {
		t.Fatalf("ports of a: %+v", mine)
	}
	var n int
	s.DB().QueryRow(`SELECT COUNT(*) FROM events WHERE kind='sandbox.port_exposed'`).Scan(&n)
	if n != 5 {
		t.Fatalf("%d port_exposed events, want 5", n)
	}
}
