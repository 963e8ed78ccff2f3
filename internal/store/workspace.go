package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Workspace states.
const (
	WorkspaceCreating = "CREATING"
	WorkspaceReady    = "READY"
	WorkspaceDeleting = "DELETING"
	WorkspaceDeleted  = "DELETED"
	// WorkspaceLost: the VM at the holder's VMID failed the ownership proof;
	// agentd no longer acts on it (delete --force retires the row).
	WorkspaceLost = "LOST"
)

// Workspace is a workspace row. The volume is identified by (HolderVMID,
// DiskKey) and read from Proxmox when needed, never cached: Proxmox renames
// volumes on some operations.
type Workspace struct {
	ID              string
	Name            string
	State           string
	Step            string
	Storage         string
	SizeGB          int
	HolderVMID      int
	DiskKey         string
	AttachedSandbox string // sandbox id, "" when detached
	AttachKey       string // drive key on the sandbox, e.g. scsi1
	ReservedBy      string // session id, "" when free
	Team            string
	Node            string // the holder's node; "" is the agent's own
	Error           string
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

const workspaceCols = `id, name, state, step, storage, size_gb, holder_vmid, disk_key, attached_sandbox, attach_key,
	reserved_by, error, created_at, updated_at, team, node`

func scanWorkspace(r scanner) (*Workspace, error) {
	var w Workspace
	var holder sql.NullInt64
	var att, res sql.NullString
	var created, updated int64
	err := r.Scan(&w.ID, &w.Name, &w.State, &w.Step, &w.Storage, &w.SizeGB, &holder, &w.DiskKey, &att, &w.AttachKey,
		&res, &w.Error, &created, &updated, &w.Team, &w.Node)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	w.HolderVMID, w.AttachedSandbox, w.ReservedBy = int(holder.Int64), att.String, res.String
	w.CreatedAt, w.UpdatedAt = time.UnixMilli(created).UTC(), time.UnixMilli(updated).UTC()
	return &w, nil
}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// WorkspaceEvent records an event about a workspace (and optionally a sandbox).
func (s *Store) insertWorkspaceEvent(ctx context.Context, tx *sql.Tx, w *Workspace, ev Event) error {
	return s.writeEvent(ctx, tx, eventRow{workspace: w.Name, team: w.Team}, ev)
}

// CreateWorkspace inserts a workspace row; ErrConflict if the name is taken.
func (s *Store) CreateWorkspace(ctx context.Context, w *Workspace, ev Event) error {
	now := s.now().UTC().Truncate(time.Millisecond)
	w.CreatedAt, w.UpdatedAt = now, now
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := teamExists(ctx, tx, w.Team); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO workspaces(`+workspaceCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			w.ID, w.Name, w.State, w.Step, w.Storage, w.SizeGB, nullInt(w.HolderVMID), w.DiskKey, nullStr(w.AttachedSandbox),
			w.AttachKey, nullStr(w.ReservedBy), w.Error, now.UnixMilli(), now.UnixMilli(), w.Team, w.Node)
		if isUnique(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("insert workspace %s: %w", w.Name, err)
		}
		return s.insertWorkspaceEvent(ctx, tx, w, ev)
	})
}

// SaveWorkspace writes w if the row still has the expected state, attachment
// and reservation (compare-and-set on all three: they are what concurrent
// operations race for).
func (s *Store) SaveWorkspace(ctx context.Context, w *Workspace, expect Workspace, ev Event) error {
	now := s.now().UTC().Truncate(time.Millisecond)
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE workspaces SET state=?, step=?, storage=?, size_gb=?, holder_vmid=?, disk_key=?,
			attached_sandbox=?, attach_key=?, reserved_by=?, error=?, updated_at=?, node=?
			WHERE id=? AND state=? AND COALESCE(attached_sandbox,'')=? AND COALESCE(reserved_by,'')=?`,
			w.State, w.Step, w.Storage, w.SizeGB, nullInt(w.HolderVMID), w.DiskKey, nullStr(w.AttachedSandbox), w.AttachKey,
			nullStr(w.ReservedBy), w.Error, now.UnixMilli(), w.Node, w.ID, expect.State, expect.AttachedSandbox, expect.ReservedBy)
		if isUnique(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("update workspace %s: %w", w.Name, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrStale
		}
		w.UpdatedAt = now
		return s.insertWorkspaceEvent(ctx, tx, w, ev)
	})
}

// Workspace returns a workspace by id.
func (s *Store) Workspace(ctx context.Context, id string) (*Workspace, error) {
	q, args := scoped(ctx, `SELECT `+workspaceCols+` FROM workspaces WHERE id=?`, id)
	return scanWorkspace(s.db.QueryRowContext(ctx, q, args...))
}

// WorkspaceBySandbox returns the workspace attached to a sandbox, if any.
func (s *Store) WorkspaceBySandbox(ctx context.Context, sandboxID string) (*Workspace, error) {
	return scanWorkspace(s.db.QueryRowContext(ctx, `SELECT `+workspaceCols+` FROM workspaces WHERE attached_sandbox=?`, sandboxID))
}

// Workspaces lists live workspaces by name, or those in the given states.
func (s *Store) Workspaces(ctx context.Context, states ...string) ([]*Workspace, error) {
	q := `SELECT ` + workspaceCols + ` FROM workspaces WHERE state <> 'DELETED'`
	var args []any
	if len(states) > 0 {
		q = `SELECT ` + workspaceCols + ` FROM workspaces WHERE state IN (?` + repeat(",?", len(states)-1) + `)`
		for _, st := range states {
			args = append(args, st)
		}
	}
	q, args = scoped(ctx, q, args...)
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY name`, args...)
	if err != nil {
		return nil, fmt.Errorf("list workspaces: %w", err)
	}
	defer rows.Close()
	var out []*Workspace
	for rows.Next() {
		w, err := scanWorkspace(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

func repeat(s string, n int) string {
	out := ""
	for i := 0; i < n; i++ {
		out += s
	}
	return out
}

// VMIDInUse reports whether a live sandbox or workspace holder has vmid
// reserved (allocation checks this before trusting Proxmox's nextid).
func (s *Store) VMIDInUse(ctx context.Context, vmid int) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM sandboxes WHERE vmid=? AND state <> 'DESTROYED') +
		(SELECT COUNT(*) FROM workspaces WHERE holder_vmid=? AND state <> 'DELETED')`, vmid, vmid).Scan(&n)
	return n > 0, err
}
