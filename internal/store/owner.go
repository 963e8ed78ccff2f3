package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// InstanceID is this installation's id, created with the database (and so
// carried by its backups). It is written into every VM agentd creates, so
// that VMs of another agentd on the same cluster are never taken for ours.
func (s *Store) InstanceID(ctx context.Context) (string, error) {
	var id string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key='instance_id'`).Scan(&id)
	if err != nil {
		return "", fmt.Errorf("read instance id: %w", err)
	}
	return id, nil
}

// Issued is the tombstone of an object id this database issued. Rows of
// destroyed objects may be pruned; these never are, so a VM naming one of our
// ids can always be told from a VM naming an id we never issued.
type Issued struct {
	ID     string
	Kind   string // sandbox or workspace
	VMID   int
	VMGone bool // Proxmox confirmed the VM is gone
}

// IssuedID returns the tombstone of id.
func (s *Store) IssuedID(ctx context.Context, id string) (*Issued, error) {
	var is Issued
	var vmid sql.NullInt64
	var gone int
	err := s.db.QueryRowContext(ctx, `SELECT id, kind, vmid, vm_gone FROM issued WHERE id=?`, id).Scan(&is.ID, &is.Kind, &vmid, &gone)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	is.VMID, is.VMGone = int(vmid.Int64), gone != 0
	return &is, nil
}

// PendingVMs lists issued ids whose VM Proxmox has not confirmed gone: the
// candidates reconcile compares with the cluster to find our VMs, tagged or not.
func (s *Store) PendingVMs(ctx context.Context) ([]Issued, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, kind, vmid FROM issued WHERE vmid IS NOT NULL AND vm_gone = 0`)
	if err != nil {
		return nil, fmt.Errorf("list issued VMIDs: %w", err)
	}
	defer rows.Close()
	var out []Issued
	for rows.Next() {
		var is Issued
		if err := rows.Scan(&is.ID, &is.Kind, &is.VMID); err != nil {
			return nil, err
		}
		out = append(out, is)
	}
	return out, rows.Err()
}

// VMGone records that Proxmox confirmed the VM of id at vmid is gone.
func (s *Store) VMGone(ctx context.Context, id string, vmid int) error {
	_, err := s.db.ExecContext(ctx, `UPDATE issued SET vm_gone=1 WHERE id=? AND vmid=?`, id, vmid)
	return err
}
