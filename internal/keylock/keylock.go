// Package keylock serialises operations per key (a sandbox, workspace or
// session id) inside one agentd; the store's compare-and-set guards against
// everything else.
package keylock

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Set holds one lock per key. The zero value is ready to use.
type Set struct {
	mu    sync.Mutex
	locks map[string]*entry
}

type entry struct {
	ch    chan struct{} // holds a token while locked
	op    string        // what the holder does, for BusyError
	since time.Time
}

func (s *Set) entry(key string) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locks == nil {
		s.locks = map[string]*entry{}
	}
	e := s.locks[key]
	if e == nil {
		e = &entry{ch: make(chan struct{}, 1)}
		s.locks[key] = e
	}
	return e
}

func (s *Set) held(e *entry, op string) func() {
	s.mu.Lock()
	e.op, e.since = op, time.Now()
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		e.op = ""
		s.mu.Unlock()
		<-e.ch
	}
}

// Lock takes key's lock, waiting as long as it takes, and returns its
// unlock. Background work (workers, loops) uses it.
func (s *Set) Lock(key string) func() {
	e := s.entry(key)
	e.ch <- struct{}{}
	return s.held(e, "")
}

// TryLock takes key's lock only if nobody holds it (ok false then).
// Background passes that may skip an object for a cycle use it rather than
// wait behind a request whose Proxmox task runs for hours.
func (s *Set) TryLock(key, op string) (unlock func(), ok bool) {
	e := s.entry(key)
	select {
	case e.ch <- struct{}{}:
		return s.held(e, op), true
	default:
		return nil, false
	}
}

// BusyError says the key stayed locked for longer than a caller would wait.
type BusyError struct {
	Op    string // what the holder is doing, "" if unnamed
	Since time.Time
}

func (e *BusyError) Error() string {
	if e.Op == "" {
		return fmt.Sprintf("another operation holds it since %s", e.Since.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("%s holds it since %s", e.Op, e.Since.UTC().Format(time.RFC3339))
}

// LockWithin takes key's lock for op, waiting at most d (or until ctx ends).
// API requests use it: an answer must not wait behind a Proxmox task another
// request started.
func (s *Set) LockWithin(ctx context.Context, key, op string, d time.Duration) (func(), error) {
	e := s.entry(key)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case e.ch <- struct{}{}:
		return s.held(e, op), nil
	case <-t.C:
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return nil, &BusyError{Op: e.op, Since: e.since}
}
