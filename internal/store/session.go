package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Session states: a session is ACTIVE (it may or may not have a sandbox) until
// DELETED.
const (
	SessionActive  = "ACTIVE"
	SessionDeleted = "DELETED"
)

// Session is a session row.
type Session struct {
	ID          string
	Name        string
	Profile     string
	WorkspaceID string
	SandboxID   string // current sandbox, "" when stopped
	Generation  int    // number of sandboxes this session has had
	State       string
	Team        string
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

const sessionCols = `id, name, profile, workspace, sandbox_id, generation, state, created_at, updated_at, team`

func scanSession(r scanner) (*Session, error) {
	var x Session
	var sb sql.NullString
	var created, updated int64
	err := r.Scan(&x.ID, &x.Name, &x.Profile, &x.WorkspaceID, &sb, &x.Generation, &x.State, &created, &updated, &x.Team)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	x.SandboxID = sb.String
	x.CreatedAt, x.UpdatedAt = time.UnixMilli(created).UTC(), time.UnixMilli(updated).UTC()
	return &x, nil
}

func (s *Store) insertSessionEvent(ctx context.Context, tx *sql.Tx, x *Session, ev Event) error {
	return s.writeEvent(ctx, tx, eventRow{session: x.Name, team: x.Team}, ev)
}

// CreateSession inserts a session and reserves its workspace for it in one
// transaction; ErrConflict if the name is taken, ErrStale if the workspace is
// reserved by another session or gone.
func (s *Store) CreateSession(ctx context.Context, x *Session, ev Event) error {
	now := s.now().UTC().Truncate(time.Millisecond)
	x.CreatedAt, x.UpdatedAt = now, now
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := teamExists(ctx, tx, x.Team); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO sessions(`+sessionCols+`) VALUES (?,?,?,?,?,?,?,?,?,?)`,
			x.ID, x.Name, x.Profile, x.WorkspaceID, nullStr(x.SandboxID), x.Generation, x.State, now.UnixMilli(), now.UnixMilli(), x.Team)
		if isUnique(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("insert session %s: %w", x.Name, err)
		}
		res, err := tx.ExecContext(ctx, `UPDATE workspaces SET reserved_by=?, updated_at=? WHERE id=? AND state='READY' AND reserved_by IS NULL AND team=?`,
			x.ID, now.UnixMilli(), x.WorkspaceID, x.Team)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrStale
		}
		return s.insertSessionEvent(ctx, tx, x, ev)
	})
}

// SaveSession writes x if its current sandbox is still expectSandbox.
func (s *Store) SaveSession(ctx context.Context, x *Session, expectSandbox string, ev Event) error {
	now := s.now().UTC().Truncate(time.Millisecond)
	return s.tx(ctx, func(tx *sql.Tx) error {
		// A sandbox destroyed meanwhile (its DESTROYED trigger found no
		// session yet) is never linked: the session then has none.
		res, err := tx.ExecContext(ctx, `UPDATE sessions SET profile=?, workspace=?,
			sandbox_id=(SELECT CASE WHEN EXISTS (SELECT 1 FROM sandboxes WHERE id=? AND state='DESTROYED') THEN NULL ELSE ? END),
			generation=?, state=?, updated_at=?
			WHERE id=? AND state <> 'DELETED' AND COALESCE(sandbox_id,'')=?`,
			x.Profile, x.WorkspaceID, x.SandboxID, nullStr(x.SandboxID), x.Generation, x.State, now.UnixMilli(), x.ID, expectSandbox)
		if err != nil {
			return fmt.Errorf("update session %s: %w", x.Name, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrStale
		}
		if x.State == SessionDeleted {
			if _, err := tx.ExecContext(ctx, `UPDATE workspaces SET reserved_by=NULL, updated_at=? WHERE id=? AND reserved_by=?`,
				now.UnixMilli(), x.WorkspaceID, x.ID); err != nil {
				return err
			}
		}
		x.UpdatedAt = now
		return s.insertSessionEvent(ctx, tx, x, ev)
	})
}

// Session returns a session by id.
func (s *Store) Session(ctx context.Context, id string) (*Session, error) {
	q, args := scoped(ctx, `SELECT `+sessionCols+` FROM sessions WHERE id=?`, id)
	return scanSession(s.db.QueryRowContext(ctx, q, args...))
}

// Sessions lists live sessions by name.
func (s *Store) Sessions(ctx context.Context) ([]*Session, error) {
	q, args := scoped(ctx, `SELECT `+sessionCols+` FROM sessions WHERE state <> 'DELETED'`)
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY name`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Session
	for rows.Next() {
		x, err := scanSession(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, rows.Err()
}

// SessionOfSandbox returns the live session whose current sandbox is sandboxID.
func (s *Store) SessionOfSandbox(ctx context.Context, sandboxID string) (*Session, error) {
	return scanSession(s.db.QueryRowContext(ctx, `SELECT `+sessionCols+` FROM sessions WHERE sandbox_id=? AND state <> 'DELETED' LIMIT 1`, sandboxID))
}
