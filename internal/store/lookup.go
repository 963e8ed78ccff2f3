package store

import (
	"context"
	"strings"

	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

// How a reference (what a user types: `agentd sandbox destroy REF`, an API
// path, a Terraform import id) finds an object. One rule for every kind, in
// order of precedence; the reference's shape (validate.KindOf) picks exactly
// one tier, and a reference never falls through to a lower one:
//
//  1. it starts with an id prefix: the object with exactly that id ("sbx-…",
//     "ws-…", "ses-…"; for sandboxes also "job-…": the sandbox of that job);
//  2. it is all digits: the live object at that VMID (a sandbox's VM, a
//     workspace's holder; sessions have none), canonical decimal only, so
//     "0100" is no VMID;
//  3. anything else: the live object with that name.
//
// Each tier matches at most one row (ids are primary keys; unique indexes
// keep live names and live VMIDs distinct), so one reference can never match
// two objects, whatever the database holds. Names that look like ids or
// VMIDs are refused today (package validate); a legacy row named "100" or
// "sbx-x" is reachable only by its id, never by that name, so `destroy 100`
// always means VMID 100, even after that sandbox is gone.
//
// Live means not DESTROYED (sandboxes) or DELETED (workspaces, sessions):
// VMIDs and names are reused once an object is gone, so they never reach a
// tombstone. Ids are never reused: a sandbox's id (or its job's) still finds
// it DESTROYED, so a caller holding the id sees its final state, events and
// artifacts; deleted workspaces and sessions are not found by any reference.

// sandboxRef is Lookup's rule as a query: the WHERE clause and its
// arguments, or ok=false when the reference can match no sandbox.
func sandboxRef(ref string) (where string, args []any, ok bool) {
	switch validate.KindOf(ref) {
	case validate.ByID:
		if strings.HasPrefix(ref, validate.JobPrefix) {
			return `id = (SELECT sandbox_id FROM jobs WHERE id = ?)`, []any{ref}, true
		}
		return `id = ?`, []any{ref}, strings.HasPrefix(ref, validate.SandboxPrefix)
	case validate.ByVMID:
		vmid, ok := validate.VMID(ref)
		return `vmid = ? AND state <> 'DESTROYED'`, []any{vmid}, ok
	}
	return `name = ? AND state <> 'DESTROYED'`, []any{ref}, ref != ""
}

// Lookup resolves a sandbox reference (see the rule above).
func (s *Store) Lookup(ctx context.Context, ref string) (*Sandbox, error) {
	where, args, ok := sandboxRef(ref)
	if !ok {
		return nil, ErrNotFound
	}
	return scanSandbox(s.db.QueryRowContext(ctx, `SELECT `+sandboxCols+` FROM sandboxes WHERE `+where, args...))
}

// LookupWorkspace resolves a workspace reference among live workspaces: id,
// holder VMID or name (see the rule above).
func (s *Store) LookupWorkspace(ctx context.Context, ref string) (*Workspace, error) {
	var where string
	var arg any = ref
	switch validate.KindOf(ref) {
	case validate.ByID:
		if !strings.HasPrefix(ref, validate.WorkspacePrefix) {
			return nil, ErrNotFound
		}
		where = `id = ?`
	case validate.ByVMID:
		vmid, ok := validate.VMID(ref)
		if !ok {
			return nil, ErrNotFound
		}
		where, arg = `holder_vmid = ?`, vmid
	default:
		where = `name = ?`
	}
	return scanWorkspace(s.db.QueryRowContext(ctx, `SELECT `+workspaceCols+` FROM workspaces
		WHERE `+where+` AND state <> 'DELETED'`, arg))
}

// LookupSession resolves a session reference among live sessions: id or name
// (see the rule above; a session has no VMID, so digits match nothing).
func (s *Store) LookupSession(ctx context.Context, ref string) (*Session, error) {
	where := `name = ?`
	switch validate.KindOf(ref) {
	case validate.ByID:
		if !strings.HasPrefix(ref, validate.SessionPrefix) {
			return nil, ErrNotFound
		}
		where = `id = ?`
	case validate.ByVMID:
		return nil, ErrNotFound
	}
	return scanSession(s.db.QueryRowContext(ctx, `SELECT `+sessionCols+` FROM sessions
		WHERE `+where+` AND state <> 'DELETED'`, ref))
}
