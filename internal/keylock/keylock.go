// Package keylock serialises operations per key (a sandbox, workspace or
// session id) inside one agentd; the store's compare-and-set guards against
// everything else.
package keylock

import "sync"

// Set holds one mutex per key. The zero value is ready to use.
type Set struct {
	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// Lock takes key's mutex and returns its unlock.
func (s *Set) Lock(key string) func() {
	s.mu.Lock()
	if s.locks == nil {
		s.locks = map[string]*sync.Mutex{}
	}
	l := s.locks[key]
	if l == nil {
		l = &sync.Mutex{}
		s.locks[key] = l
	}
	s.mu.Unlock()
	l.Lock()
	return l.Unlock
}
