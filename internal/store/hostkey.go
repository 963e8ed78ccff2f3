package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// HostKey is a sandbox's pinned SSH host key (table host_keys): the first
// key read from its guest, never replaced.
type HostKey struct {
	SandboxID   string
	Key         string // "ssh-ed25519 AAAA…", without the comment
	Fingerprint string // "SHA256:…"
	PinnedAt    time.Time
}

// HostKey returns the sandbox's pinned key, or ErrNotFound.
func (s *Store) HostKey(ctx context.Context, sandboxID string) (*HostKey, error) {
	var k HostKey
	var at int64
	err := s.db.QueryRowContext(ctx, `SELECT sandbox_id, key, fingerprint, pinned_at FROM host_keys WHERE sandbox_id=?`, sandboxID).
		Scan(&k.SandboxID, &k.Key, &k.Fingerprint, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read host key of %s: %w", sandboxID, err)
	}
	k.PinnedAt = time.UnixMilli(at).UTC()
	return &k, nil
}

// PinHostKey records k as sb's host key with an event. A key pinned
// already is kept: the pinned one is returned, and the caller compares.
func (s *Store) PinHostKey(ctx context.Context, sb *Sandbox, k *HostKey, ev Event) (*HostKey, error) {
	k.SandboxID = sb.ID
	k.PinnedAt = s.now().UTC().Truncate(time.Millisecond)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO host_keys(sandbox_id, key, fingerprint, pinned_at) VALUES (?,?,?,?)
			ON CONFLICT(sandbox_id) DO NOTHING`, k.SandboxID, k.Key, k.Fingerprint, k.PinnedAt.UnixMilli())
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		return s.insertEvent(ctx, tx, sb, "", "", ev)
	})
	if err != nil {
		return nil, fmt.Errorf("pin host key of %s: %w", sb.Name, err)
	}
	return s.HostKey(ctx, sb.ID)
}

// ForgetHostKey drops sb's pin with an event, in one transaction; the next
// read through the guest agent pins again. Only for a guest whose disks were
// rolled back to before its first boot, which creates new host keys.
func (s *Store) ForgetHostKey(ctx context.Context, sb *Sandbox, ev Event) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM host_keys WHERE sandbox_id=?`, sb.ID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		return s.insertEvent(ctx, tx, sb, "", "", ev)
	})
	if err != nil {
		return fmt.Errorf("forget host key of %s: %w", sb.Name, err)
	}
	return nil
}
