package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Port is an exposed guest port (table ports).
type Port struct {
	SandboxID string
	Port      int
	HostPort  int
	Addr      string // the sandbox's address the DNAT points at
	Sources   []string
	Public    bool
	CreatedAt time.Time
	ExpiresAt *time.Time
}

// ErrPortTaken: the host port is exposed already, or the sandbox's port is.
var ErrPortTaken = errors.New("port already exposed")

// ErrNoHostPort: every host port of the range is in use.
var ErrNoHostPort = errors.New("no free host port")

// AddPort records p with an event on sb (ev is built once the host port is
// known). A zero HostPort takes the lowest free one of [lo, hi], in the same
// transaction.
func (s *Store) AddPort(ctx context.Context, sb *Sandbox, p *Port, lo, hi int, ev func(*Port) Event) error {
	p.CreatedAt = s.now().UTC().Truncate(time.Millisecond)
	src, _ := json.Marshal(p.Sources)
	return s.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM ports WHERE sandbox_id=? AND port=?`, p.SandboxID, p.Port).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("port %d of sandbox %s: %w", p.Port, sb.Name, ErrPortTaken)
		}
		if p.HostPort == 0 {
			used := map[int]bool{}
			rows, err := tx.QueryContext(ctx, `SELECT host_port FROM ports WHERE host_port BETWEEN ? AND ?`, lo, hi)
			if err != nil {
				return err
			}
			for rows.Next() {
				var hp int
				if err := rows.Scan(&hp); err != nil {
					rows.Close()
					return err
				}
				used[hp] = true
			}
			rows.Close()
			for hp := lo; hp <= hi; hp++ {
				if !used[hp] {
					p.HostPort = hp
					break
				}
			}
			if p.HostPort == 0 {
				return fmt.Errorf("%d-%d: %w", lo, hi, ErrNoHostPort)
			}
		}
		pub := 0
		if p.Public {
			pub = 1
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO ports(sandbox_id, port, host_port, addr, sources, public, created_at, expires_at)
			VALUES (?,?,?,?,?,?,?,?)`, p.SandboxID, p.Port, p.HostPort, p.Addr, string(src), pub, p.CreatedAt.UnixMilli(), ms(p.ExpiresAt))
		if isUnique(err) {
			return fmt.Errorf("host port %d: %w", p.HostPort, ErrPortTaken)
		}
		if err != nil {
			return err
		}
		return s.insertEvent(ctx, tx, sb, "", "", ev(p))
	})
}

// DeletePort removes the sandbox's port with an event; false if there was none.
func (s *Store) DeletePort(ctx context.Context, sb *Sandbox, port int, ev Event) (bool, error) {
	var gone bool
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM ports WHERE sandbox_id=? AND port=?`, sb.ID, port)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		if gone = n > 0; !gone {
			return nil
		}
		return s.insertEvent(ctx, tx, sb, "", "", ev)
	})
	return gone, err
}

// Ports lists exposed ports by host port, of one sandbox ("" for all).
func (s *Store) Ports(ctx context.Context, sandboxID string) ([]*Port, error) {
	q := `SELECT sandbox_id, port, host_port, addr, sources, public, created_at, expires_at FROM ports`
	var args []any
	if sandboxID != "" {
		q += ` WHERE sandbox_id=?`
		args = append(args, sandboxID)
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY host_port`, args...)
	if err != nil {
		return nil, fmt.Errorf("list exposed ports: %w", err)
	}
	defer rows.Close()
	out := []*Port{}
	for rows.Next() {
		var p Port
		var src string
		var pub int
		var created int64
		var exp sql.NullInt64
		if err := rows.Scan(&p.SandboxID, &p.Port, &p.HostPort, &p.Addr, &src, &pub, &created, &exp); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(src), &p.Sources); err != nil {
			return nil, fmt.Errorf("exposed port %d: sources: %w", p.HostPort, err)
		}
		p.Public, p.CreatedAt, p.ExpiresAt = pub != 0, time.UnixMilli(created).UTC(), fromMS(exp)
		out = append(out, &p)
	}
	return out, rows.Err()
}
