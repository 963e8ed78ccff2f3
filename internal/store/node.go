package store

import (
	"context"
	"database/sql"
	"fmt"
)

// drainKey is the meta row marking a node drained.
func drainKey(node string) string { return "node_drained:" + node }

// DrainedNodes lists the nodes in maintenance.
func (s *Store) DrainedNodes(ctx context.Context) (map[string]bool, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT key FROM meta WHERE key LIKE 'node_drained:%'`)
	if err != nil {
		return nil, fmt.Errorf("drained nodes: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		out[k[len("node_drained:"):]] = true
	}
	return out, rows.Err()
}

// SetDrained marks a node drained (or not), with an event.
func (s *Store) SetDrained(ctx context.Context, node string, drained bool) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		q, msg := `DELETE FROM meta WHERE key = ?`, "node "+node+" undrained: sandboxes may be placed on it again"
		if drained {
			q, msg = `INSERT INTO meta(key, value) VALUES (?, '1') ON CONFLICT(key) DO NOTHING`, "node "+node+" drained: no new sandboxes are placed on it"
		}
		if _, err := tx.ExecContext(ctx, q, drainKey(node)); err != nil {
			return err
		}
		kind := "node.undrained"
		if drained {
			kind = "node.drained"
		}
		return s.writeEvent(ctx, tx, eventRow{}, Event{Kind: kind, Message: msg})
	})
}

// RenameSandbox gives a live sandbox another name (agentd only: a sandbox
// replaced on another node hands its name to the replacement), with an
// event; ErrConflict if the name is taken.
func (s *Store) RenameSandbox(ctx context.Context, sb *Sandbox, name, why string) error {
	defer s.changed(sb.ID)
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE sandboxes SET name=?, updated_at=? WHERE id=? AND state <> 'DESTROYED'`,
			name, s.now().UnixMilli(), sb.ID)
		if isUnique(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("rename sandbox %s: %w", sb.Name, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrStale
		}
		old := sb.Name
		sb.Name = name
		return s.insertEvent(ctx, tx, sb, "", "", Event{Kind: "sandbox.renamed", Message: fmt.Sprintf("renamed from %s: %s", old, why)})
	})
}
