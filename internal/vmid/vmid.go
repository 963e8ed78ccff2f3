// Package vmid allocates VMIDs for sandboxes and workspace holders. Proxmox's
// /cluster/nextid is only a hint (parallel callers get the same answer and
// nothing is reserved), so allocation is serial in this process and skips ids
// that a row of ours already reserved but has not created yet.
package vmid

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// Allocator hands out VMIDs.
type Allocator struct {
	mu    sync.Mutex
	store *store.Store
	pve   *pve.Client
	last  int // the id handed out last
}

// New builds an allocator.
func New(st *store.Store, pc *pve.Client) *Allocator { return &Allocator{store: st, pve: pc} }

// Reserve finds a VMID that Proxmox considers free and no row of ours holds,
// and calls save(id) to record it while allocation is still locked. save
// returning store.ErrConflict moves on to the next id.
func (a *Allocator) Reserve(ctx context.Context, save func(id int) error) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id, err := a.pve.NextID(ctx)
	if err != nil {
		return 0, err
	}
	// nextid answers the lowest id Proxmox has no VM at, which during a
	// burst is the first of the ids reserved here and not cloned yet: start
	// after the last one handed out instead (each candidate past nextid's
	// answer is asked about anyway).
	verified := id
	if a.last >= id && a.last < id+1000 {
		id = a.last + 1
	}
	for tries := 0; tries < 1000; tries, id = tries+1, id+1 {
		// Our own reservations first: a burst of creates holds many ids
		// Proxmox does not know yet (nextid answers the first of them),
		// and asking Proxmox about each would cost a request per id.
		used, err := a.store.VMIDInUse(ctx, id)
		if err != nil {
			return 0, err
		}
		if used {
			continue
		}
		if id != verified {
			free, err := a.pve.IDFree(ctx, id)
			if err != nil {
				return 0, err
			}
			if !free {
				continue
			}
		}
		err = save(id)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return 0, err
		}
		a.last = id
		return id, nil
	}
	return 0, fmt.Errorf("no free VMID found after 1000 candidates")
}
