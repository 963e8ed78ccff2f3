package store

import (
	"context"
	"fmt"
)

// LiveSandboxes counts sandboxes that are not DESTROYED (of one profile when
// profile is set): each holds, or may still hold, a VM.
func (s *Store) LiveSandboxes(ctx context.Context, profile string) (int, error) {
	// Warm-pool members (named after their id, a name only agentd can
	// choose) are no one's sandbox yet: pool.max bounds them.
	q, args := `SELECT COUNT(*) FROM sandboxes WHERE state <> 'DESTROYED' AND name <> id`, []any{}
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
