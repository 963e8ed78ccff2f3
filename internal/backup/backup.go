// Package backup takes consistent backups of agentd's state while it runs and
// restores them while it does not. The database is copied with SQLite's
// VACUUM INTO, which reads one snapshot even while agentd writes (copying the
// file, as the old system's FAQ advised, can tear a WAL database).
package backup

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite"

	"github.com/agentlab/terraform-provider-agentlab/internal/config"
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets"
	"github.com/agentlab/terraform-provider-agentlab/internal/version"
)

// Manifest describes a backup archive.
type Manifest struct {
	Version       string    `json:"agentd_version"`
	CreatedAt     time.Time `json:"created_at"`
	SchemaVersion int       `json:"schema_version"`
	DBSHA256      string    `json:"db_sha256"`
	Files         []string  `json:"files"`
}

// Options selects optional contents.
type Options struct {
	// IncludeKey adds the secrets' age identity (keep such a backup safe).
	IncludeKey bool
}

// DBPath is where agentd keeps its database.
func DBPath(cfg *config.Config) string { return filepath.Join(cfg.StateDir, "agentd.db") }

// Backup writes a tar.gz with a consistent copy of the database, the config
// file and the profiles.
func Backup(ctx context.Context, cfg *config.Config, out string, o Options) (*Manifest, error) {
	tmp, err := os.MkdirTemp("", "agentd-backup-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	snap := filepath.Join(tmp, "agentd.db")
	if err := snapshot(ctx, DBPath(cfg), snap); err != nil {
		return nil, err
	}
	m := &Manifest{Version: version.Version, CreatedAt: time.Now().UTC()}
	if m.SchemaVersion, err = check(ctx, snap); err != nil {
		return nil, fmt.Errorf("the snapshot failed its own check: %w", err)
	}
	if m.DBSHA256, err = sum(snap); err != nil {
		return nil, err
	}
	files := map[string]string{"agentd.db": snap}
	if cfg.File != "" {
		if _, err := os.Stat(cfg.File); err == nil {
			files["config.yaml"] = cfg.File
		}
	}
	if ents, err := os.ReadDir(cfg.ProfilesDir); err == nil {
		for _, e := range ents {
			if e.Type().IsRegular() {
				files["profiles/"+e.Name()] = filepath.Join(cfg.ProfilesDir, e.Name())
			}
		}
	}
	// Bundles are encrypted: safe to include. The key that opens them only on request.
	if ents, err := os.ReadDir(cfg.SecretsDir); err == nil {
		for _, e := range ents {
			if e.Type().IsRegular() && secrets.IsBundleFile(e.Name()) {
				files["secrets/"+e.Name()] = filepath.Join(cfg.SecretsDir, e.Name())
			}
		}
	}
	if o.IncludeKey {
		files["keys/"+filepath.Base(cfg.SecretsKeyFile)] = cfg.SecretsKeyFile
	}
	for name := range files {
		m.Files = append(m.Files, name)
	}
	if err := writeArchive(out, m, files); err != nil {
		return nil, err
	}
	return m, nil
}

// snapshot copies a live database with VACUUM INTO (one read transaction).
func snapshot(ctx context.Context, src, dst string) error {
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("database: %w", err)
	}
	db, err := sql.Open("sqlite", "file:"+src+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, dst); err != nil {
		return fmt.Errorf("snapshot %s: %w", src, err)
	}
	return nil
}

// check runs PRAGMA integrity_check and returns the schema version.
func check(ctx context.Context, path string) (int, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var res string
	if err := db.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&res); err != nil {
		return 0, fmt.Errorf("integrity check: %w", err)
	}
	if res != "ok" {
		return 0, fmt.Errorf("integrity check: %s", res)
	}
	var v int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("not an agentd database: %w", err)
	}
	return v, nil
}

func sum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func writeArchive(out string, m *Manifest, files map[string]string) error {
	tmp := out + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	defer os.Remove(tmp)
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	mj, _ := json.MarshalIndent(m, "", "  ")
	if err := tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o600, Size: int64(len(mj)), ModTime: m.CreatedAt}); err != nil {
		return err
	}
	if _, err := tw.Write(mj); err != nil {
		return err
	}
	for name, path := range files {
		if err := addFile(tw, name, path); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

func addFile(tw *tar.Writer, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

// Running reports whether an agent answers on the socket.
func Running(cfg *config.Config) bool {
	c, err := net.DialTimeout("unix", cfg.SocketPath, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// ErrRunning: restore refuses to replace the state of a running agent.
var ErrRunning = errors.New("agentd is running: stop it first (systemctl stop agentd)")

// Restore verifies an archive (manifest, checksum, integrity, schema) and
// installs it; the files it replaces are kept beside them as *.pre-restore.
func Restore(ctx context.Context, cfg *config.Config, archive string, knownSchema int) (*Manifest, error) {
	if Running(cfg) {
		return nil, ErrRunning
	}
	tmp, err := os.MkdirTemp("", "agentd-restore-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := extract(archive, tmp); err != nil {
		return nil, fmt.Errorf("%s: %w", archive, err)
	}
	var m Manifest
	mj, err := os.ReadFile(filepath.Join(tmp, "manifest.json"))
	if err != nil || json.Unmarshal(mj, &m) != nil {
		return nil, fmt.Errorf("%s: no valid manifest.json: not an agentd backup", archive)
	}
	db := filepath.Join(tmp, "agentd.db")
	got, err := sum(db)
	if err != nil || got != m.DBSHA256 {
		return nil, fmt.Errorf("%s: database checksum mismatch (archive damaged)", archive)
	}
	v, err := check(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", archive, err)
	}
	if v > knownSchema {
		return nil, fmt.Errorf("%s: schema version %d is newer than this agentd knows (%d); restore with a newer agentd", archive, v, knownSchema)
	}
	stamp := time.Now().UTC().Format("20060102T150405")
	install := func(src, dst string, mode os.FileMode) error {
		if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
			return err
		}
		if _, err := os.Stat(dst); err == nil {
			if err := os.Rename(dst, dst+".pre-restore-"+stamp); err != nil {
				return err
			}
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, mode)
	}
	dbPath := DBPath(cfg)
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(dbPath + suffix); err == nil {
			_ = os.Rename(dbPath+suffix, dbPath+suffix+".pre-restore-"+stamp)
		}
	}
	if err := install(db, dbPath, 0o600); err != nil {
		return nil, fmt.Errorf("install database: %w", err)
	}
	err = filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(tmp, p)
		switch {
		case rel == "config.yaml" && cfg.File != "":
			return install(p, cfg.File, 0o640)
		case strings.HasPrefix(rel, "profiles/"):
			return install(p, filepath.Join(cfg.ProfilesDir, filepath.Base(rel)), 0o644)
		case strings.HasPrefix(rel, "secrets/"):
			return install(p, filepath.Join(cfg.SecretsDir, filepath.Base(rel)), 0o600)
		case strings.HasPrefix(rel, "keys/"):
			return install(p, cfg.SecretsKeyFile, 0o600)
		}
		return nil
	})
	return &m, err
}

func extract(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || strings.HasPrefix(name, "..") || h.Typeflag != tar.TypeReg {
			return fmt.Errorf("unexpected entry %q", h.Name)
		}
		dst := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return err
		}
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, io.LimitReader(tr, 8<<30)); err != nil {
			out.Close()
			return err
		}
		if err := out.Close(); err != nil {
			return err
		}
	}
}
