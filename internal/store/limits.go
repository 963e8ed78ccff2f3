package store

import (
	"context"
	"fmt"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// LiveSandboxes counts sandboxes that are not DESTROYED (of one profile when
// profile is set): each holds, or may still hold, a VM.
func (s *Store) LiveSandboxes(ctx context.Context, profile string) (int, error) {
	q, args := `SELECT COUNT(*) FROM sandboxes WHERE state <> 'DESTROYED'`, []any{}
	if profile != "" {
		q += ` AND profile = ?`
		args = append(args, profile)
	}
	var n int
	if err := s.db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count live sandboxes: %w", err)
	}
	return n, nil
}

// EventsAfter pages forward: the first limit events with an id above after,
// in id order, and whether more follow.
func (s *Store) EventsAfter(ctx context.Context, f EventFilter, after int64, limit int) ([]api.Event, bool, error) {
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	q := `SELECT id, ts, sandbox_id, sandbox_name, workspace, session, kind, message, from_state, to_state FROM events WHERE id > ?`
	args := []any{after}
	for _, c := range [][2]string{{"sandbox_id", f.SandboxID}, {"workspace", f.Workspace}, {"session", f.Session}} {
		if c[1] != "" {
			q += ` AND ` + c[0] + ` = ?`
			args = append(args, c[1])
		}
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY id LIMIT ?`, append(args, limit+1)...)
	if err != nil {
		return nil, false, fmt.Errorf("page events: %w", err)
	}
	defer rows.Close()
	out := []api.Event{}
	for rows.Next() {
		var e api.Event
		var ts int64
		var from, to string
		if err := rows.Scan(&e.ID, &ts, &e.SandboxID, &e.Sandbox, &e.Workspace, &e.Session, &e.Kind, &e.Message, &from, &to); err != nil {
			return nil, false, err
		}
		e.Time, e.From, e.To = time.UnixMilli(ts).UTC(), api.State(from), api.State(to)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}
