package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
)

// TestMigrationToTeams: a database written before teams (schema 10) comes
// out of migration 11 with everything in team default, events of objects
// in default and host events in none, names unique per team, and the
// default team present.
func TestMigrationToTeams(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "agentd.db")
	db := openAtVersion(t, path, 10)
	for _, q := range []string{
		`INSERT INTO sandboxes(id, name, profile, state, created_at, updated_at) VALUES ('sbx-old', 'dev', 'p', 'DESTROYED', 1, 1)`,
		`INSERT INTO sandboxes(id, name, profile, state, vmid, created_at, updated_at) VALUES ('sbx-live', 'dev', 'p', 'RUNNING', 100, 2, 2)`,
		`INSERT INTO sandboxes(id, name, profile, state, vmid, created_at, updated_at) VALUES ('sbx-pool', 'sbx-pool', 'p', 'POOLED', 101, 3, 3)`,
		`INSERT INTO workspaces(id, name, state, storage, size_gb, created_at, updated_at) VALUES ('ws-1', 'data', 'READY', 'local-zfs', 5, 1, 1)`,
		`INSERT INTO sessions(id, name, profile, workspace, state, created_at, updated_at) VALUES ('ses-1', 'work', 'p', 'ws-1', 'ACTIVE', 1, 1)`,
		`INSERT INTO jobs(id, sandbox_id, profile, task, status, created_at, updated_at) VALUES ('job-1', 'sbx-live', 'p', 'true', 'RUNNING', 1, 1)`,
		`INSERT INTO events(ts, sandbox_id, sandbox_name, kind, message) VALUES (1, 'sbx-live', 'dev', 'sandbox.state', 'x')`,
		`INSERT INTO events(ts, workspace, kind, message) VALUES (1, 'data', 'workspace.state', 'x')`,
		`INSERT INTO events(ts, session, kind, message) VALUES (1, 'work', 'session.created', 'x')`,
		`INSERT INTO events(ts, job, kind, message) VALUES (1, 'job-1', 'job.created', 'x')`,
		`INSERT INTO events(ts, kind, message) VALUES (1, 'reconcile.orphan', 'host-wide')`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	s, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, _ := s.Version(ctx); v != SchemaVersion() || v < 11 {
		t.Fatalf("schema %d after migrating, want %d", v, SchemaVersion())
	}
	if _, err := s.Team(ctx, auth.DefaultTeam); err != nil {
		t.Fatalf("team default: %v", err)
	}
	sbs, err := s.Sandboxes(ctx, Filter{IncludeDestroyed: true})
	if err != nil || len(sbs) != 3 {
		t.Fatalf("%d sandboxes %v", len(sbs), err)
	}
	for _, sb := range sbs {
		if sb.Team != auth.DefaultTeam {
			t.Errorf("sandbox %s in team %q", sb.ID, sb.Team)
		}
	}
	if w, err := s.Workspace(ctx, "ws-1"); err != nil || w.Team != auth.DefaultTeam {
		t.Fatalf("workspace %+v %v", w, err)
	}
	if x, err := s.LookupSession(ctx, "work"); err != nil || x.Team != auth.DefaultTeam {
		t.Fatalf("session %+v %v", x, err)
	}
	if j, err := s.Job(ctx, "job-1"); err != nil || j.Team != auth.DefaultTeam {
		t.Fatalf("job %+v %v", j, err)
	}
	evs, err := s.Events(ctx, EventFilter{}, 0, 0)
	if err != nil || len(evs) != 5 {
		t.Fatalf("%d events %v", len(evs), err)
	}
	for _, e := range evs {
		want := auth.DefaultTeam
		if e.Kind == "reconcile.orphan" {
			want = "" // no team's: host events stay for global principals
		}
		if e.Team != want {
			t.Errorf("event %s in team %q, want %q", e.Kind, e.Team, want)
		}
	}
	// A default-team principal finds the old objects by their old names.
	dctx := auth.With(ctx, auth.Principal{Team: auth.DefaultTeam, Role: auth.Member})
	if sb, err := s.Lookup(dctx, "dev"); err != nil || sb.ID != "sbx-live" {
		t.Fatalf("dev in default: %+v %v", sb, err)
	}
	// Names are unique per team: dev again in default conflicts, dev in x
	// does not, and then dev across teams is ambiguous.
	mk := func(id, team string) error {
		return s.CreateSandbox(ctx, &Sandbox{Sandbox: api.Sandbox{ID: id, Name: "dev", Team: team, Profile: "p", State: api.StateRequested}}, Event{})
	}
	if err := mk("sbx-dup", auth.DefaultTeam); !errors.Is(err, ErrConflict) {
		t.Fatalf("second live dev in default: %v", err)
	}
	if err := mk("sbx-x", "x"); !errors.Is(err, ErrNoTeam) {
		t.Fatalf("dev in team x before x exists: %v", err)
	}
	if err := s.CreateTeam(ctx, &api.Team{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := mk("sbx-x", "x"); err != nil {
		t.Fatalf("dev in team x: %v", err)
	}
	if _, err := s.Lookup(ctx, "dev"); !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("dev across teams: %v", err)
	}
	xctx := auth.With(ctx, auth.Principal{Team: "x", Role: auth.Read})
	if sb, err := s.Lookup(xctx, "dev"); err != nil || sb.ID != "sbx-x" {
		t.Fatalf("dev in x: %+v %v", sb, err)
	}
	for _, ref := range []string{"sbx-live", "100", "job-1"} {
		if _, err := s.Lookup(xctx, ref); !errors.Is(err, ErrNotFound) {
			t.Fatalf("team x finds default's %s: %v", ref, err)
		}
	}
	w := &Workspace{ID: "ws-x", Name: "data", Team: "x", State: WorkspaceCreating, Storage: "local-zfs", SizeGB: 1}
	if err := s.CreateWorkspace(ctx, w, Event{}); err != nil {
		t.Fatalf("workspace data in x: %v", err)
	}
	w2 := &Workspace{ID: "ws-d", Name: "data", Team: auth.DefaultTeam, State: WorkspaceCreating, Storage: "local-zfs", SizeGB: 1}
	if err := s.CreateWorkspace(ctx, w2, Event{}); !errors.Is(err, ErrConflict) {
		t.Fatalf("second data in default: %v", err)
	}
}

// TestNoObjectOutlivesItsTeam: once a team is deleted nothing more can be
// created in it (a create that raced the delete fails in its insert), and a
// team that owns something cannot be deleted.
func TestNoObjectOutlivesItsTeam(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "agentd.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateTeam(ctx, &api.Team{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	sb := &Sandbox{Sandbox: api.Sandbox{ID: "sbx-1", Name: "one", Team: "t", Profile: "p", State: api.StateRequested}}
	if err := s.CreateSandbox(ctx, sb, Event{}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTeam(ctx, "t"); !errors.Is(err, ErrTeamInUse) {
		t.Fatalf("delete of a team with a sandbox: %v", err)
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE sandboxes SET state='DESTROYED' WHERE id='sbx-1'`); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTeam(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	for what, err := range map[string]error{
		"sandbox":   s.CreateSandbox(ctx, &Sandbox{Sandbox: api.Sandbox{ID: "sbx-2", Name: "two", Team: "t", Profile: "p", State: api.StateRequested}}, Event{}),
		"workspace": s.CreateWorkspace(ctx, &Workspace{ID: "ws-1", Name: "w", Team: "t", State: WorkspaceCreating, Storage: "s", SizeGB: 1}, Event{}),
		"session":   s.CreateSession(ctx, &Session{ID: "ses-1", Name: "s", Team: "t", Profile: "p", WorkspaceID: "ws-1", State: SessionActive}, Event{}),
		"job":       s.CreateJob(ctx, &Job{ID: "job-1", Team: "t", Profile: "p", Task: "true", Status: JobQueued}),
	} {
		if !errors.Is(err, ErrNoTeam) {
			t.Errorf("%s in the deleted team: %v", what, err)
		}
	}
}
