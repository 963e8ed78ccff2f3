package sandbox

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// TestAdmissionHoldsTheLastSlot: a create admitted into the last slot holds
// the admission until its row is in, so a second create decided meanwhile
// sees that row and is refused, and a failed check leaves nothing held.
func TestAdmissionHoldsTheLastSlot(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "agentd.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m := New(st, nil, nil, nil, nil, profile.Set{"p": &profile.Profile{Name: "p"}}, Options{Limits: Limits{MaxSandboxes: 1}})
	defer m.Close()
	for round := 0; round < 20; round++ {
		a, b := "a"+string(rune('a'+round)), "b"+string(rune('a'+round))
		var errA error
		release := m.admit(ctx, canonical{Name: a, Profile: "p"}, &errA)
		if errA != nil {
			t.Fatal(errA)
		}
		done := make(chan error)
		go func() {
			var errB error
			m.admit(ctx, canonical{Name: b, Profile: "p"}, &errB)()
			done <- errB
		}()
		// CreateFor inserts the row while it holds the admission.
		sb := &store.Sandbox{Sandbox: api.Sandbox{ID: "sbx-" + a, Name: a, Profile: "p", State: api.StateRequested}}
		if err := st.CreateSandbox(ctx, sb, store.Event{}); err != nil {
			t.Fatal(err)
		}
		release()
		if errB := <-done; !api.IsCode(errB, api.CodeSandboxLimit) {
			t.Fatalf("round %d: a create decided while the last slot was being taken: %v", round, errB)
		}
		// Free the slot for the next round.
		sb.State = api.StateDestroyed
		if err := st.Save(ctx, sb, api.StateRequested, store.Event{}); err != nil {
			t.Fatal(err)
		}
	}
	// Every admission was released (refused ones at once): this one does not block.
	var err1 error
	m.admit(ctx, canonical{Name: "z", Profile: "p", TTLSeconds: 60}, &err1)()
	if err1 != nil {
		t.Fatal(err1)
	}
}
