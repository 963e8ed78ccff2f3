// Package vmid allocates VMIDs for sandboxes and workspace holders. Proxmox's
// /cluster/nextid is only a hint (parallel callers get the same answer and
// nothing is reserved), so this process never tries one id twice at once
// and skips ids that a row of ours already reserved but has not created yet.
package vmid

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// Allocator hands out VMIDs.
type Allocator struct {
	mu      sync.Mutex
	store   *store.Store
	pve     *pve.Client
	last    int          // the id picked last
	lastAt  time.Time    // when
	pending map[int]bool // ids being asked about and saved now
}

// burstGap is how soon after the last reservation the next one goes on
// from it rather than from nextid's answer.
const burstGap = 2 * time.Second

// New builds an allocator.
func New(st *store.Store, pc *pve.Client) *Allocator { return &Allocator{store: st, pve: pc} }

// Reserve finds a VMID that Proxmox considers free and no row of ours holds,
// and calls save(id) to record it. Candidates are picked one at a time
// (never one another caller of this process is trying); asking Proxmox
// about a candidate and saving it run outside the lock, so a burst of
// creates does not queue behind each other's requests. save returning
// store.ErrConflict moves on to the next id.
func (a *Allocator) Reserve(ctx context.Context, save func(id int) error) (int, error) {
	verified, next, err := a.first(ctx)
	if err != nil {
		return 0, err
	}
	for tries := 0; tries < 1000; tries++ {
		id, err := a.candidate(ctx, &next)
		if err != nil {
			return 0, err
		}
		ok, err := a.try(ctx, id, id == verified, save)
		a.mu.Lock()
		delete(a.pending, id)
		a.mu.Unlock()
		if err != nil {
			return 0, err
		}
		if ok {
			return id, nil
		}
	}
	return 0, fmt.Errorf("no free VMID found after 1000 candidates")
}

// first is where the search starts, and the id nextid vouched for (0:
// none). nextid answers the lowest id Proxmox has no VM at, which during a
// burst is the first of the ids reserved here and not cloned yet: in a
// burst (an id picked less than burstGap ago) the search goes on after the
// last one instead, without asking nextid again.
func (a *Allocator) first(ctx context.Context) (verified, start int, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last != 0 && time.Since(a.lastAt) <= burstGap {
		return 0, a.last + 1, nil
	}
	next, err := a.pve.NextID(ctx)
	if err != nil {
		return 0, 0, err
	}
	return next, next, nil
}

// candidate picks the next id from *next that no row of ours holds and no
// other caller is trying, and marks it as tried.
func (a *Allocator) candidate(ctx context.Context, next *int) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending == nil {
		a.pending = map[int]bool{}
	}
	for id := *next; ; id++ {
		if a.pending[id] {
			continue
		}
		// Our own reservations need no request: a burst holds many ids
		// Proxmox does not know yet.
		used, err := a.store.VMIDInUse(ctx, id)
		if err != nil {
			return 0, err
		}
		if used {
			continue
		}
		a.pending[id] = true
		a.last, a.lastAt, *next = id, time.Now(), id+1
		return id, nil
	}
}

// try asks Proxmox whether id is free (unless nextid just said so) and
// saves it: false, nil means try another.
func (a *Allocator) try(ctx context.Context, id int, vouched bool, save func(id int) error) (bool, error) {
	if !vouched {
		free, err := a.pve.IDFree(ctx, id)
		if err != nil || !free {
			return false, err
		}
	}
	err := save(id)
	if errors.Is(err, store.ErrConflict) {
		return false, nil
	}
	return err == nil, err
}
