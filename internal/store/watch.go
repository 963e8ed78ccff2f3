package store

import "sync"

// watchers wakes the long-polls waiting on a sandbox (GET ?wait=settled) when
// its row was written: a client learns of a state change as the transaction
// commits instead of at its next poll.
type watchers struct {
	mu sync.Mutex
	ch map[string]chan struct{}
}

// SandboxChanged returns a channel that is closed after the next committed
// write of sandbox id. Subscribe before reading the row, so that a write
// between the read and the wait is not missed.
func (s *Store) SandboxChanged(id string) <-chan struct{} {
	s.watch.mu.Lock()
	defer s.watch.mu.Unlock()
	if s.watch.ch == nil {
		s.watch.ch = map[string]chan struct{}{}
	}
	c, ok := s.watch.ch[id]
	if !ok {
		c = make(chan struct{})
		s.watch.ch[id] = c
	}
	return c
}

func (s *Store) changed(id string) {
	s.watch.mu.Lock()
	defer s.watch.mu.Unlock()
	if c, ok := s.watch.ch[id]; ok {
		close(c)
		delete(s.watch.ch, id)
	}
}
