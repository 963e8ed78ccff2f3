package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
)

// ErrAmbiguous: a name looked up across teams matched objects of two teams.
var ErrAmbiguous = errors.New("ambiguous reference")

// ErrNoTeam: the team a new object names does not exist (it was deleted
// while the object was being created).
var ErrNoTeam = errors.New("team does not exist")

// teamExists checks, inside the transaction that inserts an object of team,
// that the team is still there: DeleteTeam's count of what a team owns and
// its delete share one transaction too, so a team is never deleted with an
// object created meanwhile. "" is no team's (warm-pool members).
func teamExists(ctx context.Context, tx *sql.Tx, team string) error {
	if team == "" {
		return nil
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM teams WHERE name=?`, team).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%w: %s", ErrNoTeam, team)
	}
	return nil
}

// scoped narrows a query (which must end in a WHERE condition) to the team
// scope of ctx: the one place a request's team reaches SQL, so a lookup
// cannot forget it.
func scoped(ctx context.Context, q string, args ...any) (string, []any) {
	if team := auth.Scope(ctx); team != "" {
		return q + ` AND team = ?`, append(args, team)
	}
	return q, args
}

const teamCols = `name, description, max_sandboxes, max_cores, max_memory_mb, max_workspace_gb, max_ttl_seconds,
	max_artifact_bytes, created_at, updated_at`

func scanTeam(r scanner) (*api.Team, error) {
	var t api.Team
	var c, u int64
	q := &t.Quota
	err := r.Scan(&t.Name, &t.Description, &q.Sandboxes, &q.Cores, &q.MemoryMB, &q.WorkspaceGB, &q.TTLSeconds, &q.ArtifactBytes, &c, &u)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	t.CreatedAt, t.UpdatedAt = time.UnixMilli(c).UTC(), time.UnixMilli(u).UTC()
	return &t, nil
}

// CreateTeam inserts a team; ErrConflict if the name is taken.
func (s *Store) CreateTeam(ctx context.Context, t *api.Team) error {
	now := s.now().UTC().Truncate(time.Millisecond)
	t.CreatedAt, t.UpdatedAt = now, now
	q := t.Quota
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO teams(`+teamCols+`) VALUES (?,?,?,?,?,?,?,?,?,?)`, t.Name, t.Description,
			q.Sandboxes, q.Cores, q.MemoryMB, q.WorkspaceGB, q.TTLSeconds, q.ArtifactBytes, now.UnixMilli(), now.UnixMilli())
		if isUnique(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("insert team %s: %w", t.Name, err)
		}
		return s.writeEvent(ctx, tx, eventRow{team: t.Name}, Event{Kind: "team.created", Message: "team " + t.Name + " created; quota " + q.String()})
	})
}

// UpdateTeam rewrites a team's description and quota.
func (s *Store) UpdateTeam(ctx context.Context, t *api.Team) error {
	now := s.now().UTC().Truncate(time.Millisecond)
	q := t.Quota
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE teams SET description=?, max_sandboxes=?, max_cores=?, max_memory_mb=?,
			max_workspace_gb=?, max_ttl_seconds=?, max_artifact_bytes=?, updated_at=? WHERE name=?`, t.Description,
			q.Sandboxes, q.Cores, q.MemoryMB, q.WorkspaceGB, q.TTLSeconds, q.ArtifactBytes, now.UnixMilli(), t.Name)
		if err != nil {
			return fmt.Errorf("update team %s: %w", t.Name, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrNotFound
		}
		t.UpdatedAt = now
		return s.writeEvent(ctx, tx, eventRow{team: t.Name}, Event{Kind: "team.updated", Message: "quota " + q.String()})
	})
}

// Team returns a team by name, within ctx's scope (a team token sees only
// its own).
func (s *Store) Team(ctx context.Context, name string) (*api.Team, error) {
	if sc := auth.Scope(ctx); sc != "" && sc != name {
		return nil, ErrNotFound
	}
	return scanTeam(s.db.QueryRowContext(ctx, `SELECT `+teamCols+` FROM teams WHERE name=?`, name))
}

// Teams lists the teams in ctx's scope by name.
func (s *Store) Teams(ctx context.Context) ([]*api.Team, error) {
	q, args := `SELECT `+teamCols+` FROM teams WHERE 1=1`, []any{}
	if sc := auth.Scope(ctx); sc != "" {
		q, args = q+` AND name = ?`, append(args, sc)
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY name`, args...)
	if err != nil {
		return nil, fmt.Errorf("list teams: %w", err)
	}
	defer rows.Close()
	var out []*api.Team
	for rows.Next() {
		t, err := scanTeam(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// ErrTeamInUse: the team still owns live objects or tokens.
var ErrTeamInUse = errors.New("team in use")

// DeleteTeam removes a team that owns nothing live: no sandbox, workspace
// or session, and no unrevoked token (deleting it must not orphan them).
func (s *Store) DeleteTeam(ctx context.Context, name string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var sbx, ws, ses, tok int
		if err := tx.QueryRowContext(ctx, `SELECT
			(SELECT COUNT(*) FROM sandboxes WHERE team=? AND state <> 'DESTROYED'),
			(SELECT COUNT(*) FROM workspaces WHERE team=? AND state <> 'DELETED'),
			(SELECT COUNT(*) FROM sessions WHERE team=? AND state <> 'DELETED'),
			(SELECT COUNT(*) FROM api_tokens WHERE team=? AND revoked_at IS NULL)`, name, name, name, name).Scan(&sbx, &ws, &ses, &tok); err != nil {
			return err
		}
		if sbx+ws+ses+tok > 0 {
			return fmt.Errorf("%w: team %s still has %d sandboxes, %d workspaces, %d sessions and %d tokens; destroy, delete or revoke them first",
				ErrTeamInUse, name, sbx, ws, ses, tok)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM teams WHERE name=?`, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrNotFound
		}
		// Rows name their team by name, so a team created again under it
		// would inherit this one's history (destroyed sandboxes and their
		// artifacts, events, revoked tokens). They go to a tombstone no
		// team can be called ('~' is not in a team name), kept for global
		// callers.
		tomb := TombstoneTeam(name, s.now())
		for _, table := range teamTables {
			if _, err := tx.ExecContext(ctx, `UPDATE `+table+` SET team=? WHERE team=?`, tomb, name); err != nil {
				return fmt.Errorf("relabel team %s's %s: %w", name, table, err)
			}
		}
		return s.writeEvent(ctx, tx, eventRow{team: tomb}, Event{Kind: "team.deleted",
			Message: "team " + name + " deleted; its history is kept as team " + tomb})
	})
}

// teamTables are the tables whose rows carry a team column (migration 11);
// artifacts, ports and the like belong to a sandbox and follow it.
var teamTables = []string{"sandboxes", "workspaces", "sessions", "jobs", "events", "api_tokens"}

// TombstoneTeam is the name a deleted team's remaining rows take.
func TombstoneTeam(name string, at time.Time) string {
	return fmt.Sprintf("%s~deleted-%d", name, at.UnixMilli())
}

// TeamUsage is what a team holds now, in the quota's units.
func (s *Store) TeamUsage(ctx context.Context, team string) (api.TeamQuota, error) {
	var u api.TeamQuota
	err := s.db.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM sandboxes WHERE team=? AND `+counted+`),
		(SELECT COALESCE(SUM(cores), 0) FROM sandboxes WHERE team=? AND `+counted+`),
		(SELECT COALESCE(SUM(memory_mb), 0) FROM sandboxes WHERE team=? AND `+counted+`),
		(SELECT COALESCE(SUM(size_gb), 0) FROM workspaces WHERE team=? AND state <> 'DELETED'),
		(SELECT COALESCE(SUM(a.size), 0) FROM artifacts a JOIN sandboxes b ON b.id = a.sandbox_id WHERE b.team=?)`,
		team, team, team, team, team).Scan(&u.Sandboxes, &u.Cores, &u.MemoryMB, &u.WorkspaceGB, &u.ArtifactBytes)
	if err != nil {
		return u, fmt.Errorf("usage of team %s: %w", team, err)
	}
	return u, nil
}

// APIToken is a stored API token: everything but its value, of which only
// the hash is kept.
type APIToken struct {
	api.Token
	Hash string
}

const apiTokenCols = `id, name, team, role, hash, expires_at, revoked_at, last_used_at, created_by, created_at, node`

func scanAPIToken(r scanner) (*APIToken, error) {
	var t APIToken
	var exp, rev, used sql.NullInt64
	var c int64
	err := r.Scan(&t.ID, &t.Name, &t.Team, &t.Role, &t.Hash, &exp, &rev, &used, &t.CreatedBy, &c, &t.Node)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	t.ExpiresAt, t.RevokedAt, t.LastUsedAt = fromMS(exp), fromMS(rev), fromMS(used)
	t.CreatedAt = time.UnixMilli(c).UTC()
	return &t, nil
}

// CreateAPIToken inserts a token; ErrConflict if its team already has a
// live token of that name. A team token needs its team to exist.
func (s *Store) CreateAPIToken(ctx context.Context, t *APIToken) error {
	now := s.now().UTC().Truncate(time.Millisecond)
	t.CreatedAt = now
	return s.tx(ctx, func(tx *sql.Tx) error {
		if t.Team != "" {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM teams WHERE name=?`, t.Team).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return ErrNotFound
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO api_tokens(`+apiTokenCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?)`, t.ID, t.Name, t.Team,
			string(t.Role), t.Hash, ms(t.ExpiresAt), nil, nil, t.CreatedBy, now.UnixMilli(), t.Node)
		if isUnique(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("insert token %s: %w", t.Name, err)
		}
		return s.writeEvent(ctx, tx, eventRow{team: t.Team}, Event{Kind: "token.created",
			Message: fmt.Sprintf("token %s (%s, role %s) created", t.Name, t.ID, t.Role)})
	})
}

// APITokenByHash finds the token a request presented (revoked and expired
// ones included: the caller says which it is).
func (s *Store) APITokenByHash(ctx context.Context, hash string) (*APIToken, error) {
	return scanAPIToken(s.db.QueryRowContext(ctx, `SELECT `+apiTokenCols+` FROM api_tokens WHERE hash=?`, hash))
}

// APITokens lists the tokens of ctx's scope (revoked ones too when all).
func (s *Store) APITokens(ctx context.Context, all bool) ([]*APIToken, error) {
	q, args := scoped(ctx, `SELECT `+apiTokenCols+` FROM api_tokens WHERE 1=1`)
	if !all {
		q += ` AND revoked_at IS NULL`
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY team, name, created_at`, args...)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	var out []*APIToken
	for rows.Next() {
		t, err := scanAPIToken(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// LookupAPIToken finds a live token of ctx's scope by id, or by name
// (within the team; across teams a name must be unique).
func (s *Store) LookupAPIToken(ctx context.Context, ref string) (*APIToken, error) {
	return first(ctx, s, apiTokenCols, "api_tokens", scanAPIToken,
		tier{true, `id = ? AND revoked_at IS NULL`, ref}, tier{true, `name = ? AND revoked_at IS NULL`, ref})
}

// RevokeAPIToken revokes a live token: the next request that presents it is
// refused.
func (s *Store) RevokeAPIToken(ctx context.Context, t *APIToken) error {
	now := s.now().UTC().Truncate(time.Millisecond)
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE api_tokens SET revoked_at=? WHERE id=? AND revoked_at IS NULL`, now.UnixMilli(), t.ID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrNotFound
		}
		t.RevokedAt = &now
		return s.writeEvent(ctx, tx, eventRow{team: t.Team}, Event{Kind: "token.revoked", Message: fmt.Sprintf("token %s (%s) revoked", t.Name, t.ID)})
	})
}

// RotateAPIToken gives a live token a new value (hash) and expiry: the old
// value stops working at once.
func (s *Store) RotateAPIToken(ctx context.Context, t *APIToken, hash string, expires *time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE api_tokens SET hash=?, expires_at=? WHERE id=? AND revoked_at IS NULL`, hash, ms(expires), t.ID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrNotFound
		}
		t.Hash, t.ExpiresAt = hash, expires
		return s.writeEvent(ctx, tx, eventRow{team: t.Team}, Event{Kind: "token.rotated", Message: fmt.Sprintf("token %s (%s) rotated", t.Name, t.ID)})
	})
}

// TouchAPIToken records a use, at most once a minute per token (a write per
// poll would cost more than it tells).
func (s *Store) TouchAPIToken(ctx context.Context, t *APIToken) {
	now := s.now()
	if t.LastUsedAt != nil && now.Sub(*t.LastUsedAt) < time.Minute {
		return
	}
	_, _ = s.db.ExecContext(ctx, `UPDATE api_tokens SET last_used_at=? WHERE id=?`, now.UnixMilli(), t.ID)
}

// Now is the store's clock (token expiry is judged by it).
func (s *Store) Now() time.Time { return s.now() }
