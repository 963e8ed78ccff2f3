package store

import (
	"context"
	"fmt"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// counted selects the sandboxes limits and quotas count: not DESTROYED,
// not a warm-pool member (name = id, no one's yet: pool.max bounds them),
// not a LOST sandbox a replacement took over while its node is offline
// (its replacement counts; agentd destroys it when the node is back).
// Counts is the same rule for one row.
const counted = `state <> 'DESTROYED' AND name <> id AND NOT (state = 'LOST' AND step = 'node_offline_replaced')`

// Counts reports whether limits and quotas count sb (counted, for a row
// in hand).
func Counts(sb *Sandbox) bool {
	return sb.State != api.StateDestroyed && sb.Name != sb.ID && (sb.State != api.StateLost || sb.Step != "node_offline_replaced")
}

// LiveSandboxes counts sandboxes that are not DESTROYED (of one profile when
// profile is set): each holds, or may still hold, a VM.
func (s *Store) LiveSandboxes(ctx context.Context, profile string) (int, error) {
	q, args := `SELECT COUNT(*) FROM sandboxes WHERE `+counted, []any{}
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
