package sandbox

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// TestReplaceReservationIsTeamsOwn: a replacement's reservation (session
// resume: Replace, destroy the old sandbox, create "<session>-<gen>") is
// its team's: names are unique per team only, so another team's create of
// the same name must not be taken for the reservation's own and take the
// reserved slot (the replacement would then be refused after its old
// sandbox was destroyed).
func TestReplaceReservationIsTeamsOwn(t *testing.T) {
	st, m, old := replaceWorld(t, 1)
	ctxA, ctxB := auth.For(context.Background(), "a"), auth.For(context.Background(), "b")
	// Team a's session dev resumes: its replacement dev-2 holds the slot.
	release, err := m.Replace(ctxA, api.CreateSandboxRequest{Name: "dev-2", Profile: "p"}, old.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	old.State = api.StateDestroyed
	if err := st.Save(ctxA, old, api.StateRequested, store.Event{}); err != nil {
		t.Fatal(err)
	}
	// Team b creates a sandbox of the same name meanwhile.
	var errB error
	relB := m.admit(ctxB, canonical{Name: "dev-2", Profile: "p"}, &errB)
	if errB == nil {
		sb := &store.Sandbox{Sandbox: api.Sandbox{ID: "sbx-bbb000000001", Name: "dev-2", Profile: "p", Team: "b", State: api.StateRequested}}
		if err := st.CreateSandbox(ctxB, sb, store.Event{}); err != nil {
			t.Fatal(err)
		}
	}
	relB()
	var errA error
	m.admit(ctxA, canonical{Name: "dev-2", Profile: "p"}, &errA)()
	if errB == nil || errA != nil {
		t.Fatalf("team b's create of the same name took team a's reserved slot: b admitted (err %v), a's replacement refused: %v", errB, errA)
	}
}

// TestReplaceAdjustSeesOtherTeamsOld: while team a's replacement is admitted
// and its old sandbox still live, a create in team b must count the pair
// once: the old sandbox is looked up host-wide, not in b's scope (where it
// would be missed and counted twice, refusing b's create with room left).
func TestReplaceAdjustSeesOtherTeamsOld(t *testing.T) {
	_, m, old := replaceWorld(t, 2)
	ctxA, ctxB := auth.For(context.Background(), "a"), auth.For(context.Background(), "b")
	release, err := m.Replace(ctxA, api.CreateSandboxRequest{Name: "dev-2", Profile: "p"}, old.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	var errB error
	m.admit(ctxB, canonical{Name: "mine", Profile: "p"}, &errB)()
	if errB != nil {
		t.Fatalf("team b refused with one slot of two free (a's old sandbox and its replacement counted twice): %v", errB)
	}
}

// replaceWorld is a manager with teams a and b, a host limit of max
// sandboxes, and team a's live sandbox dev-1 (the one a replacement replaces).
func replaceWorld(t *testing.T, max int) (*store.Store, *Manager, *store.Sandbox) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "agentd.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, n := range []string{"a", "b"} {
		if err := st.CreateTeam(ctx, &api.Team{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	m := New(st, nil, nil, nil, nil, profile.Set{"p": &profile.Profile{Name: "p"}}, Options{Limits: Limits{MaxSandboxes: max}})
	t.Cleanup(m.Close)
	old := &store.Sandbox{Sandbox: api.Sandbox{ID: "sbx-old000000001", Name: "dev-1", Profile: "p", Team: "a", State: api.StateRequested}}
	if err := st.CreateSandbox(auth.For(ctx, "a"), old, store.Event{}); err != nil {
		t.Fatal(err)
	}
	return st, m, old
}
