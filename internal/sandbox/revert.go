package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/workspace"
)

// CleanSnapshot is the snapshot provisioning takes before the first boot
// (profile behavior.clean_snapshot) and Revert rolls back to.
const CleanSnapshot = "clean"

// stepRevertBoot marks the first start after a revert: like stepRestart (a
// failure stops the VM, never destroys it), but the guest's disk is as it
// was before its first boot, so the bootstrap file is delivered again.
const stepRevertBoot = "restart_clean"

// restarting reports whether step is the start of an existing sandbox.
func restarting(step string) bool { return step == stepRestart || step == stepRevertBoot }

// cleanSnapshot takes the disk-only snapshot "clean" of a configured VM that
// has never booted. It is idempotent like the other steps: a snapshot task
// still running from before a crash is waited for, an existing "clean" is
// kept (never a second one), and a foreign volume plugged by an earlier
// version's configure is unplugged first, so the snapshot covers only what
// the sandbox owns. A storage that cannot snapshot skips it with an event:
// revert then says why it has nothing to go back to.
//
// fresh: this run cloned the VM, so no clone lock can remain (its task ended)
// and it has no snapshot yet (a clone copies none): the checks a resumed run
// needs for an earlier attempt's snapshot are skipped. The ownership proof
// is read either way (a task, the resize, ran since configure's).
func (m *Manager) cleanSnapshot(ctx context.Context, sb *store.Sandbox, fresh bool) error {
	if !fresh {
		if err := m.waitUnlocked(ctx, sb.Node, sb.VMID); err != nil {
			return err
		}
	}
	v, err := m.guard.Must(ctx, m.proof(sb), true)
	if err != nil {
		return err
	}
	if !fresh {
		snaps, err := m.pve.On(sb.Node).Snapshots(ctx, sb.VMID)
		if err != nil {
			return err
		}
		for _, s := range snaps {
			if s.Name == CleanSnapshot {
				return m.progress(ctx, sb, stepAttachWS, "")
			}
		}
	}
	for _, d := range foreignDisks(v.Config, sb.VMID) {
		key, _, _ := strings.Cut(d, " = ")
		if err := v.DetachVolume(ctx, key); err != nil {
			return fmt.Errorf("unplug %s before the clean snapshot: %w", d, err)
		}
	}
	err = v.SnapshotVM(ctx, CleanSnapshot, "taken by agentd before the first boot; agentd sandbox revert rolls back to it", false)
	if errors.Is(err, pve.ErrUnsupported) {
		_ = m.store.AddEvent(ctx, sb, store.Event{Kind: "sandbox.clean_snapshot_skipped",
			Message: fmt.Sprintf("no clean snapshot: a disk's storage cannot snapshot (%v); revert is unavailable for this sandbox", err)})
		return m.progress(ctx, sb, stepAttachWS, "")
	}
	if err != nil {
		return fmt.Errorf("take the clean snapshot of VM %d: %w", sb.VMID, err)
	}
	return m.progress(ctx, sb, stepAttachWS, fmt.Sprintf("took snapshot %s of VM %d (disks only, before the first boot)", CleanSnapshot, sb.VMID))
}

// attachAtCreate plugs the workspace claimed at create, after the clean
// snapshot (configure leaves it out when one is taken).
func (m *Manager) attachAtCreate(ctx context.Context, sb *store.Sandbox, p *profile.Profile) error {
	o, err := m.workspaceOption(ctx, sb)
	if err != nil {
		return err
	}
	if o == nil {
		return m.progress(ctx, sb, stepStart, "")
	}
	v, err := m.guard.Must(ctx, m.proof(sb), true)
	if err != nil {
		return err
	}
	if !hasOption(v.Config, *o) {
		if err := v.Configure(ctx, *o); err != nil {
			return fmt.Errorf("attach the workspace as %s: %w", o.Name, err)
		}
	}
	return m.progress(ctx, sb, stepStart, fmt.Sprintf("workspace attached as %s", o.Name))
}

// Revert rolls a RUNNING or STOPPED sandbox back to its clean snapshot: its
// disks as they were before the first boot; everything since is lost except
// the workspace. A VM snapshot rollback replaces the VM's config with the
// snapshot's and turns every volume the snapshot does not know into an
// unusedN entry (PVE's __snapshot_rollback_get_unused), so the workspace is
// unplugged first and plugged again afterwards; its claim stays, journaled
// as an attach, so a crash in between is finished by reconcile's attachment
// repair. A running sandbox is shut down first (the rollback of a disk-only
// snapshot leaves the VM stopped anyway) and started again afterwards; the
// answer is then BOOTING.
func (m *Manager) Revert(ctx context.Context, ref string, req api.RevertRequest) (*store.Sandbox, error) {
	// The clean snapshot may bring back more cores or memory than the
	// sandbox has now (checkRollback): the admission lock first.
	release, err := m.admitResize(ctx, ref)
	if err != nil {
		return nil, err
	}
	release = sync.OnceFunc(release)
	defer release()
	sb, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	unlockSB, err := m.lockAPI(ctx, sb)
	if err != nil {
		return nil, err
	}
	if sb, err = m.store.Sandbox(ctx, sb.ID); err != nil {
		unlockSB()
		return nil, err
	}
	w, err := m.store.WorkspaceBySandbox(ctx, sb.ID)
	if errors.Is(err, store.ErrNotFound) {
		w, err = nil, nil
	}
	if err != nil {
		unlockSB()
		return nil, err
	}
	unlockWS := func() {}
	if w != nil {
		if unlockWS, err = m.ws.LockAPI(ctx, w); err != nil {
			unlockSB()
			return nil, err
		}
		if w, err = m.store.Workspace(ctx, w.ID); err != nil {
			unlockWS()
			unlockSB()
			return nil, err
		}
	}
	wctx, cancel := context.WithTimeout(m.ctx, 30*time.Minute)
	defer cancel()
	boot, err := m.revertLocked(wctx, sb, w, req, release)
	unlockWS()
	unlockSB()
	if boot {
		m.startWorker(sb.ID)
	}
	if err != nil {
		return nil, err
	}
	return sb, nil
}

func (m *Manager) revertLocked(ctx context.Context, sb *store.Sandbox, w *store.Workspace, req api.RevertRequest, admitted func()) (boot bool, err error) {
	const op = "revert"
	v, err := m.snapshotVM(ctx, sb, op, false)
	if err != nil {
		return false, err
	}
	snaps, err := m.apiSnapshots(ctx, sb)
	if err != nil {
		return false, err
	}
	i := findSnap(snaps, CleanSnapshot)
	if i < 0 {
		return false, m.noClean(ctx, sb)
	}
	// Before anything changes (newer snapshots deleted, the guest shut down).
	want, err := m.rollbackTarget(ctx, sb, op, CleanSnapshot, admitted)
	if err != nil {
		return false, err
	}
	var newer []string
	for _, s := range snaps[i+1:] {
		newer = append(newer, s.Name)
	}
	if len(newer) > 0 {
		zfs, err := m.onZFS(ctx, v)
		if err != nil {
			return false, proxmoxError(op, sb, err)
		}
		if zfs && !req.DeleteNewer {
			return false, newerError(sb, newer)
		}
		if zfs {
			// Newest first: each delete leaves the next one the most recent.
			for j := len(newer) - 1; j >= 0; j-- {
				if err := v.DeleteSnapshot(ctx, newer[j]); err != nil {
					return false, proxmoxError("delete snapshot "+newer[j]+" of", sb, err)
				}
				_ = m.store.AddEvent(ctx, sb, store.Event{Kind: "sandbox.snapshot_deleted", Message: "snapshot " + newer[j] + " (newer than clean, deleted for the revert on ZFS)"})
			}
		}
	}
	wasRunning := sb.State == api.StateRunning
	if wasRunning {
		// A clean shutdown before the workspace is unplugged: the guest
		// unmounts it instead of losing it under its feet.
		if err := v.Shutdown(ctx, m.opts.ShutdownTimeout); err != nil && !errors.Is(err, pve.ErrNotFound) {
			return false, proxmoxError(op, sb, err)
		}
		sb.IP, sb.Step = "", ""
		if err := m.save(ctx, sb, api.StateStopped, "sandbox.stop", "stopped for the revert to "+CleanSnapshot); err != nil {
			return false, conflict(sb, err)
		}
	}
	if w != nil {
		// The claim stays and is journaled as an attach: whatever happens
		// next, the workspace must end plugged into this sandbox again.
		if err := m.ws.Journal(ctx, w, workspace.StepAttach); err != nil {
			return false, err
		}
		if err := m.ws.Unplug(ctx, w, v); err != nil {
			return false, proxmoxError(op, sb, err)
		}
	}
	// Journaled before Proxmox is asked: once the rollback task runs, the
	// guest's disks are from before its first boot whether or not agentd
	// hears back (a lost answer, a crash), and the guest makes new SSH host
	// keys at that boot. So the next boot delivers the bootstrap again and
	// the pin goes now; had it stayed, host_key_changed would lock ssh out
	// for good (a pin is never replaced). A rollback that did not happen
	// costs a fresh bootstrap file and a re-read of the same key.
	sb.Step = stepRevertBoot
	if err := m.store.ForgetHostKey(ctx, sb, store.Event{Kind: "sandbox.host_key_forgotten",
		Message: "the revert discards the guest's SSH host keys (created at its first boot); the next agentd sandbox hostkey or ssh pins the new key, read through the guest agent"}); err != nil {
		return false, err
	}
	if err := m.store.Save(ctx, sb, sb.State, store.Event{Kind: "sandbox.revert_started", Message: "rolling back to snapshot " + CleanSnapshot}); err != nil {
		return false, conflict(sb, err)
	}
	rbErr := v.Rollback(ctx, CleanSnapshot)
	if w != nil {
		if err := m.replug(ctx, sb, w); err != nil {
			if rbErr != nil {
				return false, proxmoxError(op, sb, fmt.Errorf("%v; and re-attaching workspace %s failed (reconcile retries it): %w", rbErr, w.Name, err))
			}
			return false, proxmoxError(op, sb, fmt.Errorf("rolled back, but re-attaching workspace %s failed (reconcile retries it): %w", w.Name, err))
		}
	}
	if rbErr != nil {
		err := proxmoxError(op, sb, rbErr)
		if errors.Is(rbErr, pve.ErrSnapshotNotRecent) {
			err = newerError(sb, newer)
		}
		// Nothing was rolled back: a sandbox shut down for it runs again.
		return wasRunning && m.restartAfter(ctx, sb, "the revert failed: "+rbErr.Error()), err
	}
	// The VM has the snapshot's config now; saved with the event below.
	sb.Cores, sb.MemoryMB = want.Cores, want.MemoryMB
	if err := m.reapplyIdentity(ctx, sb); err != nil {
		return false, proxmoxError(op, sb, fmt.Errorf("rolled back, but writing the sandbox's name and tags again failed (revert again): %w", err))
	}
	st, err := m.pve.On(sb.Node).Status(ctx, sb.VMID)
	if err != nil {
		return false, proxmoxError(op, sb, err)
	}
	msg := "reverted to snapshot " + CleanSnapshot + " (the disks as before the first boot; later changes discarded"
	if w != nil {
		msg += "; workspace " + w.Name + " kept and attached again"
	}
	msg += ")"
	if st.Status == "running" || wasRunning {
		// Back to the power state it had; the boot delivers a new bootstrap
		// (the reverted guest never received one).
		if a, err := m.store.Address(ctx, sb.ID); err == nil {
			sb.IP = a.String()
		}
		sb.Step, sb.Error = stepRevertBoot, ""
		return true, conflict(sb, m.save(ctx, sb, api.StateBooting, "sandbox.reverted", msg+"; starting"))
	}
	sb.Step = stepRevertBoot // the next start delivers the bootstrap
	return false, conflict(sb, m.store.Save(ctx, sb, sb.State, store.Event{Kind: "sandbox.reverted", Message: msg}))
}

// restartAfter moves a sandbox stopped for a revert that did not happen back
// to BOOTING; it reports whether a worker must now start it.
func (m *Manager) restartAfter(ctx context.Context, sb *store.Sandbox, why string) bool {
	if a, err := m.store.Address(ctx, sb.ID); err == nil {
		sb.IP = a.String()
	}
	// Not stepRestart: a failed rollback may still have run (its answer
	// lost), so the boot delivers the bootstrap as after a revert.
	sb.Step = stepRevertBoot
	return m.save(ctx, sb, api.StateBooting, "sandbox.start", why+"; starting it again") == nil
}

// replug plugs w into sb's VM again after a rollback and settles the claim.
func (m *Manager) replug(ctx context.Context, sb *store.Sandbox, w *store.Workspace) error {
	v, err := m.vm(ctx, sb)
	if err == nil && v == nil {
		err = fmt.Errorf("VM %d does not exist", sb.VMID)
	}
	if err != nil {
		return err
	}
	if err := m.ws.Plug(ctx, w, v); err != nil {
		return err
	}
	return m.ws.Settle(ctx, w, "workspace.attached", fmt.Sprintf("attached to sandbox %s as %s again after the revert", sb.Name, w.AttachKey))
}

// noClean explains a sandbox without a clean snapshot.
func (m *Manager) noClean(ctx context.Context, sb *store.Sandbox) error {
	why := "it was created before agentd took clean snapshots, or the snapshot was deleted"
	if p := m.profiles[sb.Profile]; p != nil && !p.Behavior.TakesCleanSnapshot() {
		why = "its profile " + sb.Profile + " has behavior.clean_snapshot: false"
	} else if evs, err := m.store.Events(ctx, store.EventFilter{SandboxID: sb.ID}, 0, 0); err == nil {
		for _, e := range evs {
			if e.Kind == "sandbox.clean_snapshot_skipped" {
				why = e.Message
			}
		}
	}
	return api.Errorf(http.StatusNotFound, api.CodeSnapshotNotFound,
		"sandbox %s has no %q snapshot to revert to: %s; destroy and re-create it (with behavior.clean_snapshot on), or restore one of its own snapshots (agentd sandbox snapshot list %s)",
		sb.Name, CleanSnapshot, why, sb.Name)
}

func newerError(sb *store.Sandbox, newer []string) error {
	return api.Errorf(http.StatusConflict, api.CodeUnsupported,
		"cannot revert sandbox %s: its disks are on ZFS, which rolls back only to the most recent snapshot, and %s %s newer than %s; delete them first (agentd sandbox snapshot delete %s %s) or revert with --delete-newer",
		sb.Name, strings.Join(newer, ", "), plural(len(newer), "is", "are"), CleanSnapshot, sb.Name, newer[len(newer)-1])
}

func plural(n int, one, more string) string {
	if n == 1 {
		return one
	}
	return more
}

// onZFS reports whether a disk the VM owns lives on zfspool storage, whose
// volume_rollback_is_possible refuses any snapshot but the most recent.
func (m *Manager) onZFS(ctx context.Context, v *owner.VM) (bool, error) {
	sts, err := m.pve.Storages(ctx)
	if err != nil {
		return false, err
	}
	zfs := map[string]bool{}
	for _, s := range sts {
		zfs[s.Storage] = s.Type == "zfspool"
	}
	foreign := map[string]bool{}
	for _, f := range foreignDisks(v.Config, v.VMID()) {
		k, _, _ := strings.Cut(f, " = ")
		foreign[k] = true
	}
	for k := range v.Config {
		if !diskKeyRE.MatchString(k) || foreign[k] {
			continue
		}
		if sid, _, ok := strings.Cut(pve.DiskVolume(v.Config, k), ":"); ok && zfs[sid] {
			return true, nil
		}
	}
	return false, nil
}

// ResumeHibernated resumes a SUSPENDED sandbox (→ BOOTING → RUNNING); any
// other state is refused with what to do instead.
func (m *Manager) ResumeHibernated(ctx context.Context, ref string) (*store.Sandbox, error) {
	sb, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	if sb.State != api.StateSuspended {
		unlock()
		hint := ""
		switch sb.State {
		case api.StateStopped:
			hint = "; it is not hibernated, start it (agentd sandbox start " + sb.Name + ")"
		case api.StateRunning, api.StateBooting, api.StateReady:
			hint = "; it is already running"
		}
		return nil, api.Errorf(http.StatusConflict, api.CodeInvalidState, "cannot resume sandbox %s: it is %s, only a SUSPENDED (hibernated) sandbox can be resumed%s", sb.Name, sb.State, hint)
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

// reapplyIdentity writes the sandbox's name and tags again after a
// rollback. PVE's snapshot_apply_config restores every config key of the
// snapshot but the description: a sandbox that was a warm-pool member when
// its clean snapshot was taken would get the member's name (its id) and
// the pool tag back, without its own tags.
func (m *Manager) reapplyIdentity(ctx context.Context, sb *store.Sandbox) error {
	v, err := m.vm(ctx, sb)
	if err == nil && v == nil {
		err = fmt.Errorf("VM %d does not exist", sb.VMID)
	}
	if err != nil {
		return err
	}
	return m.restoreIdentity(ctx, v, sb)
}

// restoreIdentity writes whichever of name and tags v's config (as proven)
// lacks. The boot after a revert runs it too: a rollback whose answer was
// lost (or a crash) happened without reapplyIdentity.
func (m *Manager) restoreIdentity(ctx context.Context, v *owner.VM, sb *store.Sandbox) error {
	var diff []pve.Option
	for _, o := range []pve.Option{{Name: "name", Value: m.proof(sb).VMName()}, {Name: "tags", Value: strings.Join(append([]string{OwnerTag}, sb.Tags...), ";")}} {
		if !hasOption(v.Config, o) {
			diff = append(diff, o)
		}
	}
	if len(diff) == 0 {
		return nil
	}
	return v.Configure(ctx, diff...)
}
