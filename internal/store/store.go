// Package store is agentd's state: one SQLite file (WAL) with numbered
// migrations, compare-and-set state transitions and an event log written in the
// same transaction as the change it records.
package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
)

// Errors callers branch on.
var (
	ErrNotFound = errors.New("not found")
	// ErrConflict: a live sandbox already has this name or VMID.
	ErrConflict = errors.New("conflict")
	// ErrStale: the row is no longer in the state the caller expected.
	ErrStale = errors.New("state changed concurrently")
)

type migration struct {
	version int
	name    string
	sql     string
}

// migrations are append-only: never edit or reorder a released one.
var migrations = []migration{
	{1, "sandboxes and events", `
CREATE TABLE sandboxes (
	id               TEXT PRIMARY KEY,
	name             TEXT NOT NULL,
	profile          TEXT NOT NULL,
	state            TEXT NOT NULL,
	step             TEXT NOT NULL DEFAULT '',
	vmid             INTEGER,
	node             TEXT NOT NULL DEFAULT '',
	ip               TEXT NOT NULL DEFAULT '',
	workspace        TEXT NOT NULL DEFAULT '',
	keepalive        INTEGER NOT NULL DEFAULT 0,
	ttl_seconds      INTEGER NOT NULL DEFAULT 0,
	tags             TEXT NOT NULL DEFAULT '[]',
	error            TEXT NOT NULL DEFAULT '',
	request          TEXT NOT NULL DEFAULT '{}',
	lease_expires_at INTEGER,
	last_used_at     INTEGER,
	created_at       INTEGER NOT NULL,
	updated_at       INTEGER NOT NULL
);
CREATE UNIQUE INDEX sandboxes_live_name ON sandboxes(name) WHERE state <> 'DESTROYED';
CREATE UNIQUE INDEX sandboxes_live_vmid ON sandboxes(vmid) WHERE state <> 'DESTROYED' AND vmid IS NOT NULL;
CREATE INDEX sandboxes_state ON sandboxes(state, updated_at);
CREATE TABLE events (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
	ts           INTEGER NOT NULL,
	sandbox_id   TEXT NOT NULL DEFAULT '',
	sandbox_name TEXT NOT NULL DEFAULT '',
	kind         TEXT NOT NULL,
	message      TEXT NOT NULL,
	from_state   TEXT NOT NULL DEFAULT '',
	to_state     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_sandbox ON events(sandbox_id, id);
CREATE INDEX events_ts ON events(ts);
`},
	{2, "workspaces and sessions", `
CREATE TABLE workspaces (
	id               TEXT PRIMARY KEY,
	name             TEXT NOT NULL,
	state            TEXT NOT NULL,
	step             TEXT NOT NULL DEFAULT '',
	storage          TEXT NOT NULL,
	size_gb          INTEGER NOT NULL,
	holder_vmid      INTEGER,
	disk_key         TEXT NOT NULL DEFAULT 'scsi0',
	attached_sandbox TEXT,
	attach_key       TEXT NOT NULL DEFAULT '',
	reserved_by      TEXT,
	error            TEXT NOT NULL DEFAULT '',
	created_at       INTEGER NOT NULL,
	updated_at       INTEGER NOT NULL
);
CREATE UNIQUE INDEX workspaces_live_name ON workspaces(name) WHERE state <> 'DELETED';
CREATE UNIQUE INDEX workspaces_live_holder ON workspaces(holder_vmid) WHERE state <> 'DELETED' AND holder_vmid IS NOT NULL;
CREATE UNIQUE INDEX workspaces_one_per_sandbox ON workspaces(attached_sandbox) WHERE attached_sandbox IS NOT NULL;
CREATE TABLE sessions (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL,
	profile    TEXT NOT NULL,
	workspace  TEXT NOT NULL,
	sandbox_id TEXT,
	generation INTEGER NOT NULL DEFAULT 0,
	state      TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX sessions_live_name ON sessions(name) WHERE state <> 'DELETED';
ALTER TABLE events ADD COLUMN workspace TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN session TEXT NOT NULL DEFAULT '';
`},
	{3, "bootstrap tokens, artifacts and jobs", `
CREATE TABLE tokens (
	hash       TEXT PRIMARY KEY,
	kind       TEXT NOT NULL,
	sandbox_id TEXT NOT NULL,
	job_id     TEXT NOT NULL DEFAULT '',
	expires_at INTEGER NOT NULL,
	spent_at   INTEGER,
	created_at INTEGER NOT NULL
);
CREATE INDEX tokens_sandbox ON tokens(sandbox_id, kind);
CREATE TABLE artifacts (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	sandbox_id TEXT NOT NULL,
	job_id     TEXT NOT NULL DEFAULT '',
	name       TEXT NOT NULL,
	size       INTEGER NOT NULL,
	sha256     TEXT NOT NULL,
	path       TEXT NOT NULL,
	created_at INTEGER NOT NULL
);
CREATE INDEX artifacts_sandbox ON artifacts(sandbox_id);
CREATE INDEX artifacts_job ON artifacts(job_id);
CREATE TABLE jobs (
	id         TEXT PRIMARY KEY,
	sandbox_id TEXT NOT NULL DEFAULT '',
	profile    TEXT NOT NULL,
	repo       TEXT NOT NULL DEFAULT '',
	ref        TEXT NOT NULL DEFAULT '',
	task       TEXT NOT NULL,
	status     TEXT NOT NULL,
	exit_code  INTEGER,
	error      TEXT NOT NULL DEFAULT '',
	keepalive  INTEGER NOT NULL DEFAULT 0,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
);
CREATE INDEX jobs_sandbox ON jobs(sandbox_id);
CREATE INDEX jobs_status ON jobs(status);
ALTER TABLE events ADD COLUMN job TEXT NOT NULL DEFAULT '';
`},
	{4, "instance id and issued ids", `
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta(key, value) VALUES ('instance_id', 'ai-' || lower(hex(randomblob(8))));
CREATE TABLE issued (
	id         TEXT PRIMARY KEY,
	kind       TEXT NOT NULL,
	vmid       INTEGER,
	vm_gone    INTEGER NOT NULL DEFAULT 0,
	created_at INTEGER NOT NULL
);
CREATE INDEX issued_vmid ON issued(vmid) WHERE vmid IS NOT NULL AND vm_gone = 0;
INSERT INTO issued(id, kind, vmid, vm_gone, created_at)
	SELECT id, 'sandbox', vmid, state = 'DESTROYED', created_at FROM sandboxes;
INSERT INTO issued(id, kind, vmid, vm_gone, created_at)
	SELECT id, 'workspace', holder_vmid, state = 'DELETED', created_at FROM workspaces;
CREATE TRIGGER sandboxes_issue AFTER INSERT ON sandboxes BEGIN
	INSERT INTO issued(id, kind, vmid, created_at) VALUES (NEW.id, 'sandbox', NEW.vmid, NEW.created_at);
END;
CREATE TRIGGER sandboxes_issue_vmid AFTER UPDATE OF vmid ON sandboxes
	WHEN NEW.vmid IS NOT NULL AND NEW.vmid IS NOT OLD.vmid BEGIN
	UPDATE issued SET vmid = NEW.vmid, vm_gone = 0 WHERE id = NEW.id;
END;
CREATE TRIGGER workspaces_issue AFTER INSERT ON workspaces BEGIN
	INSERT INTO issued(id, kind, vmid, created_at) VALUES (NEW.id, 'workspace', NEW.holder_vmid, NEW.created_at);
END;
CREATE TRIGGER workspaces_issue_vmid AFTER UPDATE OF holder_vmid ON workspaces
	WHEN NEW.holder_vmid IS NOT NULL AND NEW.holder_vmid IS NOT OLD.holder_vmid BEGIN
	UPDATE issued SET vmid = NEW.holder_vmid, vm_gone = 0 WHERE id = NEW.id;
END;
`},
	{5, "sessions forget destroyed sandboxes", `
UPDATE sessions SET sandbox_id = NULL WHERE sandbox_id IN (SELECT id FROM sandboxes WHERE state = 'DESTROYED');
CREATE TRIGGER sandboxes_destroyed_unlink AFTER UPDATE OF state ON sandboxes WHEN NEW.state = 'DESTROYED' BEGIN
	UPDATE sessions SET sandbox_id = NULL WHERE sandbox_id = NEW.id;
END;
`},
	{6, "sandbox addresses and token binding", `
CREATE TABLE addresses (
	addr       TEXT PRIMARY KEY,
	sandbox_id TEXT NOT NULL UNIQUE,
	created_at INTEGER NOT NULL
);
CREATE TRIGGER addresses_release AFTER UPDATE OF vm_gone ON issued WHEN NEW.vm_gone = 1 BEGIN
	DELETE FROM addresses WHERE sandbox_id = NEW.id;
END;
ALTER TABLE tokens ADD COLUMN bound_ip TEXT NOT NULL DEFAULT '';
`},
	{7, "hibernated sandboxes remember when they were paused", `
ALTER TABLE sandboxes ADD COLUMN paused_at INTEGER;
`},
	{8, "exposed ports", `
CREATE TABLE ports (
	sandbox_id TEXT NOT NULL,
	port       INTEGER NOT NULL,
	host_port  INTEGER NOT NULL UNIQUE,
	addr       TEXT NOT NULL,
	sources    TEXT NOT NULL,
	public     INTEGER NOT NULL DEFAULT 0,
	created_at INTEGER NOT NULL,
	expires_at INTEGER,
	PRIMARY KEY (sandbox_id, port)
);
`},
	{9, "pinned SSH host keys", `
CREATE TABLE host_keys (
	sandbox_id  TEXT PRIMARY KEY,
	key         TEXT NOT NULL,
	fingerprint TEXT NOT NULL,
	pinned_at   INTEGER NOT NULL
);
`},
	{10, "sandboxes remember their cores and memory (0: not read yet)", `
ALTER TABLE sandboxes ADD COLUMN cores INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN memory_mb INTEGER NOT NULL DEFAULT 0;
`},
	{11, "teams, team tokens, and a team on every object", `
CREATE TABLE teams (
	name               TEXT PRIMARY KEY,
	description        TEXT NOT NULL DEFAULT '',
	max_sandboxes      INTEGER NOT NULL DEFAULT 0,
	max_cores          INTEGER NOT NULL DEFAULT 0,
	max_memory_mb      INTEGER NOT NULL DEFAULT 0,
	max_workspace_gb   INTEGER NOT NULL DEFAULT 0,
	max_ttl_seconds    INTEGER NOT NULL DEFAULT 0,
	max_artifact_bytes INTEGER NOT NULL DEFAULT 0,
	created_at         INTEGER NOT NULL,
	updated_at         INTEGER NOT NULL
);
INSERT INTO teams(name, created_at, updated_at) VALUES ('default', CAST(strftime('%s','now') AS INTEGER) * 1000, CAST(strftime('%s','now') AS INTEGER) * 1000);
CREATE TABLE api_tokens (
	id           TEXT PRIMARY KEY,
	name         TEXT NOT NULL,
	team         TEXT NOT NULL DEFAULT '',
	role         TEXT NOT NULL,
	hash         TEXT NOT NULL UNIQUE,
	expires_at   INTEGER,
	revoked_at   INTEGER,
	last_used_at INTEGER,
	created_by   TEXT NOT NULL DEFAULT '',
	created_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens(team, name) WHERE revoked_at IS NULL;
ALTER TABLE sandboxes ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
ALTER TABLE workspaces ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
ALTER TABLE sessions ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
ALTER TABLE jobs ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
ALTER TABLE events ADD COLUMN team TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN actor TEXT NOT NULL DEFAULT '';
UPDATE events SET team = 'default' WHERE sandbox_id <> '' OR workspace <> '' OR session <> '' OR job <> '';
DROP INDEX sandboxes_live_name;
CREATE UNIQUE INDEX sandboxes_live_name ON sandboxes(team, name) WHERE state <> 'DESTROYED';
DROP INDEX workspaces_live_name;
CREATE UNIQUE INDEX workspaces_live_name ON workspaces(team, name) WHERE state <> 'DELETED';
DROP INDEX sessions_live_name;
CREATE UNIQUE INDEX sessions_live_name ON sessions(team, name) WHERE state <> 'DELETED';
CREATE INDEX events_team ON events(team, id);
`},
	{12, "workspaces remember their holder's node ('': the agent's own node)", `
ALTER TABLE workspaces ADD COLUMN node TEXT NOT NULL DEFAULT '';
`},
	{13, "node-agent tokens name their node", `
ALTER TABLE api_tokens ADD COLUMN node TEXT NOT NULL DEFAULT '';
`},
}

// SchemaVersion is the newest schema this binary knows.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

// Store is the database.
type Store struct {
	db    *sql.DB
	now   func() time.Time
	watch watchers
}

// Open opens (creating if needed) the database at path and migrates it.
func Open(ctx context.Context, path string, now func() time.Time) (*Store, error) {
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	// SQLite creates the -wal and -shm files with the mode of the database
	// file, and the database file itself with 0644 less the umask: create it
	// 0600 first (and repair files an older agentd left readable) so that no
	// umask exposes the state, which holds token hashes and the job history.
	if err := ensureMode(path, true); err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	for _, side := range []string{path + "-wal", path + "-shm"} {
		if err := ensureMode(side, false); err != nil {
			return nil, fmt.Errorf("open state: %w", err)
		}
	}
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	// One connection: SQLite has one writer anyway, and it keeps every
	// transaction serial without SQLITE_BUSY retries.
	db.SetMaxOpenConns(1)
	s := &Store{db: db, now: now}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate %s: %w", path, err)
	}
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		if err := ensureMode(f, false); err != nil {
			db.Close()
			return nil, fmt.Errorf("open state: %w", err)
		}
	}
	return s, nil
}

// ensureMode makes file 0600, creating it (empty) when create is set; a
// missing file is not an error otherwise.
func ensureMode(file string, create bool) error {
	flags := os.O_RDONLY
	if create {
		flags = os.O_RDWR | os.O_CREATE
	}
	f, err := os.OpenFile(file, flags, 0o600)
	if errors.Is(err, os.ErrNotExist) && !create {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	// Chmod, not the open mode: the umask applies to that one.
	return f.Chmod(0o600)
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// DB exposes the handle for backups and tests.
func (s *Store) DB() *sql.DB { return s.db }

func (s *Store) migrate(ctx context.Context) error { return s.apply(ctx, migrations) }

// apply runs the migrations of list the database has not had yet (a prefix
// of migrations: tests stop at an older schema to test the next one).
func (s *Store) apply(ctx context.Context, list []migration) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`); err != nil {
		return err
	}
	var cur int
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
		return err
	}
	if latest := migrations[len(migrations)-1].version; cur > latest {
		return fmt.Errorf("database schema version %d is newer than this agentd knows (%d): refusing to downgrade", cur, latest)
	}
	for _, m := range list {
		if m.version <= cur {
			continue
		}
		err := s.tx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)`,
				m.version, m.name, s.now().UnixMilli())
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Version returns the applied schema version.
func (s *Store) Version(ctx context.Context) (int, error) {
	var v int
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// Sandbox is a sandbox row: the API view plus what only agentd needs.
type Sandbox struct {
	api.Sandbox
	// Request is the create request as received, for idempotent retries.
	Request string
}

const sandboxCols = `id, name, profile, state, step, vmid, node, ip, workspace, keepalive, ttl_seconds, tags,
	error, request, lease_expires_at, last_used_at, created_at, updated_at, paused_at, cores, memory_mb, team`

func ms(t *time.Time) any {
	if t == nil || t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

func fromMS(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := time.UnixMilli(v.Int64).UTC()
	return &t
}

type scanner interface{ Scan(...any) error }

func scanSandbox(r scanner) (*Sandbox, error) {
	var sb Sandbox
	var vmid, lease, used, paused sql.NullInt64
	var created, updated int64
	var tags string
	var keep int
	err := r.Scan(&sb.ID, &sb.Name, &sb.Profile, &sb.State, &sb.Step, &vmid, &sb.Node, &sb.IP, &sb.Workspace,
		&keep, &sb.TTLSeconds, &tags, &sb.Error, &sb.Request, &lease, &used, &created, &updated, &paused, &sb.Cores, &sb.MemoryMB, &sb.Team)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	sb.VMID = int(vmid.Int64)
	sb.Keepalive = keep != 0
	if err := json.Unmarshal([]byte(tags), &sb.Tags); err != nil {
		return nil, fmt.Errorf("sandbox %s: tags: %w", sb.ID, err)
	}
	if sb.Tags == nil {
		sb.Tags = []string{}
	}
	sb.LeaseExpiresAt, sb.LastUsedAt, sb.PausedAt = fromMS(lease), fromMS(used), fromMS(paused)
	sb.CreatedAt, sb.UpdatedAt = time.UnixMilli(created).UTC(), time.UnixMilli(updated).UTC()
	return &sb, nil
}

func isUnique(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// Event is an event to record with a change.
type Event struct {
	Kind    string
	Message string
}

func (s *Store) insertEvent(ctx context.Context, tx *sql.Tx, sb *Sandbox, from, to api.State, ev Event) error {
	r := eventRow{from: from, to: to}
	if sb != nil {
		r.sandboxID, r.sandboxName, r.team = sb.ID, sb.Name, sb.Team
	}
	return s.writeEvent(ctx, tx, r, ev)
}

// eventRow is what an event is about.
type eventRow struct {
	sandboxID, sandboxName, workspace, session, job string
	team                                            string // the object's
	from, to                                        api.State
}

// writeEvent is the one INSERT of an event: every event names its team and
// who caused it (auth.Actor of ctx).
func (s *Store) writeEvent(ctx context.Context, tx *sql.Tx, r eventRow, ev Event) error {
	if ev.Kind == "" {
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO events(ts, sandbox_id, sandbox_name, workspace, session, job, kind, message,
		from_state, to_state, team, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, s.now().UnixMilli(), r.sandboxID,
		r.sandboxName, r.workspace, r.session, r.job, ev.Kind, ev.Message, string(r.from), string(r.to), r.team, auth.Actor(ctx))
	return err
}

// ErrWorkspaceBusy: the workspace is attached elsewhere, reserved by another
// session, or not ready.
var ErrWorkspaceBusy = errors.New("workspace busy")

// Claim attaches a workspace to the sandbox being created, in the same
// transaction as the insert.
type Claim struct {
	WorkspaceID string
	SessionID   string
	Key         string
}

// CreateSandbox inserts a new row and its creation event (and, with claim, marks
// the workspace attached to it). ErrConflict means a live sandbox already has
// the name; ErrWorkspaceBusy that the workspace cannot be claimed.
func (s *Store) CreateSandbox(ctx context.Context, sb *Sandbox, ev Event, claim ...Claim) error {
	now := s.now().UTC().Truncate(time.Millisecond)
	sb.CreatedAt, sb.UpdatedAt = now, now
	if sb.Tags == nil {
		sb.Tags = []string{}
	}
	tags, _ := json.Marshal(sb.Tags)
	defer s.changed(sb.ID)
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := teamExists(ctx, tx, sb.Team); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO sandboxes(`+sandboxCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			sb.ID, sb.Name, sb.Profile, string(sb.State), sb.Step, nullInt(sb.VMID), sb.Node, sb.IP, sb.Workspace,
			boolInt(sb.Keepalive), sb.TTLSeconds, string(tags), sb.Error, sb.Request, ms(sb.LeaseExpiresAt),
			ms(sb.LastUsedAt), now.UnixMilli(), now.UnixMilli(), ms(sb.PausedAt), sb.Cores, sb.MemoryMB, sb.Team)
		if isUnique(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("insert sandbox %s: %w", sb.Name, err)
		}
		for _, c := range claim {
			if err := claimWorkspace(ctx, tx, sb.ID, c, now); err != nil {
				return err
			}
		}
		return s.insertEvent(ctx, tx, sb, "", sb.State, ev)
	})
}

// claimWorkspace marks the workspace attached to sandbox id inside tx. A
// workspace with a move journaled is not claimed: its holder may be
// mid-migration, on either node (workspace.Moving; the step reads
// "move:<node>:<storage>").
func claimWorkspace(ctx context.Context, tx *sql.Tx, id string, c Claim, now time.Time) error {
	res, err := tx.ExecContext(ctx, `UPDATE workspaces SET attached_sandbox=?, attach_key=?, updated_at=?
		WHERE id=? AND state='READY' AND attached_sandbox IS NULL AND (reserved_by IS NULL OR reserved_by=?)
		AND step NOT LIKE 'move:%'
		AND team = (SELECT team FROM sandboxes WHERE id=?)`,
		id, c.Key, now.UnixMilli(), c.WorkspaceID, c.SessionID, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrWorkspaceBusy
	}
	return nil
}

func nullInt(v int) any {
	if v == 0 {
		return nil
	}
	return v
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Save writes every mutable field of sb if the row is still in state expect
// (compare-and-set), and records ev in the same transaction. A state change
// must be allowed by api.CanTransition. On success sb.UpdatedAt is refreshed.
func (s *Store) Save(ctx context.Context, sb *Sandbox, expect api.State, ev Event) error {
	if sb.State != expect && !api.CanTransition(expect, sb.State) {
		return fmt.Errorf("sandbox %s: transition %s → %s is not allowed", sb.Name, expect, sb.State)
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	tags, _ := json.Marshal(sb.Tags)
	defer s.changed(sb.ID)
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE sandboxes SET state=?, step=?, vmid=?, node=?, ip=?, workspace=?,
			keepalive=?, ttl_seconds=?, tags=?, error=?, lease_expires_at=?, last_used_at=?, updated_at=?, paused_at=?,
			cores=?, memory_mb=?
			WHERE id=? AND state=?`,
			string(sb.State), sb.Step, nullInt(sb.VMID), sb.Node, sb.IP, sb.Workspace, boolInt(sb.Keepalive),
			sb.TTLSeconds, string(tags), sb.Error, ms(sb.LeaseExpiresAt), ms(sb.LastUsedAt), now.UnixMilli(),
			ms(sb.PausedAt), sb.Cores, sb.MemoryMB, sb.ID, string(expect))
		if isUnique(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("update sandbox %s: %w", sb.Name, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrStale
		}
		from := api.State("")
		if expect != sb.State {
			from = expect
		}
		to := api.State("")
		if from != "" {
			to = sb.State
		}
		if err := s.insertEvent(ctx, tx, sb, from, to, ev); err != nil {
			return err
		}
		sb.UpdatedAt = now
		return nil
	})
}

// Sandbox returns a row by id.
func (s *Store) Sandbox(ctx context.Context, id string) (*Sandbox, error) {
	q, args := scoped(ctx, `SELECT `+sandboxCols+` FROM sandboxes WHERE id=?`, id)
	return scanSandbox(s.db.QueryRowContext(ctx, q, args...))
}

// Filter selects sandboxes; empty fields match everything.
type Filter struct {
	States  []api.State
	Profile string
	Name    string
	Team    string
	// IncludeDestroyed lists DESTROYED rows too (when no state is given).
	IncludeDestroyed bool
}

// Sandboxes lists rows, newest first.
func (s *Store) Sandboxes(ctx context.Context, f Filter) ([]*Sandbox, error) {
	q := `SELECT ` + sandboxCols + ` FROM sandboxes WHERE 1=1`
	var args []any
	if len(f.States) > 0 {
		q += ` AND state IN (?` + strings.Repeat(",?", len(f.States)-1) + `)`
		for _, st := range f.States {
			args = append(args, string(st))
		}
	} else if !f.IncludeDestroyed {
		q += ` AND state <> 'DESTROYED'`
	}
	if f.Profile != "" {
		q += ` AND profile = ?`
		args = append(args, f.Profile)
	}
	if f.Name != "" {
		q += ` AND name = ?`
		args = append(args, f.Name)
	}
	if f.Team != "" {
		q += ` AND team = ?`
		args = append(args, f.Team)
	}
	q, args = scoped(ctx, q, args...)
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY created_at DESC, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	defer rows.Close()
	var out []*Sandbox
	for rows.Next() {
		sb, err := scanSandbox(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, sb)
	}
	return out, rows.Err()
}

// Counts returns the number of sandboxes per state.
func (s *Store) Counts(ctx context.Context) (map[api.State]int, error) {
	q, args := scoped(ctx, `SELECT state, COUNT(*) FROM sandboxes WHERE 1=1`)
	rows, err := s.db.QueryContext(ctx, q+` GROUP BY state`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[api.State]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[api.State(st)] = n
	}
	return out, rows.Err()
}

// AddEvent records an event not tied to a state change (operator actions,
// warnings). sb may be nil for host-wide events.
func (s *Store) AddEvent(ctx context.Context, sb *Sandbox, ev Event) error {
	return s.tx(ctx, func(tx *sql.Tx) error { return s.insertEvent(ctx, tx, sb, "", "", ev) })
}

// EventFilter selects events; empty fields match everything.
type EventFilter struct {
	Team      string
	SandboxID string
	Workspace string // name
	Session   string // name
}

// Prune deletes events older than eventAge and DESTROYED sandboxes (with their
// events) whose last change is older than destroyedAge.
func (s *Store) Prune(ctx context.Context, eventAge, destroyedAge time.Duration) (events, sandboxes int64, err error) {
	now := s.now()
	err = s.tx(ctx, func(tx *sql.Tx) error {
		cut := now.Add(-destroyedAge).UnixMilli()
		if _, err := tx.ExecContext(ctx, `DELETE FROM events WHERE sandbox_id IN
			(SELECT id FROM sandboxes WHERE state='DESTROYED' AND updated_at < ?)`, cut); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM sandboxes WHERE state='DESTROYED' AND updated_at < ?`, cut)
		if err != nil {
			return err
		}
		sandboxes, _ = res.RowsAffected()
		res, err = tx.ExecContext(ctx, `DELETE FROM events WHERE ts < ?`, now.Add(-eventAge).UnixMilli())
		if err != nil {
			return err
		}
		events, _ = res.RowsAffected()
		return nil
	})
	return events, sandboxes, err
}
