package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// eventQuery selects the events after id `after` that match f.
func eventQuery(ctx context.Context, f EventFilter, after int64) (string, []any) {
	q := `SELECT id, ts, sandbox_id, sandbox_name, workspace, session, kind, message, from_state, to_state, team, actor FROM events WHERE id > ?`
	args := []any{after}
	for _, c := range [][2]string{{"sandbox_id", f.SandboxID}, {"workspace", f.Workspace}, {"session", f.Session}, {"team", f.Team}} {
		if c[1] != "" {
			q += ` AND ` + c[0] + ` = ?`
			args = append(args, c[1])
		}
	}
	return scoped(ctx, q, args...)
}

func scanEvents(rows *sql.Rows) ([]api.Event, error) {
	defer rows.Close()
	out := []api.Event{}
	for rows.Next() {
		var e api.Event
		var ts int64
		var from, to string
		if err := rows.Scan(&e.ID, &ts, &e.SandboxID, &e.Sandbox, &e.Workspace, &e.Session, &e.Kind, &e.Message, &from, &to, &e.Team, &e.Actor); err != nil {
			return nil, err
		}
		e.Time, e.From, e.To = time.UnixMilli(ts).UTC(), api.State(from), api.State(to)
		out = append(out, e)
	}
	return out, rows.Err()
}

// Events returns events after id `after` (oldest first); with tail > 0 only the
// last tail events.
func (s *Store) Events(ctx context.Context, f EventFilter, after int64, tail int) ([]api.Event, error) {
	if tail <= 0 || tail > 1000 {
		tail = 1000
	}
	q, args := eventQuery(ctx, f, after)
	rows, err := s.db.QueryContext(ctx, `SELECT * FROM (`+q+` ORDER BY id DESC LIMIT ?) ORDER BY id`, append(args, tail)...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return scanEvents(rows)
}

// EventsAfter pages forward: the first limit events with an id above after,
// in id order, and whether more follow.
func (s *Store) EventsAfter(ctx context.Context, f EventFilter, after int64, limit int) ([]api.Event, bool, error) {
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	q, args := eventQuery(ctx, f, after)
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY id LIMIT ?`, append(args, limit+1)...)
	if err != nil {
		return nil, false, fmt.Errorf("page events: %w", err)
	}
	out, err := scanEvents(rows)
	if err != nil {
		return nil, false, err
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}
