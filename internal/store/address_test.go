package store

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// TestAddressesAreNeverReusedWhileAVMMayHoldThem: an address stays with its
// sandbox (idempotent), through DESTROYED, until vm_gone; the next sandbox
// gets the next address, not the lowest free one; a /30 runs out.
func TestAddressesAreNeverReusedWhileAVMMayHoldThem(t *testing.T) {
	s, _, _ := open(t)
	ctx := context.Background()
	subnet, host := netip.MustParsePrefix("10.77.0.0/29"), netip.MustParseAddr("10.77.0.1")
	var ids []string
	for i, id := range []string{"sbx-a", "sbx-b", "sbx-c"} {
		sb := newSB(id, id)
		sb.VMID = 100 + i
		if err := s.CreateSandbox(ctx, sb, Event{Kind: "t"}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	got := map[string]netip.Addr{}
	for _, id := range ids {
		a, err := s.AssignAddress(ctx, id, subnet, host)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := s.AssignAddress(ctx, id, subnet, host)
		if again != a {
			t.Fatalf("%s: %s then %s", id, a, again)
		}
		got[id] = a
	}
	if got["sbx-a"].String() != "10.77.0.2" || got["sbx-b"].String() != "10.77.0.3" || got["sbx-c"].String() != "10.77.0.4" {
		t.Fatalf("assigned %v", got)
	}
	// A destroyed sandbox whose VM is not confirmed gone keeps its address.
	sb, _ := s.Sandbox(ctx, "sbx-a")
	sb.State = api.StateDestroyed
	if err := s.Save(ctx, sb, "REQUESTED", Event{Kind: "t"}); err != nil {
		t.Fatal(err)
	}
	if a, err := s.Address(ctx, "sbx-a"); err != nil || a != got["sbx-a"] {
		t.Fatalf("address released before the VM is gone: %v %v", a, err)
	}
	if err := s.VMGone(ctx, "sbx-a", 100); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Address(ctx, "sbx-a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("address kept after vm_gone: %v", err)
	}
	// .5 and .6 come before the released .2 is handed out again.
	for _, want := range []string{"10.77.0.5", "10.77.0.6", "10.77.0.2"} {
		id := "sbx-" + want
		s.CreateSandbox(ctx, newSB(id, id), Event{Kind: "t"})
		a, err := s.AssignAddress(ctx, id, subnet, host)
		if err != nil || a.String() != want {
			t.Fatalf("got %s %v, want %s", a, err, want)
		}
	}
	s.CreateSandbox(ctx, newSB("sbx-full", "full"), Event{Kind: "t"})
	if _, err := s.AssignAddress(ctx, "sbx-full", subnet, host); !errors.Is(err, ErrNoAddress) {
		t.Fatalf("full subnet: %v", err)
	}
	all, _ := s.Addresses(ctx)
	if len(all) != 5 {
		t.Fatalf("addresses %v", all)
	}
}

// TestAddressOfASandboxFromBeforeIPAMIsNotReassigned: a sandbox provisioned
// before agentd assigned addresses (migration 6) has no addresses row, only
// the IP its guest got by DHCP; while its VM may run, that IP is still in
// use and must not be handed to a new sandbox (both would be bound to it,
// the host's neighbour entry would flip between them). Once its VM is gone
// the IP is free again. In a /30 (one usable address besides the host's)
// the new sandbox meanwhile gets a clear "exhausted" error.
func TestAddressOfASandboxFromBeforeIPAMIsNotReassigned(t *testing.T) {
	s, _, _ := open(t)
	ctx := context.Background()
	subnet, host := netip.MustParsePrefix("10.77.0.0/30"), netip.MustParseAddr("10.77.0.1")
	legacy := newSB("sbx-legacy", "legacy")
	legacy.VMID, legacy.IP, legacy.State = 100, "10.77.0.2", api.StateRunning
	if err := s.CreateSandbox(ctx, legacy, Event{Kind: "t"}); err != nil {
		t.Fatal(err)
	}
	s.CreateSandbox(ctx, newSB("sbx-new", "new"), Event{Kind: "t"})
	a, err := s.AssignAddress(ctx, "sbx-new", subnet, host)
	if !errors.Is(err, ErrNoAddress) || !strings.Contains(err.Error(), "10.77.0.0/30") {
		t.Fatalf("new sandbox got %s (%v): the legacy sandbox's VM still holds 10.77.0.2", a, err)
	}
	if err := s.VMGone(ctx, "sbx-legacy", 100); err != nil {
		t.Fatal(err)
	}
	if a, err := s.AssignAddress(ctx, "sbx-new", subnet, host); err != nil || a.String() != "10.77.0.2" {
		t.Fatalf("after the legacy VM is gone: %s %v", a, err)
	}
}
