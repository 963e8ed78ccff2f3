package store

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestStateFilesArePrivateWhateverTheUmask: with umask 0 SQLite would create
// the database 0644 and its WAL and shared-memory files alike; every one of
// them must be 0600, on a fresh database and on one reopened after an older
// agentd left them readable.
func TestStateFilesArePrivateWhateverTheUmask(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "agentd.db")
	check := func(when string) {
		t.Helper()
		for _, f := range []string{path, path + "-wal", path + "-shm"} {
			fi, err := os.Stat(f)
			if err != nil {
				t.Fatalf("%s: %v", when, err)
			}
			if m := fi.Mode().Perm(); m != 0o600 {
				t.Errorf("%s: %s has mode %o, want 600", when, filepath.Base(f), m)
			}
		}
	}
	ctx := context.Background()
	s, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddEvent(ctx, nil, Event{Kind: "test", Message: "write through the WAL"}); err != nil {
		t.Fatal(err)
	}
	check("fresh")
	s.Close()

	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		_ = os.Chmod(f, 0o644)
	}
	s, err = Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Counts(ctx); err != nil {
		t.Fatal(err)
	}
	check("reopened")
}
