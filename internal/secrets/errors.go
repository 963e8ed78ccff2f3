package secrets

import (
	"errors"
	"fmt"
)

// The kinds of failure callers act on. Every error this package returns for
// one of them wraps the sentinel (test with errors.Is), so the API maps them to
// codes in one place and nobody matches message text. Messages name the
// bundle and what failed, never a value.
var (
	// ErrNoKey: `agentd secrets init` has not run (or the key file is gone).
	ErrNoKey = errors.New("no secrets key")
	// ErrNotFound: the bundle has no such env variable or SSH key.
	ErrNotFound = errors.New("secret not found")
	// ErrInvalidName: a bundle, variable or key name (or an SSH key) that
	// cannot be stored.
	ErrInvalidName = errors.New("invalid name")
	// ErrDecrypt: the bundle file exists but cannot be opened: not encrypted
	// to this agent's key, tampered with, or not a bundle at all.
	ErrDecrypt = errors.New("cannot open bundle")
	// ErrReadOnly: the bundle is a sops file; agentd reads it, sops edits it.
	ErrReadOnly = errors.New("bundle is read-only")
)

// kindError carries a message of its own and says which kind it is, so
// the sentinel's text does not prefix every message.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}
