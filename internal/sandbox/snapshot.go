package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

// Sandbox snapshots are Proxmox snapshots of the sandbox's VM. A VM snapshot
// covers every disk in the VM's config, including a workspace volume that the
// sandbox only references (the holder VM owns it): snapshotting it would put
// a snapshot onto the holder's volume behind the holder's back (breaking the
// workspace's own snapshot chain, on ZFS for good), and a rollback would roll
// the workspace back too. So while any volume the sandbox does not own is
// plugged in, create and restore are refused (409 workspace_attached); the
// workspace is detached first and attached again afterwards. Delete is
// allowed: PVE deletes a snapshot from the disks recorded in the snapshot,
// which never include a workspace.

// foreignDisks lists the disk keys of cfg whose volume is owned by another
// VMID than vmid (a workspace holder's, or anyone's): the proof that a
// snapshot would reach beyond the sandbox, read from Proxmox rather than the
// database so that the two cannot disagree.
func foreignDisks(cfg map[string]any, vmid int) []string {
	var out []string
	for k := range cfg {
		if !diskKeyRE.MatchString(k) {
			continue
		}
		vol := pve.DiskVolume(cfg, k)
		if vol == "" || vol == "none" || !strings.Contains(vol, ":") {
			continue
		}
		name := vol[strings.LastIndex(vol, "/")+1:]
		name = name[strings.Index(name, ":")+1:]
		m := volOwnerRE.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		if owner, _ := strconv.Atoi(m[1]); owner != vmid {
			out = append(out, k+" = "+vol)
		}
	}
	sort.Strings(out)
	return out
}

var (
	diskKeyRE  = regexp.MustCompile(`^(scsi|virtio|sata|ide)\d+$|^efidisk0$|^tpmstate0$`)
	volOwnerRE = regexp.MustCompile(`^(?:vm|base)-(\d+)-`)
)

// snapshotVM proves sb's VM for a snapshot operation; the caller holds the lock.
func (m *Manager) snapshotVM(ctx context.Context, sb *store.Sandbox, op string, whole bool) (*owner.VM, error) {
	switch sb.State {
	case api.StateRunning, api.StateStopped:
	default:
		return nil, invalidState(sb, op, api.StateRunning, api.StateStopped)
	}
	v, err := m.vm(ctx, sb)
	if errors.Is(err, owner.ErrNotOwned) {
		return nil, m.lost(ctx, sb, op, err)
	}
	if err == nil && v == nil {
		err = fmt.Errorf("VM %d does not exist", sb.VMID)
	}
	if err != nil {
		return nil, proxmoxError(op, sb, err)
	}
	if whole {
		if f := foreignDisks(v.Config, sb.VMID); len(f) > 0 || sb.Workspace != "" {
			what := "workspace " + sb.Workspace
			if sb.Workspace == "" {
				what = "a volume it does not own (" + strings.Join(f, ", ") + ")"
			}
			detach := "agentd workspace detach " + sb.Workspace
			if sb.Workspace == "" {
				detach = "remove it from the VM"
			}
			return nil, api.Errorf(http.StatusConflict, api.CodeAttached,
				"cannot %s sandbox %s while %s is attached: a Proxmox VM snapshot covers every disk, so it would also snapshot (or roll back) a volume the sandbox does not own; detach it first (%s), then attach it again",
				op, sb.Name, what, detach)
		}
	}
	return v, nil
}

// rollbackTarget reads the config snapshot snap recorded, which a rollback
// makes the VM's, and refuses the rollback when it would break a rule: a
// volume the sandbox does not own (rollbackReachesForeign), or more cores or
// memory than the team's quota has room for (checkRollback). It returns the
// cores and memory the sandbox has after the rollback.
//
// A rollback that grows the sandbox reserves the room at once: the row
// takes the snapshot's cores and memory before Proxmox is asked, so that
// admitted (the admission lock, taken by the caller) can be released here
// rather than held through a rollback and a boot. Should the rollback not
// happen, the row counts too much until reconcile reads the VM's config
// back (its "resized" drift): the safe side of a quota.
func (m *Manager) rollbackTarget(ctx context.Context, sb *store.Sandbox, op, snap string, admitted func()) (resources, error) {
	defer admitted()
	cfg, err := m.pve.On(sb.Node).SnapshotConfig(ctx, sb.VMID, snap)
	if err != nil {
		return resources{}, proxmoxError(op, sb, err)
	}
	if err := rollbackReachesForeign(cfg, sb, op, snap); err != nil {
		return resources{}, err
	}
	want := readResources(cfg)
	if err := m.checkRollback(ctx, sb, snap, want); err != nil {
		return resources{}, err
	}
	if want.Cores > sb.Cores || want.MemoryMB > sb.MemoryMB {
		prev := *sb
		sb.Cores, sb.MemoryMB = max(sb.Cores, want.Cores), max(sb.MemoryMB, want.MemoryMB)
		if err := m.store.Save(ctx, sb, sb.State, store.Event{Kind: "sandbox.rollback_admitted",
			Message: fmt.Sprintf("the %s to snapshot %s brings back %d cores, %d MiB: counted against the team's quota from now", op, snap, want.Cores, want.MemoryMB)}); err != nil {
			*sb = prev
			return resources{}, conflict(sb, err)
		}
	}
	return want, nil
}

// rollbackReachesForeign refuses a rollback to a snapshot whose recorded
// config holds a volume the sandbox does not own. agentd never takes one
// (snapshots are refused while a workspace is attached, clean is taken before
// it is plugged), but a snapshot taken in Proxmox by hand can: PVE's
// snapshot_rollback rolls back every volume of the snapshot's config and
// plugs them in again, which would roll a workspace back and attach it
// behind its claim. Checking the current config is not enough for that.
func rollbackReachesForeign(cfg map[string]any, sb *store.Sandbox, op, snap string) error {
	f := foreignDisks(cfg, sb.VMID)
	if len(f) == 0 {
		return nil
	}
	return api.Errorf(http.StatusConflict, api.CodeAttached,
		"cannot %s sandbox %s to snapshot %s: it was taken (outside agentd) with a volume the sandbox does not own (%s), and a rollback would roll that volume back too and plug it in again; delete the snapshot (agentd sandbox snapshot delete %s %s) and use another one",
		op, sb.Name, snap, strings.Join(f, ", "), sb.Name, snap)
}

func (m *Manager) apiSnapshots(ctx context.Context, sb *store.Sandbox) ([]api.SandboxSnapshot, error) {
	snaps, err := m.pve.On(sb.Node).Snapshots(ctx, sb.VMID)
	if err != nil {
		return nil, proxmoxError("list snapshots of", sb, err)
	}
	out := []api.SandboxSnapshot{}
	for _, s := range snaps {
		out = append(out, api.SandboxSnapshot{Sandbox: sb.Name, Name: s.Name, Description: s.Description,
			WithMemory: s.VMState, Parent: s.Parent, CreatedAt: s.Time.UTC()})
	}
	return out, nil
}

func findSnap(snaps []api.SandboxSnapshot, name string) int {
	for i, s := range snaps {
		if s.Name == name {
			return i
		}
	}
	return -1
}

func snapNotFound(sb *store.Sandbox, name string) error {
	return api.Errorf(http.StatusNotFound, api.CodeSnapshotNotFound, "sandbox %s has no snapshot %q (see: agentd sandbox snapshot list %s)", sb.Name, name, sb.Name)
}

// Snapshots lists the snapshots of a sandbox's VM, oldest first.
func (m *Manager) Snapshots(ctx context.Context, ref string) ([]api.SandboxSnapshot, error) {
	sb, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if sb.VMID == 0 || sb.State.Terminal() {
		return nil, invalidState(sb, "list snapshots of", api.StateRunning, api.StateStopped, api.StateSuspended)
	}
	// Even a read: a foreign VM's snapshots are not this sandbox's.
	if _, err := m.vm(ctx, sb); errors.Is(err, owner.ErrNotOwned) {
		return nil, m.lost(ctx, sb, "list snapshots of", err)
	} else if err != nil {
		return nil, proxmoxError("list snapshots of", sb, err)
	}
	return m.apiSnapshots(ctx, sb)
}

// CreateSnapshot snapshots a RUNNING or STOPPED sandbox without a workspace
// attached; WithMemory also saves the RAM of a running one.
func (m *Manager) CreateSnapshot(ctx context.Context, ref string, req api.CreateSandboxSnapshotRequest) (*api.SandboxSnapshot, error) {
	if err := validate.SnapshotName("name", req.Name); err != nil {
		return nil, api.Invalid(err)
	}
	if len(req.Description) > 1024 {
		return nil, api.FieldError("description", "is %d bytes; at most 1024", len(req.Description))
	}
	sb, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if req.WithMemory && sb.State != api.StateRunning {
		return nil, api.FieldError("with_memory", "sandbox %s is %s; only a RUNNING sandbox has memory to save", sb.Name, sb.State)
	}
	// The agent's context: a client that disconnects must not leave a
	// snapshot half made with nobody to report it.
	wctx, cancel := context.WithTimeout(m.ctx, 30*time.Minute)
	defer cancel()
	v, err := m.snapshotVM(wctx, sb, "snapshot", true)
	if err != nil {
		return nil, err
	}
	snaps, err := m.apiSnapshots(wctx, sb)
	if err != nil {
		return nil, err
	}
	if findSnap(snaps, req.Name) >= 0 {
		return nil, api.Errorf(http.StatusConflict, api.CodeConflict, "sandbox %s already has a snapshot %q", sb.Name, req.Name)
	}
	if err := v.SnapshotVM(wctx, req.Name, req.Description, req.WithMemory); err != nil {
		if errors.Is(err, pve.ErrUnsupported) {
			return nil, api.Errorf(http.StatusConflict, api.CodeUnsupported,
				"sandbox %s cannot be snapshotted: a disk's storage does not support snapshots (raw volumes on dir storage cannot; use lvmthin, zfspool or qcow2 on dir for the profile): %v", sb.Name, err)
		}
		return nil, proxmoxError("snapshot", sb, err)
	}
	if snaps, err = m.apiSnapshots(wctx, sb); err != nil {
		return nil, err
	}
	i := findSnap(snaps, req.Name)
	if i < 0 {
		return nil, proxmoxError("snapshot", sb, fmt.Errorf("Proxmox reported success but lists no snapshot %q", req.Name))
	}
	what := "disks"
	if req.WithMemory {
		what = "disks and memory"
	}
	_ = m.store.AddEvent(wctx, sb, store.Event{Kind: "sandbox.snapshot_created", Message: fmt.Sprintf("snapshot %s (%s)", req.Name, what)})
	return &snaps[i], nil
}

// RestoreSnapshot rolls a sandbox's VM back to a snapshot (everything since
// is lost) and re-reads its power state: a snapshot with memory resumes the
// VM (a STOPPED sandbox boots again through the start path, a RUNNING one
// stays RUNNING once its guest answers at its address); a disk-only snapshot
// leaves the VM stopped, so the sandbox is STOPPED.
func (m *Manager) RestoreSnapshot(ctx context.Context, ref, name string) (*store.Sandbox, error) {
	if err := validate.SnapshotName("name", name); err != nil {
		return nil, api.Invalid(err)
	}
	// The snapshot may bring back more cores or memory (checkRollback):
	// the admission lock first, in the order a create takes them.
	release, err := m.admitResize(ctx, ref)
	if err != nil {
		return nil, err
	}
	release = sync.OnceFunc(release)
	defer release()
	sb, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(m.ctx, 30*time.Minute)
	defer cancel()
	boot, err := m.restoreLocked(wctx, sb, name, release)
	unlock()
	if err != nil {
		return nil, err
	}
	if boot {
		m.startWorker(sb.ID)
	}
	return sb, nil
}

func (m *Manager) restoreLocked(ctx context.Context, sb *store.Sandbox, name string, admitted func()) (boot bool, err error) {
	v, err := m.snapshotVM(ctx, sb, "restore a snapshot of", true)
	if err != nil {
		return false, err
	}
	snaps, err := m.apiSnapshots(ctx, sb)
	if err != nil {
		return false, err
	}
	i := findSnap(snaps, name)
	if i < 0 {
		return false, snapNotFound(sb, name)
	}
	want, err := m.rollbackTarget(ctx, sb, "restore", name, admitted)
	if err != nil {
		return false, err
	}
	if err := v.Rollback(ctx, name); err != nil {
		if errors.Is(err, pve.ErrSnapshotNotRecent) {
			var newer []string
			for _, s := range snaps[i+1:] {
				newer = append(newer, s.Name)
			}
			return false, api.Errorf(http.StatusConflict, api.CodeUnsupported,
				"sandbox %s is on ZFS, which rolls back only to the most recent snapshot; delete the newer snapshot(s) first: %s", sb.Name, strings.Join(newer, ", "))
		}
		return false, proxmoxError("restore a snapshot of", sb, err)
	}
	// The VM has the snapshot's config now: the row (and the team's usage)
	// counts its cores and memory from here, saved with the event below.
	sb.Cores, sb.MemoryMB = want.Cores, want.MemoryMB
	st, err := m.pve.On(sb.Node).Status(ctx, sb.VMID)
	if err != nil {
		return false, proxmoxError("restore a snapshot of", sb, err)
	}
	msg := fmt.Sprintf("rolled back to snapshot %s (later changes discarded)", name)
	switch {
	case st.Status == "running" && sb.State == api.StateRunning:
		// The address is static (IPAM), but the restored guest must answer
		// at it before the row says RUNNING with it.
		ipctx, cancel := context.WithTimeout(ctx, m.opts.ProvisioningTimeout)
		ip, err := m.waitIP(ipctx, sb)
		cancel()
		if err != nil {
			sb.Error = "after the rollback: " + err.Error()
			msg += "; the guest does not report its address: " + err.Error()
		} else {
			sb.IP = ip
		}
		return false, conflict(sb, m.store.Save(ctx, sb, sb.State, store.Event{Kind: "sandbox.snapshot_restored", Message: msg + "; memory restored, running"}))
	case st.Status == "running":
		if a, err := m.store.Address(ctx, sb.ID); err == nil {
			sb.IP = a.String()
		}
		sb.Step, sb.Error = stepRestart, ""
		return true, conflict(sb, m.save(ctx, sb, api.StateBooting, "sandbox.snapshot_restored", msg+"; memory restored, waiting for the guest"))
	case sb.State == api.StateRunning:
		sb.IP, sb.Step = "", ""
		return false, conflict(sb, m.save(ctx, sb, api.StateStopped, "sandbox.snapshot_restored", msg+"; a disk-only snapshot leaves the VM stopped (start it)"))
	}
	return false, conflict(sb, m.store.Save(ctx, sb, sb.State, store.Event{Kind: "sandbox.snapshot_restored", Message: msg}))
}

// DeleteSnapshot removes a snapshot of a sandbox's VM.
func (m *Manager) DeleteSnapshot(ctx context.Context, ref, name string) error {
	if err := validate.SnapshotName("name", name); err != nil {
		return api.Invalid(err)
	}
	sb, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return err
	}
	defer unlock()
	wctx, cancel := context.WithTimeout(m.ctx, 30*time.Minute)
	defer cancel()
	v, err := m.snapshotVM(wctx, sb, "delete a snapshot of", false)
	if err != nil {
		return err
	}
	snaps, err := m.apiSnapshots(wctx, sb)
	if err != nil {
		return err
	}
	if findSnap(snaps, name) < 0 {
		return snapNotFound(sb, name)
	}
	if err := v.DeleteSnapshot(wctx, name); err != nil {
		return proxmoxError("delete a snapshot of", sb, err)
	}
	_ = m.store.AddEvent(wctx, sb, store.Event{Kind: "sandbox.snapshot_deleted", Message: "snapshot " + name})
	return nil
}
