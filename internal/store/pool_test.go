package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// member inserts a POOLED row built from version hash.
func member(t *testing.T, s *Store, id, hash string) {
	t.Helper()
	sb := &Sandbox{Sandbox: api.Sandbox{ID: id, Name: id, Profile: "p", State: api.StatePooled},
		Request: fmt.Sprintf(`{"pool":"p","profile_hash":%q,"template_vmid":9000}`, hash)}
	if err := s.CreateSandbox(context.Background(), sb, Event{}); err != nil {
		t.Fatal(err)
	}
}

// TestClaimPooledHandsEachMemberOnce: many concurrent claims against a few
// members: each member goes to exactly one claim, the rest find none, and
// members of another profile version are never handed out.
func TestClaimPooledHandsEachMemberOnce(t *testing.T) {
	s, _, _ := open(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		member(t, s, fmt.Sprintf("sbx-00000000000%d", i), "v2")
	}
	member(t, s, "sbx-0000000000ff", "v1")
	const n = 12
	var wg sync.WaitGroup
	got := make([]*Sandbox, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			got[i], errs[i] = s.ClaimPooled(ctx, "p", "v2", func(sb *Sandbox) {
				sb.Name, sb.Request, sb.Step = fmt.Sprintf("user-%d", i), `{"name":"x"}`, "claim"
			}, Event{Kind: "sandbox.claimed", Message: "claimed"})
		}(i)
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range got {
		switch {
		case errs[i] == nil:
			if seen[got[i].ID] {
				t.Fatalf("member %s claimed twice", got[i].ID)
			}
			seen[got[i].ID] = true
			if got[i].State != api.StateProvisioning || got[i].Name != fmt.Sprintf("user-%d", i) {
				t.Fatalf("claimed row: %+v", got[i])
			}
		case !errors.Is(errs[i], ErrNotFound):
			t.Fatalf("claim %d: %v", i, errs[i])
		}
	}
	if len(seen) != 3 || seen["sbx-0000000000ff"] {
		t.Fatalf("claimed %v, want the three members of version v2", seen)
	}
	if n, err := s.PoolClaims(ctx, "p"); err != nil || n != 3 {
		t.Fatalf("claims counted %d (%v), want 3", n, err)
	}
	old, err := s.Sandbox(ctx, "sbx-0000000000ff")
	if err != nil || old.State != api.StatePooled {
		t.Fatalf("the outdated member: %+v %v", old, err)
	}
}

// A claim whose name a live sandbox has is a conflict and leaves the member
// in the pool.
func TestClaimPooledNameConflict(t *testing.T) {
	s, _, _ := open(t)
	ctx := context.Background()
	member(t, s, "sbx-000000000001", "v")
	if err := s.CreateSandbox(ctx, newSB("sbx-0000000000aa", "taken"), Event{}); err != nil {
		t.Fatal(err)
	}
	_, err := s.ClaimPooled(ctx, "p", "v", func(sb *Sandbox) { sb.Name = "taken" }, Event{})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("got %v, want ErrConflict", err)
	}
	if m, err := s.Sandbox(ctx, "sbx-000000000001"); err != nil || m.State != api.StatePooled || m.Name != m.ID {
		t.Fatalf("member after the refused claim: %+v %v", m, err)
	}
}

func TestPoolOverride(t *testing.T) {
	s, _, _ := open(t)
	ctx := context.Background()
	if o, err := s.PoolOverride(ctx, "p"); err != nil || o != nil {
		t.Fatalf("fresh: %v %v", o, err)
	}
	if err := s.SetPoolOverride(ctx, "p", &PoolSize{MinReady: 2, Max: 5}); err != nil {
		t.Fatal(err)
	}
	if o, err := s.PoolOverride(ctx, "p"); err != nil || *o != (PoolSize{MinReady: 2, Max: 5}) {
		t.Fatalf("set: %v %v", o, err)
	}
	if err := s.SetPoolOverride(ctx, "p", nil); err != nil {
		t.Fatal(err)
	}
	if o, err := s.PoolOverride(ctx, "p"); err != nil || o != nil {
		t.Fatalf("cleared: %v %v", o, err)
	}
}
