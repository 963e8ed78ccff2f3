package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
)

// ErrNoAddress: every address of the agent subnet is held by a sandbox whose
// VM Proxmox has not confirmed gone.
var ErrNoAddress = errors.New("agent subnet exhausted")

// AssignAddress returns the address of sandboxID, assigning the next free one
// of subnet when it has none. An address stays with its sandbox until the
// issued row of that sandbox records vm_gone (trigger addresses_release):
// until Proxmox confirms the VM is gone, a guest might still use it, so it is
// never handed to another sandbox. Assignment walks on from the last address
// handed out (meta ipam_next) rather than taking the lowest free one, so a
// just-released address is the last to be reused (stale ARP and conntrack
// entries of the old VM have long expired by then). reserved are never
// assigned (the host's own address).
func (s *Store) AssignAddress(ctx context.Context, sandboxID string, subnet netip.Prefix, reserved ...netip.Addr) (netip.Addr, error) {
	subnet = subnet.Masked()
	if !subnet.Addr().Is4() || subnet.Bits() > 30 {
		return netip.Addr{}, fmt.Errorf("agent subnet %s: want an IPv4 prefix of /30 or larger", subnet)
	}
	var out netip.Addr
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var have string
		err := tx.QueryRowContext(ctx, `SELECT addr FROM addresses WHERE sandbox_id=?`, sandboxID).Scan(&have)
		if err == nil {
			a, err := netip.ParseAddr(have)
			if err != nil {
				return fmt.Errorf("stored address %q of sandbox %s: %w", have, sandboxID, err)
			}
			out = a
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read address of sandbox %s: %w", sandboxID, err)
		}
		used := map[netip.Addr]bool{}
		for _, r := range reserved {
			used[r] = true
		}
		rows, err := tx.QueryContext(ctx, `SELECT addr FROM addresses`)
		if err != nil {
			return fmt.Errorf("list assigned addresses: %w", err)
		}
		for rows.Next() {
			var a string
			if err := rows.Scan(&a); err != nil {
				rows.Close()
				return err
			}
			if p, err := netip.ParseAddr(a); err == nil {
				used[p] = true
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// A sandbox from before agentd assigned addresses has no addresses
		// row, only the IP its guest reported (DHCP); while its VM may run,
		// that IP is held too (both sandboxes would otherwise be bound to it
		// and the host's neighbour entry would flip between them).
		rows, err = tx.QueryContext(ctx, `SELECT s.ip FROM sandboxes s JOIN issued i ON i.id = s.id
			WHERE s.ip <> '' AND i.vm_gone = 0 AND s.id NOT IN (SELECT sandbox_id FROM addresses)`)
		if err != nil {
			return fmt.Errorf("list addresses of sandboxes from before IPAM: %w", err)
		}
		for rows.Next() {
			var a string
			if err := rows.Scan(&a); err != nil {
				rows.Close()
				return err
			}
			if p, err := netip.ParseAddr(a); err == nil {
				used[p] = true
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		first := subnet.Addr().Next() // skip the network address
		last := broadcast(subnet)     // excluded: the broadcast address
		start := first
		var cursor string
		if err := tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key='ipam_next'`).Scan(&cursor); err == nil {
			if c, err := netip.ParseAddr(cursor); err == nil && subnet.Contains(c) && c != last && c.Compare(first) >= 0 {
				start = c
			}
		}
		a := start
		for {
			if !used[a] {
				out = a
				break
			}
			if a = a.Next(); a == last {
				a = first
			}
			if a == start {
				return fmt.Errorf("sandbox %s: %d addresses of %s in use: %w", sandboxID, len(used), subnet, ErrNoAddress)
			}
		}
		next := out.Next()
		if next == last {
			next = first
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO addresses(addr, sandbox_id, created_at) VALUES (?,?,?)`,
			out.String(), sandboxID, s.now().UnixMilli()); err != nil {
			return fmt.Errorf("assign %s to sandbox %s: %w", out, sandboxID, err)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO meta(key, value) VALUES ('ipam_next', ?)
			ON CONFLICT(key) DO UPDATE SET value=excluded.value`, next.String())
		return err
	})
	return out, err
}

// Address is the address assigned to sandboxID (ErrNotFound: none, or
// released because its VM is gone).
func (s *Store) Address(ctx context.Context, sandboxID string) (netip.Addr, error) {
	var a string
	err := s.db.QueryRowContext(ctx, `SELECT addr FROM addresses WHERE sandbox_id=?`, sandboxID).Scan(&a)
	if errors.Is(err, sql.ErrNoRows) {
		return netip.Addr{}, ErrNotFound
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read address of sandbox %s: %w", sandboxID, err)
	}
	return netip.ParseAddr(a)
}

// Addresses lists every assigned address by sandbox id.
func (s *Store) Addresses(ctx context.Context) (map[string]netip.Addr, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT sandbox_id, addr FROM addresses`)
	if err != nil {
		return nil, fmt.Errorf("list assigned addresses: %w", err)
	}
	defer rows.Close()
	out := map[string]netip.Addr{}
	for rows.Next() {
		var id, a string
		if err := rows.Scan(&id, &a); err != nil {
			return nil, err
		}
		if p, err := netip.ParseAddr(a); err == nil {
			out[id] = p
		}
	}
	return out, rows.Err()
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// AddressOwner is the sandbox assigned addr (ErrNotFound: none).
func (s *Store) AddressOwner(ctx context.Context, addr netip.Addr) (string, error) {
	var id string
	err := s.db.QueryRowContext(ctx, `SELECT sandbox_id FROM addresses WHERE addr=?`, addr.String()).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	return id, err
}
