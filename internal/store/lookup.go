package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

// How a reference (what a user types: `agentd sandbox destroy REF`, an API
// path, a Terraform import id) finds an object. One rule for every kind, by
// the reference's shape (validate.KindOf):
//
//  1. it starts with an id prefix: the object with exactly that id ("sbx-…",
//     "ws-…", "ses-…"; for sandboxes also "job-…", the sandbox of that job);
//     if there is none, the live object with that name;
//  2. it is all digits: the live object at that VMID (a sandbox's VM, a
//     workspace's holder; sessions have none), and nothing else, never a
//     name; canonical decimal only, so "0100" is no VMID;
//  3. anything else: the live object with that name.
//
// Each step matches at most one row (ids are primary keys; unique indexes
// keep live names and live VMIDs distinct) and an earlier match wins, so one
// reference never matches two objects. New names can be neither all digits
// nor start with an id prefix (package validate), so only a name from before
// that rule can meet step 1's fallback, and then only while no object has
// that exact id (ids are random and never reused). Digits never fall back: a
// VMID is reused as soon as its VM is gone, so `destroy 100` means VMID 100
// and, with no live sandbox there, nothing; never a sandbox named "100".
//
// Live means not DESTROYED (sandboxes) or DELETED (workspaces, sessions):
// VMIDs and names are reused once an object is gone, so they never reach a
// tombstone. Ids are never reused: a sandbox's id (or its job's) still finds
// it DESTROYED, so a caller holding the id sees its final state, events and
// artifacts; deleted workspaces and sessions are not found by any reference.

// tier is one query of a lookup, skipped when it does not apply.
type tier struct {
	applies bool
	where   string
	arg     any
}

// first returns the row of the first tier that matches, among the objects
// of ctx's team scope (auth.Scope). Names are unique per team only, so a
// name looked up across teams can match two rows: that is ErrAmbiguous,
// never a guess.
func first[T any](ctx context.Context, s *Store, cols, table string, scan func(scanner) (*T, error), tiers ...tier) (*T, error) {
	for _, t := range tiers {
		if !t.applies {
			continue
		}
		q, args := scoped(ctx, `SELECT `+cols+` FROM `+table+` WHERE (`+t.where+`)`, t.arg)
		rows, err := s.db.QueryContext(ctx, q+` LIMIT 2`, args...)
		if err != nil {
			return nil, fmt.Errorf("look up %s (%s): %w", table, t.where, err)
		}
		var found []*T
		for rows.Next() {
			v, err := scan(rows)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("look up %s (%s): %w", table, t.where, err)
			}
			found = append(found, v)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("look up %s (%s): %w", table, t.where, err)
		}
		switch len(found) {
		case 0:
			continue
		case 1:
			return found[0], nil
		}
		return nil, fmt.Errorf("%w: %q names a %s in more than one team; name the team (--team, the Agentlab-Team header) or use the id",
			ErrAmbiguous, t.arg, map[string]string{"sandboxes": "sandbox", "workspaces": "workspace", "sessions": "session", "api_tokens": "token"}[table])
	}
	return nil, ErrNotFound
}

// refTiers is the rule above for one kind of object: prefix is its id prefix,
// idWhere finds it by id, vmidWhere by VMID ("" for none), nameWhere by name.
func refTiers(ref, prefix, idWhere, vmidWhere, nameWhere string) []tier {
	kind := validate.KindOf(ref)
	vmid, isVMID := validate.VMID(ref)
	return []tier{
		{kind == validate.ByID && strings.HasPrefix(ref, prefix), idWhere, ref},
		{kind == validate.ByVMID && isVMID && vmidWhere != "", vmidWhere, vmid},
		{kind != validate.ByVMID && ref != "", nameWhere, ref},
	}
}

// Lookup resolves a sandbox reference (see the rule above).
func (s *Store) Lookup(ctx context.Context, ref string) (*Sandbox, error) {
	tiers := refTiers(ref, validate.SandboxPrefix, `id = ?`,
		`vmid = ? AND state <> 'DESTROYED'`, `name = ? AND state <> 'DESTROYED'`)
	job := tier{strings.HasPrefix(ref, validate.JobPrefix), `id = (SELECT sandbox_id FROM jobs WHERE id = ?)`, ref}
	return first(ctx, s, sandboxCols, "sandboxes", scanSandbox, append([]tier{job}, tiers...)...)
}

// LookupWorkspace resolves a workspace reference among live workspaces: id,
// holder VMID or name (see the rule above).
func (s *Store) LookupWorkspace(ctx context.Context, ref string) (*Workspace, error) {
	return first(ctx, s, workspaceCols, "workspaces", scanWorkspace, refTiers(ref, validate.WorkspacePrefix,
		`id = ? AND state <> 'DELETED'`, `holder_vmid = ? AND state <> 'DELETED'`, `name = ? AND state <> 'DELETED'`)...)
}

// LookupSession resolves a session reference among live sessions: id or name
// (see the rule above; a session has no VMID, so digits match nothing).
func (s *Store) LookupSession(ctx context.Context, ref string) (*Session, error) {
	return first(ctx, s, sessionCols, "sessions", scanSession, refTiers(ref, validate.SessionPrefix,
		`id = ? AND state <> 'DELETED'`, "", `name = ? AND state <> 'DELETED'`)...)
}
