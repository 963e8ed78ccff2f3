package store

import (
	"context"
	"errors"
	"testing"
)

// sqlRow inserts a row the way an older agentd (or a hand edit) could have
// left it: no validation of its name.
func sqlRow(t *testing.T, s *Store, q string, args ...any) {
	t.Helper()
	if _, err := s.DB().Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func legacySandbox(t *testing.T, s *Store, id, name, state string, vmid any) {
	t.Helper()
	sqlRow(t, s, `INSERT INTO sandboxes(id, name, profile, state, vmid, created_at, updated_at) VALUES (?,?,?,?,?,?,?)`,
		id, name, "p", state, vmid, 1, 1)
}

// The regression of issue 14: a sandbox named "100" next to another at VMID
// 100 made `destroy 100` destroy the named one. Digits now mean a VMID and
// nothing else; an id beats a name; VMIDs and names never reach tombstones.
func TestLookupSandboxTiers(t *testing.T) {
	s, _, _ := open(t)
	ctx := context.Background()
	legacySandbox(t, s, "sbx-aaaaaaaaaaaa", "100", "RUNNING", 555) // an old all-digit name, more recently updated
	sqlRow(t, s, `UPDATE sandboxes SET updated_at = 99 WHERE id = 'sbx-aaaaaaaaaaaa'`)
	legacySandbox(t, s, "sbx-bbbbbbbbbbbb", "web", "RUNNING", 100)
	legacySandbox(t, s, "sbx-cccccccccccc", "web", "DESTROYED", 101)            // an earlier "web"
	legacySandbox(t, s, "sbx-dddddddddddd", "gone", "DESTROYED", 102)           // only a tombstone
	legacySandbox(t, s, "sbx-eeeeeeeeeeee", "sbx-bbbbbbbbbbbb", "RUNNING", 103) // an old name shaped like an id
	legacySandbox(t, s, "sbx-ffffffffffff", "job-0123456789ab", "DESTROYED", 104)
	sqlRow(t, s, `INSERT INTO jobs(id, sandbox_id, profile, task, status, created_at, updated_at) VALUES (?,?,?,?,?,?,?)`,
		"job-0123456789ab", "sbx-ffffffffffff", "p", "true", "COMPLETED", 1, 1)
	legacySandbox(t, s, "sbx-000000000001", "ws-data", "RUNNING", 105)    // an old name with another kind's prefix
	legacySandbox(t, s, "sbx-000000000002", "sbx-legacy", "RUNNING", 106) // an old name with the sandbox prefix

	for _, c := range []struct {
		why, ref, want string // want "" = not found
	}{
		{"VMID beats an all-digit name", "100", "sbx-bbbbbbbbbbbb"},
		{"an all-digit name is never a name", "555", "sbx-aaaaaaaaaaaa"}, // 555 is its VMID
		{"VMID of a destroyed sandbox", "101", ""},
		{"non-canonical digits are no VMID, and never a name", "0100", ""},
		{"digits below the VMID range", "99", ""},
		{"id", "sbx-bbbbbbbbbbbb", "sbx-bbbbbbbbbbbb"},
		{"id beats a legacy name shaped like an id", "sbx-bbbbbbbbbbbb", "sbx-bbbbbbbbbbbb"},
		{"id of a destroyed sandbox still answers", "sbx-cccccccccccc", "sbx-cccccccccccc"},
		{"unknown id is not a name", "sbx-000000000000", ""},
		{"a legacy id-shaped name is shadowed by that id; its own id reaches it", "sbx-eeeeeeeeeeee", "sbx-eeeeeeeeeeee"},
		{"job id finds the job's sandbox, destroyed or not", "job-0123456789ab", "sbx-ffffffffffff"},
		{"unknown job id", "job-999999999999", ""},
		{"a legacy name with another kind's prefix falls back to the name", "ws-data", "sbx-000000000001"},
		{"a legacy name with the id prefix but no such id falls back to the name", "sbx-legacy", "sbx-000000000002"},
		{"name among live sandboxes only", "web", "sbx-bbbbbbbbbbbb"},
		{"name of a tombstone", "gone", ""},
		{"unknown name", "nope", ""},
		{"empty", "", ""},
	} {
		t.Run(c.why, func(t *testing.T) {
			got, err := s.Lookup(ctx, c.ref)
			if c.want == "" {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("Lookup(%q) = %+v, %v; want not found", c.ref, got, err)
				}
				return
			}
			if err != nil || got.ID != c.want {
				t.Fatalf("Lookup(%q) = %+v, %v; want %s", c.ref, got, err, c.want)
			}
		})
	}
	// Once VMID 100 is gone the reference "100" still never reaches the
	// sandbox named "100": a retried `destroy 100` cannot hit another VM.
	sqlRow(t, s, `UPDATE sandboxes SET state = 'DESTROYED' WHERE id = 'sbx-bbbbbbbbbbbb'`)
	if got, err := s.Lookup(ctx, "100"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after VMID 100 was destroyed, 100 = %+v, %v", got, err)
	}
	if got, err := s.Lookup(ctx, "web"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("both webs are destroyed: %+v, %v", got, err)
	}
}

func TestLookupWorkspaceTiers(t *testing.T) {
	s, _, _ := open(t)
	ctx := context.Background()
	ws := func(id, name, state string, holder any) {
		sqlRow(t, s, `INSERT INTO workspaces(id, name, state, storage, size_gb, holder_vmid, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)`,
			id, name, state, "local-lvm", 1, holder, 1, 1)
	}
	ws("ws-aaaaaaaaaaaa", "200", "READY", 900) // legacy all-digit name
	ws("ws-bbbbbbbbbbbb", "data", "READY", 200)
	ws("ws-cccccccccccc", "data", "DELETED", 201)
	ws("ws-dddddddddddd", "ws-bbbbbbbbbbbb", "READY", 202) // legacy id-shaped name
	ws("ws-eeeeeeeeeeee", "creating", "CREATING", nil)     // no holder yet
	ws("ws-ffffffffffff", "ws-old", "READY", 203)          // legacy prefixed name, no such id
	for _, c := range []struct{ why, ref, want string }{
		{"holder VMID beats an all-digit name", "200", "ws-bbbbbbbbbbbb"},
		{"all-digit name is never a name", "900", "ws-aaaaaaaaaaaa"},
		{"holder VMID of a deleted workspace", "201", ""},
		{"id", "ws-bbbbbbbbbbbb", "ws-bbbbbbbbbbbb"},
		{"id of a deleted workspace", "ws-cccccccccccc", ""},
		{"legacy id-shaped name by its id only", "ws-dddddddddddd", "ws-dddddddddddd"},
		{"legacy prefixed name falls back to the name", "ws-old", "ws-ffffffffffff"},
		{"another kind's id, no such name", "sbx-bbbbbbbbbbbb", ""},
		{"name among live workspaces", "data", "ws-bbbbbbbbbbbb"},
		{"name of a workspace still creating", "creating", "ws-eeeeeeeeeeee"},
		{"unknown", "nope", ""},
		{"empty", "", ""},
	} {
		t.Run(c.why, func(t *testing.T) {
			got, err := s.LookupWorkspace(ctx, c.ref)
			if c.want == "" {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("LookupWorkspace(%q) = %+v, %v; want not found", c.ref, got, err)
				}
				return
			}
			if err != nil || got.ID != c.want {
				t.Fatalf("LookupWorkspace(%q) = %+v, %v; want %s", c.ref, got, err, c.want)
			}
		})
	}
}

func TestLookupSessionTiers(t *testing.T) {
	s, _, _ := open(t)
	ctx := context.Background()
	ses := func(id, name, state string) {
		sqlRow(t, s, `INSERT INTO sessions(id, name, profile, workspace, state, created_at, updated_at) VALUES (?,?,?,?,?,?,?)`,
			id, name, "p", "ws-x", state, 1, 1)
	}
	ses("ses-aaaaaaaaaaaa", "300", "ACTIVE") // legacy all-digit name
	ses("ses-bbbbbbbbbbbb", "fix", "ACTIVE")
	ses("ses-cccccccccccc", "fix", "DELETED")
	ses("ses-dddddddddddd", "ses-bbbbbbbbbbbb", "ACTIVE")
	ses("ses-eeeeeeeeeeee", "ses-old", "ACTIVE")
	for _, c := range []struct{ why, ref, want string }{
		{"digits are a VMID, and a session has none", "300", ""},
		{"id", "ses-bbbbbbbbbbbb", "ses-bbbbbbbbbbbb"},
		{"id of a deleted session", "ses-cccccccccccc", ""},
		{"legacy id-shaped name by its id only", "ses-dddddddddddd", "ses-dddddddddddd"},
		{"legacy all-digit name by its id", "ses-aaaaaaaaaaaa", "ses-aaaaaaaaaaaa"},
		{"legacy prefixed name falls back to the name", "ses-old", "ses-eeeeeeeeeeee"},
		{"another kind's id, no such name", "ws-bbbbbbbbbbbb", ""},
		{"name among live sessions", "fix", "ses-bbbbbbbbbbbb"},
		{"unknown", "nope", ""},
		{"empty", "", ""},
	} {
		t.Run(c.why, func(t *testing.T) {
			got, err := s.LookupSession(ctx, c.ref)
			if c.want == "" {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("LookupSession(%q) = %+v, %v; want not found", c.ref, got, err)
				}
				return
			}
			if err != nil || got.ID != c.want {
				t.Fatalf("LookupSession(%q) = %+v, %v; want %s", c.ref, got, err, c.want)
			}
		})
	}
}
