package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
)

// Token kinds.
const (
	TokenBootstrap = "bootstrap"
	TokenArtifact  = "artifact"
)

// Token is a stored token: only its hash is kept.
type Token struct {
	Hash      string
	Kind      string
	SandboxID string
	JobID     string
	ExpiresAt time.Time
	SpentAt   *time.Time
	// BoundIP is the only source address the token is accepted from (the
	// sandbox's assigned address, fixed at issuance; "" binds nothing).
	BoundIP string
}

// CreateToken records a token hash.
func (s *Store) CreateToken(ctx context.Context, t *Token) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO tokens(hash, kind, sandbox_id, job_id, expires_at, created_at, bound_ip) VALUES (?,?,?,?,?,?,?)`,
		t.Hash, t.Kind, t.SandboxID, t.JobID, t.ExpiresAt.UnixMilli(), s.now().UnixMilli(), t.BoundIP)
	return err
}

// LookupToken finds a token by hash and kind.
func (s *Store) LookupToken(ctx context.Context, hash, kind string) (*Token, error) {
	var t Token
	var exp int64
	var spent sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT hash, kind, sandbox_id, job_id, expires_at, spent_at, bound_ip FROM tokens WHERE hash=? AND kind=?`, hash, kind).
		Scan(&t.Hash, &t.Kind, &t.SandboxID, &t.JobID, &exp, &spent, &t.BoundIP)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	t.ExpiresAt, t.SpentAt = time.UnixMilli(exp).UTC(), fromMS(spent)
	return &t, nil
}

// SpendToken marks a token used, once (compare-and-set on spent_at).
func (s *Store) SpendToken(ctx context.Context, hash string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE tokens SET spent_at=? WHERE hash=? AND spent_at IS NULL`, s.now().UnixMilli(), hash)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrStale
	}
	return nil
}

// DeleteTokens removes a sandbox's tokens of a kind (all kinds when "").
func (s *Store) DeleteTokens(ctx context.Context, sandboxID, kind string) error {
	q, args := `DELETE FROM tokens WHERE sandbox_id=?`, []any{sandboxID}
	if kind != "" {
		q += ` AND kind=?`
		args = append(args, kind)
	}
	_, err := s.db.ExecContext(ctx, q, args...)
	return err
}

// Artifact is a received file.
type Artifact struct {
	ID        int64     `json:"id"`
	SandboxID string    `json:"sandbox_id"`
	JobID     string    `json:"job_id,omitempty"`
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	Path      string    `json:"-"`
	CreatedAt time.Time `json:"created_at"`
}

// AddArtifact records an artifact and its event in one transaction;
// ErrConflict means its owner already has an artifact of that name.
func (s *Store) AddArtifact(ctx context.Context, a *Artifact, ev Event) error {
	now := s.now().UTC().Truncate(time.Millisecond)
	a.CreatedAt = now
	return s.tx(ctx, func(tx *sql.Tx) error {
		// Names are unique per owner (the job, else the sandbox): a second
		// row would point at the first one's file.
		q, args := `SELECT COUNT(*) FROM artifacts WHERE job_id=? AND name=?`, []any{a.JobID, a.Name}
		if a.JobID == "" {
			q, args = `SELECT COUNT(*) FROM artifacts WHERE sandbox_id=? AND job_id='' AND name=?`, []any{a.SandboxID, a.Name}
		}
		var n int
		if err := tx.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return ErrConflict
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO artifacts(sandbox_id, job_id, name, size, sha256, path, created_at) VALUES (?,?,?,?,?,?,?)`,
			a.SandboxID, a.JobID, a.Name, a.Size, a.SHA256, a.Path, now.UnixMilli())
		if err != nil {
			return err
		}
		a.ID, _ = res.LastInsertId()
		var team string
		if err := tx.QueryRowContext(ctx, `SELECT team FROM sandboxes WHERE id=?`, a.SandboxID).Scan(&team); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return s.writeEvent(ctx, tx, eventRow{sandboxID: a.SandboxID, job: a.JobID, team: team}, ev)
	})
}

// Artifacts lists artifacts of a sandbox or a job (one of them set).
func (s *Store) Artifacts(ctx context.Context, sandboxID, jobID string) ([]*Artifact, error) {
	q, arg := `SELECT id, sandbox_id, job_id, name, size, sha256, path, created_at FROM artifacts WHERE sandbox_id=? ORDER BY id`, sandboxID
	if jobID != "" {
		q, arg = `SELECT id, sandbox_id, job_id, name, size, sha256, path, created_at FROM artifacts WHERE job_id=? ORDER BY id`, jobID
	}
	rows, err := s.db.QueryContext(ctx, q, arg)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*Artifact{}
	for rows.Next() {
		var a Artifact
		var ts int64
		if err := rows.Scan(&a.ID, &a.SandboxID, &a.JobID, &a.Name, &a.Size, &a.SHA256, &a.Path, &ts); err != nil {
			return nil, err
		}
		a.CreatedAt = time.UnixMilli(ts).UTC()
		out = append(out, &a)
	}
	return out, rows.Err()
}

// ArtifactByID returns one artifact.
func (s *Store) ArtifactByID(ctx context.Context, id int64) (*Artifact, error) {
	var a Artifact
	var ts int64
	q, args := `SELECT id, sandbox_id, job_id, name, size, sha256, path, created_at FROM artifacts WHERE id=?`, []any{id}
	if team := auth.Scope(ctx); team != "" { // artifacts are their sandbox's team's
		q, args = q+` AND sandbox_id IN (SELECT id FROM sandboxes WHERE team = ?)`, append(args, team)
	}
	err := s.db.QueryRowContext(ctx, q, args...).
		Scan(&a.ID, &a.SandboxID, &a.JobID, &a.Name, &a.Size, &a.SHA256, &a.Path, &ts)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	a.CreatedAt = time.UnixMilli(ts).UTC()
	return &a, err
}

// OldArtifacts lists artifacts older than age (for retention).
func (s *Store) OldArtifacts(ctx context.Context, age time.Duration) ([]*Artifact, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, sandbox_id, job_id, name, size, sha256, path, created_at FROM artifacts WHERE created_at < ?`,
		s.now().Add(-age).UnixMilli())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Artifact
	for rows.Next() {
		var a Artifact
		var ts int64
		if err := rows.Scan(&a.ID, &a.SandboxID, &a.JobID, &a.Name, &a.Size, &a.SHA256, &a.Path, &ts); err != nil {
			return nil, err
		}
		out = append(out, &a)
	}
	return out, rows.Err()
}

// DeleteArtifact removes an artifact row.
func (s *Store) DeleteArtifact(ctx context.Context, id int64) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM artifacts WHERE id=?`, id)
	return err
}

// Job states.
const (
	JobQueued    = "QUEUED"
	JobRunning   = "RUNNING"
	JobCompleted = "COMPLETED"
	JobFailed    = "FAILED"
	JobTimeout   = "TIMEOUT"
)

// Job is a job row.
type Job struct {
	ID        string    `json:"id"`
	SandboxID string    `json:"sandbox_id,omitempty"`
	Profile   string    `json:"profile"`
	Repo      string    `json:"repo,omitempty"`
	Ref       string    `json:"ref,omitempty"`
	Task      string    `json:"task"`
	Status    string    `json:"status"`
	ExitCode  *int      `json:"exit_code,omitempty"`
	Error     string    `json:"error,omitempty"`
	Keepalive bool      `json:"keepalive"`
	Team      string    `json:"team"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// JobFinal reports whether a job status is terminal.
func JobFinal(status string) bool {
	return status == JobCompleted || status == JobFailed || status == JobTimeout
}

const jobCols = `id, sandbox_id, profile, repo, ref, task, status, exit_code, error, keepalive, created_at, updated_at, team`

func scanJob(r scanner) (*Job, error) {
	var j Job
	var code sql.NullInt64
	var keep int
	var c, u int64
	err := r.Scan(&j.ID, &j.SandboxID, &j.Profile, &j.Repo, &j.Ref, &j.Task, &j.Status, &code, &j.Error, &keep, &c, &u, &j.Team)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if code.Valid {
		n := int(code.Int64)
		j.ExitCode = &n
	}
	j.Keepalive = keep != 0
	j.CreatedAt, j.UpdatedAt = time.UnixMilli(c).UTC(), time.UnixMilli(u).UTC()
	return &j, nil
}

// CreateJob inserts a job.
func (s *Store) CreateJob(ctx context.Context, j *Job) error {
	now := s.now().UTC().Truncate(time.Millisecond)
	j.CreatedAt, j.UpdatedAt = now, now
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := teamExists(ctx, tx, j.Team); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO jobs(`+jobCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)`, j.ID, j.SandboxID, j.Profile, j.Repo, j.Ref,
			j.Task, j.Status, nil, j.Error, boolInt(j.Keepalive), now.UnixMilli(), now.UnixMilli(), j.Team)
		if err != nil {
			return fmt.Errorf("insert job: %w", err)
		}
		return s.writeEvent(ctx, tx, eventRow{job: j.ID, team: j.Team}, Event{Kind: "job.created", Message: "profile " + j.Profile})
	})
}

// SaveJob writes a job if its status is still expect (compare-and-set).
func (s *Store) SaveJob(ctx context.Context, j *Job, expect string, ev Event) error {
	now := s.now().UTC().Truncate(time.Millisecond)
	var code any
	if j.ExitCode != nil {
		code = *j.ExitCode
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE jobs SET sandbox_id=?, status=?, exit_code=?, error=?, updated_at=? WHERE id=? AND status=?`,
			j.SandboxID, j.Status, code, j.Error, now.UnixMilli(), j.ID, expect)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrStale
		}
		j.UpdatedAt = now
		return s.writeEvent(ctx, tx, eventRow{sandboxID: j.SandboxID, job: j.ID, team: j.Team}, ev)
	})
}

// Job returns a job by id.
func (s *Store) Job(ctx context.Context, id string) (*Job, error) {
	q, args := scoped(ctx, `SELECT `+jobCols+` FROM jobs WHERE id=?`, id)
	return scanJob(s.db.QueryRowContext(ctx, q, args...))
}

// JobOfSandbox returns the job a sandbox runs.
func (s *Store) JobOfSandbox(ctx context.Context, sandboxID string) (*Job, error) {
	return scanJob(s.db.QueryRowContext(ctx, `SELECT `+jobCols+` FROM jobs WHERE sandbox_id=? ORDER BY created_at DESC LIMIT 1`, sandboxID))
}

// Jobs lists jobs newest first (only unfinished when active).
func (s *Store) Jobs(ctx context.Context, active bool) ([]*Job, error) {
	q := `SELECT ` + jobCols + ` FROM jobs WHERE 1=1`
	if active {
		q += ` AND status IN ('QUEUED','RUNNING')`
	}
	q, args := scoped(ctx, q)
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY created_at DESC, id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*Job{}
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// ArtifactUsage returns the number and total size of the artifacts of a
// sandbox or of a job (one of them set).
func (s *Store) ArtifactUsage(ctx context.Context, sandboxID, jobID string) (count, bytes int64, err error) {
	q, arg := `SELECT COUNT(*), COALESCE(SUM(size), 0) FROM artifacts WHERE sandbox_id=?`, sandboxID
	if jobID != "" {
		q, arg = `SELECT COUNT(*), COALESCE(SUM(size), 0) FROM artifacts WHERE job_id=?`, jobID
	}
	err = s.db.QueryRowContext(ctx, q, arg).Scan(&count, &bytes)
	return count, bytes, err
}
