package store

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func open(t *testing.T) (*Store, *clock, string) {
	t.Helper()
	c := &clock{t: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "agentd.db")
	s, err := Open(context.Background(), path, c.now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, c, path
}

func newSB(id, name string) *Sandbox {
	return &Sandbox{Sandbox: api.Sandbox{ID: id, Name: name, Profile: "p", State: api.StateRequested, Tags: []string{"a"}}, Request: `{}`}
}

func TestMigrationsAreRecordedAndDowngradeRefused(t *testing.T) {
	s, c, path := open(t)
	ctx := context.Background()
	if v, err := s.Version(ctx); err != nil || v != len(migrations) {
		t.Fatalf("version %d, %v", v, err)
	}
	var mode string
	s.DB().QueryRow(`PRAGMA journal_mode`).Scan(&mode)
	if mode != "wal" {
		t.Fatalf("journal_mode = %s", mode)
	}
	s.DB().Exec(`INSERT INTO schema_migrations VALUES (999, 'future', 0)`)
	s.Close()
	if _, err := Open(ctx, path, c.now); err == nil {
		t.Fatal("opening a newer schema must fail")
	}
}

func TestCreateIsUniqueAmongLiveSandboxes(t *testing.T) {
	s, _, _ := open(t)
	ctx := context.Background()
	a := newSB("sbx-a", "dev")
	if err := s.CreateSandbox(ctx, a, Event{Kind: "sandbox.created", Message: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSandbox(ctx, newSB("sbx-b", "dev"), Event{}); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate live name: %v", err)
	}
	a.State = api.StateDestroyed
	if err := s.Save(ctx, a, api.StateRequested, Event{Kind: "sandbox.state", Message: "gone"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSandbox(ctx, newSB("sbx-b", "dev"), Event{}); err != nil {
		t.Fatalf("name of a destroyed sandbox must be reusable: %v", err)
	}
	got, err := s.Lookup(ctx, "dev")
	if err != nil || got.ID != "sbx-b" {
		t.Fatalf("lookup prefers the live sandbox: %+v %v", got, err)
	}
	if _, err := s.Lookup(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
}

func TestSaveIsCompareAndSet(t *testing.T) {
	s, c, _ := open(t)
	ctx := context.Background()
	sb := newSB("sbx-1", "one")
	s.CreateSandbox(ctx, sb, Event{Kind: "sandbox.created", Message: "requested"})
	c.add(time.Second)
	// Two writers race the same transition: exactly one wins.
	var wg sync.WaitGroup
	var won, stale int
	var mu sync.Mutex
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cp := *sb
			cp.State = api.StateProvisioning
			err := s.Save(ctx, &cp, api.StateRequested, Event{Kind: "sandbox.state", Message: "go"})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				won++
			} else if errors.Is(err, ErrStale) {
				stale++
			} else {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if won != 1 || stale != 7 {
		t.Fatalf("won=%d stale=%d", won, stale)
	}
	bad := *sb
	bad.State = api.StateRunning
	if err := s.Save(ctx, &bad, api.StateProvisioning, Event{}); err == nil {
		t.Fatal("PROVISIONING → RUNNING must be refused")
	}
	got, _ := s.Sandbox(ctx, "sbx-1")
	if got.State != api.StateProvisioning || got.UpdatedAt != c.now() || len(got.Tags) != 1 {
		t.Fatalf("row = %+v", got)
	}
	evs, _ := s.Events(ctx, EventFilter{SandboxID: "sbx-1"}, 0, 0)
	if len(evs) != 2 || evs[1].From != api.StateRequested || evs[1].To != api.StateProvisioning {
		t.Fatalf("events = %+v", evs)
	}
}

func TestEventsTailAndPrune(t *testing.T) {
	s, c, _ := open(t)
	ctx := context.Background()
	sb := newSB("sbx-1", "one")
	s.CreateSandbox(ctx, sb, Event{Kind: "sandbox.created", Message: "requested"})
	for i := 0; i < 5; i++ {
		c.add(time.Hour)
		s.AddEvent(ctx, sb, Event{Kind: "sandbox.touch", Message: "t"})
	}
	tail, _ := s.Events(ctx, EventFilter{}, 0, 2)
	if len(tail) != 2 || tail[1].ID != 6 {
		t.Fatalf("tail = %+v", tail)
	}
	after, _ := s.Events(ctx, EventFilter{SandboxID: "sbx-1"}, 4, 0)
	if len(after) != 2 {
		t.Fatalf("after = %+v", after)
	}
	sb.State = api.StateDestroyed
	s.Save(ctx, sb, api.StateRequested, Event{Kind: "sandbox.state", Message: "destroyed"})
	c.add(3 * time.Hour)
	ev, sbs, err := s.Prune(ctx, 4*time.Hour, 24*time.Hour)
	if err != nil || sbs != 0 || ev != 4 {
		t.Fatalf("prune events=%d sandboxes=%d err=%v", ev, sbs, err)
	}
	c.add(48 * time.Hour)
	_, sbs, _ = s.Prune(ctx, 1000*time.Hour, 24*time.Hour)
	if sbs != 1 {
		t.Fatalf("destroyed row not pruned: %d", sbs)
	}
	if n, _ := s.Counts(ctx); len(n) != 0 {
		t.Fatalf("counts = %v", n)
	}
}
