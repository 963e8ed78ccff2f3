package pvesim

// The storage lock: PVE::Storage's vdisk_alloc, vdisk_clone and vdisk_free
// run the plugin's alloc_image, clone_image and free_image inside
// PVE::Storage::Plugin::cluster_lock_storage. For a storage that is not
// shared that is a local flock on the node, PVE::Tools::lock_file on
// /var/lock/pve-manager/pve-storage-<storeid>; for a shared one it is the
// cluster-wide PVE::Cluster::cfs_lock_storage (lock id storage-<storeid>).
// Both are called with no timeout, which lock_file_full and cfs_lock turn
// into 10 s. Every linked clone of a node's template therefore queues on
// one lock per storage: this is why Proxmox users see `can't lock file …
// got timeout` when they start more than a few clones on a node at once.

import (
	"errors"
	"fmt"
	"time"
)

// DefaultStorageLockTimeout is lock_file_full's and cfs_lock's 10 s.
const DefaultStorageLockTimeout = 10 * time.Second

// storeLock is one storage lock; free is closed when the holder lets go,
// waking every waiter (they race for it, as flock waiters do).
type storeLock struct {
	holder *task
	free   chan struct{}
}

// storageLockKey names the lock cluster_lock_storage takes for st on node,
// with the error its timeout dies with.
func storageLockKey(node string, st *storage) (key string, timeoutErr string) {
	if st.shared {
		// cfs_lock: "cfs-lock '$lockid' error: $err", $err being
		// "got lock request timeout\n".
		return "cfs/" + st.id, fmt.Sprintf("cfs-lock 'storage-%s' error: got lock request timeout", st.id)
	}
	// lock_file_full: "can't lock file '$filename' - $@", $@ being
	// run_with_timeout's "got timeout\n".
	return node + "/" + st.id, fmt.Sprintf("can't lock file '/var/lock/pve-manager/pve-storage-%s' - got timeout", st.id)
}

// lockStorage runs fn under st's storage lock on the task's node, holding
// the lock for Durations.StorageLock first (the storage command itself:
// lvcreate, zfs clone, qemu-img create). Called with s.mu held; s.mu is
// released while waiting and while holding. The hold counts towards the
// task's duration (worker.held).
func (w *worker) lockStorage(st *storage, fn func() error) error {
	s := w.s
	key, timeoutErr := storageLockKey(w.t.node, st)
	timeout := s.opts.StorageLockTimeout
	if timeout <= 0 {
		timeout = DefaultStorageLockTimeout
	}
	deadline := time.Now().Add(timeout)
	for {
		l := s.storeLocks[key]
		if l == nil || l.holder == nil {
			break
		}
		left := time.Until(deadline)
		if left <= 0 {
			s.stats.StorageLockTimeouts++
			return errors.New(timeoutErr)
		}
		free := l.free
		s.mu.Unlock()
		timer := time.NewTimer(left)
		var aborted bool
		select {
		case <-free:
		case <-timer.C:
		case <-w.t.abort:
			aborted = true
		case <-s.closing:
			aborted = true
		}
		timer.Stop()
		s.mu.Lock()
		if aborted {
			return errAborted
		}
	}
	l := &storeLock{holder: w.t, free: make(chan struct{})}
	s.storeLocks[key] = l
	defer func() {
		l.holder = nil
		close(l.free)
		if s.storeLocks[key] == l {
			delete(s.storeLocks, key)
		}
	}()
	if d := s.opts.Durations.StorageLock; d > 0 {
		s.mu.Unlock()
		var aborted bool
		select {
		case <-time.After(d):
		case <-w.t.abort:
			aborted = true
		case <-s.closing:
			aborted = true
		}
		s.mu.Lock()
		w.held += d
		if aborted {
			return errAborted
		}
	}
	return fn()
}
