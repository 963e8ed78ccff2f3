package store

import (
	"context"
	"database/sql"
	"testing"
	"time"
)

// openAtVersion creates a database at path migrated only up to version and
// returns its handle (closed by the test's cleanup), for writing rows as an
// older agentd did before the next migration runs.
func openAtVersion(t testing.TB, path string, version int) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1)
	s := &Store{db: db, now: time.Now}
	var list []migration
	for _, m := range migrations {
		if m.version <= version {
			list = append(list, m)
		}
	}
	if err := s.apply(context.Background(), list); err != nil {
		t.Fatal(err)
	}
	return db
}
