package sandbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/workspace"
)

// proof is what the VM at sb.VMID must show to be acted on as sb's.
func (m *Manager) proof(sb *store.Sandbox) owner.Proof {
	p := m.guard.Proof(owner.Sandbox, sb.ID, sb.Name, sb.VMID)
	p.Team, p.Node = sb.Team, sb.Node
	if IsPoolMember(sb) {
		p.Pool = sb.Profile
	}
	return p
}

// untagged reports whether sb's VM may not carry the tag yet: the clone
// request writes the description, the first config write adds the tag.
func untagged(sb *store.Sandbox) bool {
	s := provisionStep(sb)
	return s == stepAllocate || s == stepClone || s == stepConfig
}

// vm proves that the VM at sb's VMID is sb's and returns a handle for writes
// (nil when the VM does not exist). Every Proxmox write on a sandbox's VM
// goes through it.
func (m *Manager) vm(ctx context.Context, sb *store.Sandbox) (*owner.VM, error) {
	return m.guard.Prove(ctx, m.proof(sb), !untagged(sb))
}

// lost marks a row whose VM failed the proof LOST (the caller holds the lock)
// and returns the refusal. Nothing in Proxmox is changed.
func (m *Manager) lost(ctx context.Context, sb *store.Sandbox, op string, cause error) error {
	if sb.State != api.StateLost && sb.State != api.StateDestroyed && api.CanTransition(sb.State, api.StateLost) {
		sb.Error = cause.Error()
		if err := m.save(ctx, sb, api.StateLost, "sandbox.not_owned", fmt.Sprintf("refused to %s: %v; agentd will not touch VM %d (destroy --force retires the row)", op, cause, sb.VMID)); err != nil {
			m.opts.Log.Warn("could not mark sandbox LOST", "sandbox_id", sb.ID, "err", err)
		} else {
			m.releaseUnplugged(ctx, sb)
		}
	} else {
		_ = m.store.AddEvent(ctx, sb, store.Event{Kind: "sandbox.not_owned", Message: fmt.Sprintf("refused to %s: %v", op, cause)})
	}
	return api.Errorf(http.StatusConflict, api.CodeNotOwned, "refusing to %s sandbox %s: %v", op, sb.Name, cause)
}

// releaseUnplugged frees the workspace claim of a row just marked LOST when
// the VM at its VMID does not reference the workspace's volume (ours
// destroyed by a request whose answer was lost, and the VMID taken by
// another VM, say): the claim then guards nothing, and kept it locked the
// workspace, data intact, until an operator retired the row. A VM that
// still references the volume, or one that cannot be read, keeps it.
func (m *Manager) releaseUnplugged(ctx context.Context, sb *store.Sandbox) {
	w, err := m.store.WorkspaceBySandbox(ctx, sb.ID)
	if err != nil {
		return
	}
	if plugged, err := m.stillPlugged(ctx, sb, w); plugged || err != nil {
		return
	}
	if err := m.ws.Release(ctx, w, sb.ID); err != nil {
		m.opts.Log.Warn("could not release the workspace of a LOST sandbox", "sandbox_id", sb.ID, "workspace", w.Name, "err", err)
		return
	}
	_ = m.store.AddEvent(ctx, sb, store.Event{Kind: "sandbox.workspace_released",
		Message: fmt.Sprintf("workspace %s released: VM %d is not this sandbox's and does not reference its volume", w.Name, sb.VMID)})
}

// removeVM destroys the sandbox's VM after the proof and, once Proxmox
// confirms it is gone, releases the workspace claim and the snippet. The
// workspace stays attached until then: Proxmox's destroy frees only volumes
// the VM owns, and the holder owns the workspace, so a failed destroy leaves
// sandbox and workspace exactly as they were. lockWait bounds the wait for a
// Proxmox lock on the VM (0: as long as ctx lasts); a request passes
// apiLockWait, since a backup's or migration's lock can last for hours.
func (m *Manager) removeVM(ctx context.Context, sb *store.Sandbox, lockWait time.Duration) error {
	w, err := m.store.WorkspaceBySandbox(ctx, sb.ID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if sb.VMID != 0 {
		v, err := m.vm(ctx, sb)
		if err != nil {
			return err
		}
		// A hibernated VM (lock: suspended, for good) cannot be stopped, and
		// need not be: it is not running, and destroy purges its vmstate.
		if v != nil && v.Config["vmstate"] == nil {
			// A clone interrupted by a cancel or a crash may still hold lock=clone.
			lctx, cancel := ctx, context.CancelFunc(func() {})
			if lockWait > 0 {
				lctx, cancel = context.WithTimeout(ctx, lockWait)
			}
			err := m.waitUnlocked(lctx, sb.Node, sb.VMID)
			cancel()
			if err != nil && !errors.Is(err, pve.ErrNotFound) {
				return err
			}
			if err := v.Stop(ctx); err != nil && !errors.Is(err, pve.ErrNotFound) {
				return err
			}
		}
		if v != nil {
			if err := v.Destroy(ctx); err != nil && !errors.Is(err, pve.ErrNotFound) {
				return err
			}
		}
		// Absent at a step where the clone may still be running (cancelled
		// or timed out while PVE's task goes on) is not gone: the VMID stays
		// pending, so the clone, when it lands untagged, is still found by
		// reconcile as ours and pruned.
		if v != nil || provisionStep(sb) != stepClone {
			if err := m.store.VMGone(ctx, sb.ID, sb.VMID); err != nil {
				return err
			}
		}
	}
	m.removeSnippet(sb)
	_ = m.store.DeleteTokens(ctx, sb.ID, "")
	if w != nil {
		if err := m.ws.Release(ctx, w, sb.ID); err != nil {
			return fmt.Errorf("release workspace %s: %w", w.Name, err)
		}
	}
	return nil
}

// proxmoxError turns a Proxmox failure into an API error.
func proxmoxError(op string, sb *store.Sandbox, err error) error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return err
	}
	if errors.Is(err, owner.ErrNotOwned) {
		return api.Errorf(http.StatusConflict, api.CodeNotOwned, "refusing to %s sandbox %s: %v", op, sb.Name, err)
	}
	// Before the deadline check: the lock, not Proxmox, made the wait end.
	var lw *lockWaitError
	if errors.As(err, &lw) {
		return api.Errorf(http.StatusConflict, api.CodeBusy,
			"cannot %s sandbox %s: its VM %d is locked (%s) by a Proxmox task still running (qm unlock %d only if no task runs); retry when it has ended",
			op, sb.Name, lw.VMID, lw.Lock, lw.VMID)
	}
	if errors.Is(err, pve.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "%s sandbox %s: Proxmox is unreachable: %v", op, sb.Name, err)
	}
	// qemu-server's check_lock refuses at once ("VM is locked (backup)"):
	// the same answer as agentd's own bounded wait, so clients retry alike.
	if errors.Is(err, pve.ErrLocked) {
		return api.Errorf(http.StatusConflict, api.CodeBusy, "cannot %s sandbox %s now: %v; retry when the Proxmox task holding the lock has ended", op, sb.Name, err)
	}
	return api.Errorf(http.StatusBadGateway, api.CodeProxmox, "%s sandbox %s: %v", op, sb.Name, err)
}

// getLocked finds a sandbox, takes its lock and re-reads it under the lock.
func (m *Manager) getLocked(ctx context.Context, ref string) (*store.Sandbox, func(), error) {
	sb, err := m.Get(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	unlock, err := m.lockAPI(ctx, sb)
	if err != nil {
		return nil, nil, err
	}
	if sb, err = m.store.Sandbox(ctx, sb.ID); err != nil {
		unlock()
		return nil, nil, err
	}
	return sb, unlock, nil
}

// apiLockWait bounds how long a request waits for an object another
// operation holds (a stop waiting for its shutdown task, say): it answers
// 409 busy instead of waiting behind a Proxmox task it did not start.
const apiLockWait = 10 * time.Second

// lockAPI takes sb's lock for a request.
func (m *Manager) lockAPI(ctx context.Context, sb *store.Sandbox) (func(), error) {
	unlock, err := m.locks.LockWithin(ctx, sb.ID, "a request on sandbox "+sb.Name, apiLockWait)
	if err != nil {
		return nil, api.Errorf(http.StatusConflict, api.CodeBusy, "sandbox %s is busy (%v); retry", sb.Name, err)
	}
	return unlock, nil
}

// Start boots a STOPPED sandbox in the background (→ BOOTING → RUNNING).
func (m *Manager) Start(ctx context.Context, ref string) (*store.Sandbox, error) {
	sb, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	start, err := m.markStarting(ctx, sb)
	unlock()
	if err != nil {
		return nil, err
	}
	if start {
		m.startWorker(sb.ID)
	}
	return sb, nil
}

// markStarting moves a STOPPED sandbox to BOOTING; start reports whether a
// worker must now boot it (false: it already runs or is starting).
func (m *Manager) markStarting(ctx context.Context, sb *store.Sandbox) (start bool, err error) {
	switch sb.State {
	case api.StateRunning, api.StateBooting, api.StateReady:
		return false, nil
	case api.StateStopped, api.StateSuspended:
	default:
		return false, invalidState(sb, "start", api.StateStopped, api.StateSuspended)
	}
	v, err := m.vm(ctx, sb)
	if errors.Is(err, owner.ErrNotOwned) {
		return false, m.lost(ctx, sb, "start", err)
	}
	if err != nil {
		return false, proxmoxError("start", sb, err)
	}
	if v == nil {
		return false, api.Errorf(http.StatusConflict, api.CodeInvalidState, "cannot start sandbox %s: its VM %d no longer exists (reconcile retires the row)", sb.Name, sb.VMID)
	}
	if sb.Step != stepRevertBoot {
		sb.Step = stepRestart
	}
	sb.Error = ""
	msg := "start requested"
	if sb.State == api.StateSuspended {
		// PVE's start of a hibernated VM loads its RAM from the vmstate
		// volume and frees it; the BOOTING path then waits for the guest.
		msg = "resume from hibernation requested"
		if a, err := m.store.Address(ctx, sb.ID); err == nil {
			sb.IP = a.String()
		}
	}
	if err := m.save(ctx, sb, api.StateBooting, "sandbox.start", msg); err != nil {
		return false, err
	}
	return true, nil
}

// Stop shuts the guest down (hard stop after shutdown_timeout) and keeps the
// VM. A start in progress is cancelled first (its worker powers the VM off);
// first provisioning cannot be stopped: destroy --force cancels it.
func (m *Manager) Stop(ctx context.Context, ref string) (*store.Sandbox, error) {
	sb, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	starting := (sb.State == api.StateBooting || sb.State == api.StateReady) && restarting(sb.Step)
	if starting && m.busy(sb.ID) {
		unlock()
		m.cancelWorker(sb.ID, errStopRequested)
		m.Wait(sb.ID)
		if sb, unlock, err = m.getLocked(ctx, sb.ID); err != nil {
			return nil, err
		}
		starting = (sb.State == api.StateBooting || sb.State == api.StateReady) && restarting(sb.Step)
	}
	defer unlock()
	switch {
	case sb.State == api.StateStopped:
		return sb, nil
	case sb.State == api.StateRunning || sb.State == api.StateSuspended || starting:
	default:
		return nil, invalidState(sb, "stop", api.StateRunning, api.StateSuspended, api.StateStopped)
	}
	return m.stopLocked(sb, "sandbox.stop", "stopped by request")
}

// errStopRequested is the cause of a start cancelled by a stop.
var errStopRequested = errors.New("cancelled by a stop request")

// stopLocked shuts a sandbox down; the caller holds its lock.
func (m *Manager) stopLocked(sb *store.Sandbox, kind, msg string) (*store.Sandbox, error) {
	// Work on the agent's context: a client that disconnects must not leave a
	// half-stopped VM with a row that says RUNNING.
	wctx, cancel := context.WithTimeout(m.ctx, m.opts.ShutdownTimeout+2*time.Minute)
	defer cancel()
	v, err := m.vm(wctx, sb)
	if errors.Is(err, owner.ErrNotOwned) {
		return nil, m.lost(wctx, sb, "stop", err)
	}
	if err != nil {
		return nil, proxmoxError("stop", sb, err)
	}
	if v != nil && sb.State == api.StateSuspended {
		// A hibernated VM is locked (suspended) and cannot be stopped as it
		// is; a start resumes it (and frees its vmstate), then it shuts down.
		if err := v.Start(wctx); err != nil && !errors.Is(err, pve.ErrRunning) {
			return nil, proxmoxError("stop", sb, err)
		}
	}
	if v != nil {
		if err := v.Shutdown(wctx, m.opts.ShutdownTimeout); err != nil && !errors.Is(err, pve.ErrNotFound) {
			return nil, proxmoxError("stop", sb, err)
		}
	}
	sb.IP, sb.Step = "", ""
	if err := m.save(wctx, sb, api.StateStopped, kind, msg); err != nil {
		return nil, err
	}
	return sb, nil
}

// Destroy removes the sandbox's VM. The intent is journaled first (DESTROYING),
// so a crash at any point is resumed, and the row becomes DESTROYED only once
// Proxmox confirmed the VM is gone. A sandbox still provisioning is refused
// without force; with force its worker is cancelled and the destroy finishes
// in the background (the answer is DESTROYING at once, never blocked behind
// the clone task). A VM that fails the ownership proof is never touched: the
// row becomes LOST (409), and with force it is retired instead.
func (m *Manager) Destroy(ctx context.Context, ref string, force bool) (*store.Sandbox, error) {
	return m.destroy(ctx, ref, force, "by request")
}

// DestroyFor is Destroy with the requester named in events (a session).
func (m *Manager) DestroyFor(ctx context.Context, ref string, force bool, by string) (*store.Sandbox, error) {
	return m.destroy(ctx, ref, force, by)
}

func (m *Manager) destroy(ctx context.Context, ref string, force bool, by string) (*store.Sandbox, error) {
	return m.destroyIf(ctx, ref, force, by, nil)
}

// errKept: destroyIf found the row no longer what the caller meant to
// destroy and left it alone.
var errKept = errors.New("left alone: the sandbox changed since it was read")

// destroyIf is destroy of a row that still satisfies only (nil: any) when
// read under its lock. A caller deciding from rows it read earlier (the
// pool loop) must not act on a row that became something else meanwhile.
func (m *Manager) destroyIf(ctx context.Context, ref string, force bool, by string, only func(*store.Sandbox) bool) (*store.Sandbox, error) {
	sb, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if only != nil && !only(sb) {
		return sb, errKept
	}
	switch {
	case sb.State == api.StateDestroyed || sb.State == api.StateDestroying && m.busy(sb.ID):
		return sb, nil
	case sb.State == api.StateDestroying:
		wctx, cancel := context.WithTimeout(m.ctx, 5*time.Minute)
		defer cancel()
		if err := m.awaitLockFree(wctx, sb, "?"); err != nil {
			return nil, proxmoxError("destroy", sb, err)
		}
		if err := m.finishDestroy(wctx, sb, apiLockWait); err != nil {
			return nil, proxmoxError("destroy", sb, err)
		}
		return sb, nil
	case sb.State.InFlight() && !force:
		return nil, api.Errorf(http.StatusConflict, api.CodeInvalidState,
			"sandbox %s is %s (step %s); wait until it settles or destroy with force", sb.Name, sb.State, sb.Step)
	}
	wctx, cancel := context.WithTimeout(m.ctx, 5*time.Minute)
	defer cancel()
	if m.busy(sb.ID) {
		// Journal the intent, cancel the worker and let a fresh worker destroy
		// once the old one has stopped: this request returns at once.
		step := sb.Step
		if err := m.save(wctx, sb, api.StateDestroying, "sandbox.destroy_requested",
			fmt.Sprintf("destroy --force %s at step %s; cancelling the running provisioning or start", by, step)); err != nil {
			return nil, conflict(sb, err)
		}
		m.cancelWorker(sb.ID, fmt.Errorf("cancelled by destroy --force %s at step %s", by, step))
		m.afterWorker(sb.ID)
		return sb, nil
	}
	if nodeLost(sb) {
		// The VM is out of reach, not gone: journal the destroy, which the
		// cleanup loop finishes (with the proof) once the node answers.
		sb.Error = ""
		if err := m.save(wctx, sb, api.StateDestroying, "sandbox.destroy_requested", fmt.Sprintf("destroy %s; node %s is offline: VM %d is destroyed when the node is back",
			by, cmp.Or(sb.Node, m.opts.Node), sb.VMID)); err != nil {
			return nil, conflict(sb, err)
		}
		return sb, nil
	}
	lock := ""
	if sb.VMID != 0 && sb.State != api.StateLost {
		if v, err := m.vm(wctx, sb); errors.Is(err, owner.ErrNotOwned) {
			if !force {
				return nil, m.lost(wctx, sb, "destroy", err)
			}
			// retire names the cause in its event (it used to say "not
			// provably ours: " with the row's old, usually empty, error).
			sb.State, sb.Error = api.StateLost, err.Error()
		} else if err != nil {
			return nil, proxmoxError("destroy", sb, err)
		} else if v != nil {
			lock, _ = v.Config["lock"].(string)
		}
	}
	if sb.State == api.StateLost {
		if !force {
			return nil, api.Errorf(http.StatusConflict, api.CodeNotOwned, "sandbox %s is LOST (%s); destroy --force retires the row and leaves VM %d alone", sb.Name, sb.Error, sb.VMID)
		}
		return m.retire(wctx, sb)
	}
	// Refused before the destroy is journaled, so a 409 busy leaves the
	// sandbox as it was; the journaled destroy's own wait is bounded too, for
	// a lock taken in between (the cleanup loop then finishes it).
	if err := m.awaitLockFree(wctx, sb, lock); err != nil {
		return nil, proxmoxError("destroy", sb, err)
	}
	if err := m.save(wctx, sb, api.StateDestroying, "sandbox.destroy_requested", "destroy "+by); err != nil {
		return nil, conflict(sb, err)
	}
	if err := m.finishDestroy(wctx, sb, apiLockWait); err != nil {
		return nil, proxmoxError("destroy", sb, err)
	}
	return sb, nil
}

// retire ends a row whose VM is not ours without touching that VM.
func (m *Manager) retire(ctx context.Context, sb *store.Sandbox) (*store.Sandbox, error) {
	from := sb.State
	msg := fmt.Sprintf("row retired with force; VM %d left alone (not provably ours: %s)", sb.VMID, sb.Error)
	if w, err := m.store.WorkspaceBySandbox(ctx, sb.ID); err == nil {
		// A VM that is not ours but still references the workspace's volume
		// (our VM with its tag removed, say) keeps the claim: released, the
		// workspace could be attached to a second VM, snapshotted or rolled
		// back under a VM agentd may not touch.
		if plugged, perr := m.stillPlugged(ctx, sb, w); plugged || perr != nil {
			why := fmt.Sprintf("VM %d still references its volume", sb.VMID)
			if perr != nil {
				why = fmt.Sprintf("cannot tell whether VM %d still references its volume: %v", sb.VMID, perr)
			}
			msg += fmt.Sprintf("; workspace %s stays claimed: %s (unplug it by hand, then workspace detach)", w.Name, why)
		} else {
			_ = m.ws.Release(ctx, w, sb.ID)
		}
	}
	cur, err := m.store.Sandbox(ctx, sb.ID)
	if err != nil {
		return nil, err
	}
	if cur.State != from {
		from = cur.State
	}
	sb.State = from
	sb.IP, sb.Step = "", ""
	if err := m.save(ctx, sb, api.StateDestroyed, "sandbox.destroy_forced", msg); err != nil {
		return nil, conflict(sb, err)
	}
	return sb, nil
}

// stillPlugged reports whether the VM at sb's VMID (which may not be
// provably sb's) references w's volume under any key. It only reads.
func (m *Manager) stillPlugged(ctx context.Context, sb *store.Sandbox, w *store.Workspace) (bool, error) {
	if sb.VMID == 0 {
		return false, nil
	}
	cfg, err := m.pve.On(sb.Node).Config(ctx, sb.VMID)
	if errors.Is(err, pve.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	vol, err := m.ws.Volume(ctx, w)
	if err != nil {
		return false, err
	}
	for k := range cfg {
		if pve.DiskVolume(cfg, k) == vol {
			return true, nil
		}
	}
	return false, nil
}

// awaitLockFree waits at most apiLockWait while a Proxmox task holds the
// lock of the sandbox's VM (Proxmox refuses to stop or destroy it meanwhile:
// "VM is locked (backup)"). A hibernated VM's lock=suspended is no task's and
// does not block a destroy; a VM already gone is no obstacle either. lock is
// the lock of the config just read ("?" when none was read): a free one
// spares the status request.
func (m *Manager) awaitLockFree(ctx context.Context, sb *store.Sandbox, lock string) error {
	free := func(lock string) bool { return lock == "" || lock == "suspended" }
	if sb.VMID == 0 || free(lock) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, apiLockWait)
	defer cancel()
	err := m.waitLock(ctx, sb.Node, sb.VMID, free)
	if errors.Is(err, pve.ErrNotFound) {
		return nil
	}
	return err
}

// finishDestroy removes the VM of a DESTROYING row and marks it DESTROYED;
// the caller holds the lock. On failure the row stays DESTROYING (the
// workspace still attached, in the DB and in Proxmox alike) for a retry.
func (m *Manager) finishDestroy(ctx context.Context, sb *store.Sandbox, lockWait time.Duration) error {
	if err := m.removeVM(ctx, sb, lockWait); err != nil {
		if errors.Is(err, owner.ErrNotOwned) {
			// The destroy was journaled while the VM was ours: a VM that fails
			// the proof now is another one at the reused VMID (ours went in a
			// destroy whose answer a crash lost) or ours edited out of band.
			// Either way it is left alone and the destroy ends here.
			sb.Error = err.Error()
			_, rerr := m.retire(ctx, sb)
			return rerr
		}
		_ = m.store.AddEvent(ctx, sb, store.Event{Kind: "sandbox.destroy_failed", Message: fmt.Sprintf("destroying VM %d failed (retried by the next destroy or the cleanup loop): %v", sb.VMID, err)})
		return err
	}
	msg := "destroyed"
	if sb.VMID != 0 {
		msg = fmt.Sprintf("VM %d destroyed", sb.VMID)
	}
	sb.IP, sb.Step = "", ""
	return m.save(ctx, sb, api.StateDestroyed, "sandbox.destroy", msg)
}

// conflict maps a lost compare-and-set to a 409 naming the sandbox.
func conflict(sb *store.Sandbox, err error) error {
	if errors.Is(err, store.ErrStale) {
		return api.Errorf(http.StatusConflict, api.CodeConflict, "sandbox %s changed concurrently; retry", sb.Name)
	}
	return err
}

// Renew sets the lease of a RUNNING sandbox to now + ttl.
func (m *Manager) Renew(ctx context.Context, ref, ttl string) (*store.Sandbox, error) {
	d, err := ParseTTL(ttl)
	if err != nil {
		return nil, api.FieldError("ttl", "%v", err)
	}
	if d == 0 {
		return nil, api.FieldError("ttl", "must be greater than zero to renew a lease")
	}
	sb, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if sb.State != api.StateRunning {
		return nil, invalidState(sb, "renew the lease of", api.StateRunning)
	}
	if err := m.checkTTL(ctx, sb.Profile, sb.Team, d); err != nil {
		return nil, err
	}
	exp := m.now().Add(d).UTC()
	sb.LeaseExpiresAt = &exp
	sb.TTLSeconds = int64(d / time.Second)
	if err := m.store.Save(ctx, sb, sb.State, store.Event{Kind: "sandbox.lease_renewed",
		Message: fmt.Sprintf("lease renewed for %s, until %s", d, exp.Format(time.RFC3339))}); err != nil {
		return nil, conflict(sb, err)
	}
	return sb, nil
}

// Touch records activity (it postpones idle stop).
func (m *Manager) Touch(ctx context.Context, ref string) (*store.Sandbox, error) {
	sb, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if sb.State == api.StateDestroyed || sb.State == api.StateDestroying {
		return nil, invalidState(sb, "touch", api.StateRunning, api.StateStopped)
	}
	if IsPoolMember(sb) {
		// Activity recorded on a member would be the claimer's from its
		// first second (and reorder the pool): members have no user yet.
		return nil, api.Errorf(http.StatusConflict, api.CodeInvalidState,
			"sandbox %s is an unclaimed warm-pool member of profile %s; create a sandbox of that profile to claim one", sb.ID, sb.Profile)
	}
	now := m.now().UTC()
	sb.LastUsedAt = &now
	if err := m.store.Save(ctx, sb, sb.State, store.Event{}); err != nil {
		return nil, conflict(sb, err)
	}
	return sb, nil
}

// Prune destroys the VMs of FAILED and TIMEOUT sandboxes and retires their
// rows, and retries destroys left DESTROYING; a VM that fails the ownership
// check is skipped and reported.
func (m *Manager) Prune(ctx context.Context, dryRun bool) (*api.PruneResult, error) {
	ctx = auth.Host(ctx)
	rows, err := m.store.Sandboxes(ctx, store.Filter{States: []api.State{api.StateFailed, api.StateTimeout, api.StateDestroying}})
	if err != nil {
		return nil, err
	}
	res := &api.PruneResult{DryRun: dryRun, Destroyed: []api.Sandbox{}, Skipped: []api.PruneSkipped{}}
	for _, sb := range rows {
		if m.busy(sb.ID) {
			continue
		}
		if dryRun {
			res.Destroyed = append(res.Destroyed, sb.Sandbox)
			continue
		}
		// Destroy also finishes a destroy left DESTROYING.
		out, err := m.Destroy(ctx, sb.ID, false)
		if err != nil {
			res.Skipped = append(res.Skipped, api.PruneSkipped{Sandbox: sb.Sandbox, Reason: err.Error()})
			_ = m.store.AddEvent(ctx, sb, store.Event{Kind: "sandbox.prune_skipped", Message: err.Error()})
			continue
		}
		res.Destroyed = append(res.Destroyed, out.Sandbox)
	}
	return res, nil
}

// AttachWorkspace attaches a workspace to a STOPPED or RUNNING sandbox (a
// running one gets the disk hot-plugged). The claim is journaled with the
// attach step before Proxmox is asked, so a crash in between is finished by
// reconcile.
func (m *Manager) AttachWorkspace(ctx context.Context, sbRef, wsRef string) (*store.Sandbox, error) {
	sb, err := m.Get(ctx, sbRef)
	if err != nil {
		return nil, err
	}
	// Only a workspace of the sandbox's own team can be attached to it.
	w, err := m.ws.Get(auth.For(ctx, sb.Team), wsRef)
	if err != nil {
		return nil, err
	}
	unlockSB, err := m.lockAPI(ctx, sb)
	if err != nil {
		return nil, err
	}
	defer unlockSB()
	unlockWS, err := m.ws.LockAPI(ctx, w)
	if err != nil {
		return nil, err
	}
	defer unlockWS()
	if sb, err = m.store.Sandbox(ctx, sb.ID); err != nil {
		return nil, err
	}
	if w, err = m.store.Workspace(ctx, w.ID); err != nil {
		return nil, err
	}
	if sb.State != api.StateStopped && sb.State != api.StateRunning {
		return nil, invalidState(sb, "attach a workspace to", api.StateStopped, api.StateRunning)
	}
	if sb.Workspace != "" && sb.Workspace != w.Name {
		return nil, api.Errorf(http.StatusConflict, api.CodeConflict, "sandbox %s already has workspace %s attached", sb.Name, sb.Workspace)
	}
	m.freshStorages(ctx)
	if wn, sn := cmp.Or(w.Node, m.opts.Node), cmp.Or(sb.Node, m.opts.Node); wn != sn && !m.storageShared(w.Storage) {
		return nil, api.Errorf(http.StatusConflict, api.CodeConflict, "workspace %s lives on node %s, on storage %s that only that node reads; sandbox %s runs on node %s (move the workspace first: agentd workspace move %s --node %s)",
			w.Name, wn, w.Storage, sb.Name, sn, w.Name, sn)
	}
	v, err := m.vm(ctx, sb)
	if errors.Is(err, owner.ErrNotOwned) {
		return nil, m.lost(ctx, sb, "attach a workspace to", err)
	}
	if err == nil && v == nil {
		err = fmt.Errorf("VM %d does not exist", sb.VMID)
	}
	if err != nil {
		return nil, proxmoxError("attach a workspace to", sb, err)
	}
	if err := m.ws.Claim(ctx, w, sb.ID, "", workspace.StepAttach); err != nil {
		return nil, err
	}
	if err := m.ws.Plug(ctx, w, v); err != nil {
		_ = m.ws.Release(ctx, w, sb.ID)
		return nil, proxmoxError("attach a workspace to", sb, err)
	}
	if err := m.ws.Settle(ctx, w, "workspace.attached", fmt.Sprintf("attached to sandbox %s as %s", sb.Name, w.AttachKey)); err != nil {
		return nil, err
	}
	sb.Workspace = w.Name
	if err := m.store.Save(ctx, sb, sb.State, store.Event{Kind: "sandbox.workspace_attached", Message: "workspace " + w.Name + " attached as " + w.AttachKey}); err != nil {
		return nil, conflict(sb, err)
	}
	return sb, nil
}

// DetachWorkspace removes a workspace from the sandbox it is attached to. The
// detach is journaled (step detach) before the disk is unplugged and the
// claim released only after Proxmox confirmed, so a crash in between is
// finished by reconcile rather than leaving the two disagreeing.
func (m *Manager) DetachWorkspace(ctx context.Context, wsRef string) (*store.Workspace, error) {
	w, err := m.ws.Get(ctx, wsRef)
	if err != nil {
		return nil, err
	}
	if w.AttachedSandbox == "" {
		return w, nil
	}
	sb, err := m.store.Sandbox(ctx, w.AttachedSandbox)
	if err != nil {
		return nil, err
	}
	unlockSB, err := m.lockAPI(ctx, sb)
	if err != nil {
		return nil, err
	}
	defer unlockSB()
	unlockWS, err := m.ws.LockAPI(ctx, w)
	if err != nil {
		return nil, err
	}
	defer unlockWS()
	if sb, err = m.store.Sandbox(ctx, sb.ID); err != nil {
		return nil, err
	}
	if w, err = m.store.Workspace(ctx, w.ID); err != nil {
		return nil, err
	}
	if w.AttachedSandbox != sb.ID {
		return w, nil
	}
	if sb.State.Settling() {
		return nil, invalidState(sb, "detach a workspace from", api.StateStopped, api.StateRunning, api.StateFailed)
	}
	if err := m.detachLocked(ctx, sb, w); err != nil {
		return nil, err
	}
	return w, nil
}

// detachLocked unplugs w from sb's VM and releases the claim; both locks held.
func (m *Manager) detachLocked(ctx context.Context, sb *store.Sandbox, w *store.Workspace) error {
	if err := m.ws.Journal(ctx, w, workspace.StepDetach); err != nil {
		return err
	}
	if sb.State == api.StateDestroyed || sb.State == api.StateLost {
		// The VM is not (or no longer) provably sb's: never unplug it, and
		// never release a volume it still references (see retire).
		if plugged, err := m.stillPlugged(ctx, sb, w); plugged || err != nil {
			if err == nil {
				err = fmt.Errorf("VM %d, which agentd may not touch, still references its volume; unplug it by hand first", sb.VMID)
			}
			return api.Errorf(http.StatusConflict, api.CodeAttached, "cannot detach workspace %s from sandbox %s: %v", w.Name, sb.Name, err)
		}
	}
	if sb.VMID != 0 && sb.State != api.StateDestroyed && sb.State != api.StateLost {
		v, err := m.vm(ctx, sb)
		if errors.Is(err, owner.ErrNotOwned) {
			return m.lost(ctx, sb, "detach a workspace from", err)
		}
		if err != nil {
			return proxmoxError("detach a workspace from", sb, err)
		}
		if v != nil {
			if err := m.ws.Unplug(ctx, w, v); err != nil {
				return proxmoxError("detach a workspace from", sb, err)
			}
		}
	}
	if err := m.ws.Release(ctx, w, sb.ID); err != nil {
		return err
	}
	sb.Workspace = ""
	if err := m.store.Save(ctx, sb, sb.State, store.Event{Kind: "sandbox.workspace_detached", Message: "workspace " + w.Name + " detached"}); err != nil {
		return conflict(sb, err)
	}
	return nil
}
