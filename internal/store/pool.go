package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// ClaimPooled hands a ready warm-pool member of profile, built from profile
// version hash, to a new sandbox in one transaction: the oldest POOLED row
// takes the new sandbox's identity (apply sets its name, request, lease
// settings; the row's id, VMID and address stay, so the VM's ownership proof
// holds throughout) and moves to PROVISIONING, with the workspace claims and
// the event. Because the select and the compare-and-set share the
// transaction, two creates never take the same VM. ErrNotFound: no member is
// ready (the caller creates cold); ErrConflict: a live sandbox has the name;
// ErrWorkspaceBusy as for CreateSandbox.
func (s *Store) ClaimPooled(ctx context.Context, profile, hash string, apply func(*Sandbox), ev Event, claim ...Claim) (*Sandbox, error) {
	var out *Sandbox
	now := s.now().UTC().Truncate(time.Millisecond)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		sb, err := scanSandbox(tx.QueryRowContext(ctx, `SELECT `+sandboxCols+` FROM sandboxes
			WHERE state='POOLED' AND profile=? AND name=id AND request LIKE ? ORDER BY updated_at, id LIMIT 1`,
			profile, `%"profile_hash":"`+hash+`"%`))
		if err != nil {
			return err
		}
		apply(sb)
		if err := teamExists(ctx, tx, sb.Team); err != nil {
			return err
		}
		// The claimer's sandbox starts fresh: nothing recorded on the member
		// (a lease, activity) is its own.
		sb.State, sb.Error, sb.LeaseExpiresAt, sb.LastUsedAt = api.StateProvisioning, "", nil, nil
		tags, _ := json.Marshal(sb.Tags)
		res, err := tx.ExecContext(ctx, `UPDATE sandboxes SET name=?, team=?, request=?, state=?, step=?, keepalive=?, ttl_seconds=?,
			tags=?, workspace=?, error='', lease_expires_at=NULL, last_used_at=NULL, created_at=?, updated_at=? WHERE id=? AND state='POOLED'`,
			sb.Name, sb.Team, sb.Request, string(sb.State), sb.Step, boolInt(sb.Keepalive), sb.TTLSeconds, string(tags), sb.Workspace,
			now.UnixMilli(), now.UnixMilli(), sb.ID)
		if isUnique(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("claim pooled sandbox %s: %w", sb.ID, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrStale
		}
		for _, c := range claim {
			if err := claimWorkspace(ctx, tx, sb.ID, c, now); err != nil {
				return err
			}
		}
		// The member's history is the claimer's now (the sandbox keeps the
		// member's id): left in the pool's team it would be out of the
		// claimer's sight and in another team's.
		if _, err := tx.ExecContext(ctx, `UPDATE events SET team=? WHERE sandbox_id=?`, sb.Team, sb.ID); err != nil {
			return fmt.Errorf("claim pooled sandbox %s: events: %w", sb.ID, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO meta(key, value) VALUES (?, '1')
			ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1`, poolClaimsKey(profile)); err != nil {
			return err
		}
		sb.CreatedAt, sb.UpdatedAt = now, now
		out = sb
		return s.insertEvent(ctx, tx, sb, api.StatePooled, sb.State, ev)
	})
	if err != nil {
		return nil, err
	}
	s.changed(out.ID)
	return out, nil
}

func poolClaimsKey(profile string) string   { return "pool_claims:" + profile }
func poolOverrideKey(profile string) string { return "pool_override:" + profile }

// PoolClaims is how many creates the pool of profile has served.
func (s *Store) PoolClaims(ctx context.Context, profile string) (int64, error) {
	v, ok, err := s.metaValue(ctx, poolClaimsKey(profile))
	if err != nil {
		return 0, fmt.Errorf("read pool claims of %s: %w", profile, err)
	}
	if !ok {
		return 0, nil
	}
	return strconv.ParseInt(v, 10, 64)
}

// PoolSize is a runtime override of a profile's pool.
type PoolSize struct {
	MinReady int `json:"min_ready"`
	Max      int `json:"max"`
}

// PoolOverride returns the override of profile's pool (nil when none).
func (s *Store) PoolOverride(ctx context.Context, profile string) (*PoolSize, error) {
	v, ok, err := s.metaValue(ctx, poolOverrideKey(profile))
	if err != nil {
		return nil, fmt.Errorf("read pool override of %s: %w", profile, err)
	}
	if !ok {
		return nil, nil
	}
	var p PoolSize
	if err := json.Unmarshal([]byte(v), &p); err != nil {
		return nil, fmt.Errorf("pool override of %s: %w", profile, err)
	}
	return &p, nil
}

// SetPoolOverride stores (or, with nil, clears) the override of profile's
// pool. It lives in the state database, so it survives restarts and a
// reload of the profiles.
func (s *Store) SetPoolOverride(ctx context.Context, profile string, p *PoolSize) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if p == nil {
			_, err := tx.ExecContext(ctx, `DELETE FROM meta WHERE key=?`, poolOverrideKey(profile))
			return err
		}
		b, _ := json.Marshal(p)
		_, err := tx.ExecContext(ctx, `INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value`,
			poolOverrideKey(profile), string(b))
		return err
	})
}

// metaValue reads one key of the meta table; ok is false when it is unset.
func (s *Store) metaValue(ctx context.Context, key string) (v string, ok bool, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key=?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	return v, err == nil, err
}
