package workspace

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

// locked fetches a workspace by ref and locks it; the caller must unlock.
func (m *Manager) locked(ctx context.Context, ref string) (*store.Workspace, func(), error) {
	w, err := m.Get(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	unlock, err := m.LockAPI(ctx, w)
	if err != nil {
		return nil, nil, err
	}
	if w, err = m.store.Workspace(ctx, w.ID); err != nil {
		unlock()
		return nil, nil, err
	}
	return w, unlock, nil
}

// Snapshots lists a workspace's snapshots (its holder's), oldest first.
func (m *Manager) Snapshots(ctx context.Context, ref string) ([]api.Snapshot, error) {
	w, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	// Even a read: a foreign VM's snapshots are not this workspace's.
	if _, err := m.holder(ctx, w, "list snapshots of"); err != nil {
		return nil, err
	}
	snaps, err := m.pve.On(w.Node).Snapshots(ctx, w.HolderVMID)
	if err != nil {
		return nil, proxmoxErr("list snapshots of", w, err)
	}
	out := []api.Snapshot{}
	for _, s := range snaps {
		out = append(out, api.Snapshot{Workspace: w.Name, Name: s.Name, Description: s.Description, CreatedAt: s.Time.UTC()})
	}
	return out, nil
}

func snapshotNotFound(w *store.Workspace, name string) error {
	return api.Errorf(http.StatusNotFound, api.CodeSnapshotNotFound, "workspace %s has no snapshot %q", w.Name, name)
}

func (m *Manager) findSnapshot(ctx context.Context, w *store.Workspace, name string) ([]pve.Snapshot, int, error) {
	snaps, err := m.pve.On(w.Node).Snapshots(ctx, w.HolderVMID)
	if err != nil {
		return nil, -1, proxmoxErr("list snapshots of", w, err)
	}
	for i, s := range snaps {
		if s.Name == name {
			return snaps, i, nil
		}
	}
	return snaps, -1, snapshotNotFound(w, name)
}

// CreateSnapshot snapshots a detached workspace.
func (m *Manager) CreateSnapshot(ctx context.Context, ref string, req api.CreateSnapshotRequest) (*api.Snapshot, error) {
	if err := validate.SnapshotName("name", req.Name); err != nil {
		return nil, api.Invalid(err)
	}
	w, unlock, err := m.locked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := requireDetached(w, "snapshot"); err != nil {
		return nil, err
	}
	v, err := m.holderFollowing(ctx, w, "snapshot")
	if err != nil {
		return nil, err
	}
	if _, i, _ := m.findSnapshot(ctx, w, req.Name); i >= 0 {
		return nil, api.Errorf(http.StatusConflict, api.CodeConflict, "workspace %s already has a snapshot %q", w.Name, req.Name)
	}
	if err := v.CreateSnapshot(ctx, req.Name, req.Description); err != nil {
		if errors.Is(err, pve.ErrUnsupported) {
			return nil, api.Errorf(http.StatusConflict, api.CodeUnsupported,
				"workspace %s cannot be snapshotted: its storage %s does not support snapshots (raw volumes on dir storage cannot; use lvmthin, zfspool or qcow2 on dir): %v", w.Name, w.Storage, err)
		}
		return nil, proxmoxErr("snapshot", w, err)
	}
	snaps, i, err := m.findSnapshot(ctx, w, req.Name)
	if err != nil {
		return nil, err
	}
	m.event(ctx, w, "workspace.snapshot_created", "snapshot "+req.Name)
	return &api.Snapshot{Workspace: w.Name, Name: req.Name, Description: snaps[i].Description, CreatedAt: snaps[i].Time.UTC()}, nil
}

func (m *Manager) event(ctx context.Context, w *store.Workspace, kind, msg string) {
	prev := *w
	_ = m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: kind, Message: msg})
}

// RestoreSnapshot rolls a detached workspace back to a snapshot. It is
// destructive: everything written since the snapshot is lost.
func (m *Manager) RestoreSnapshot(ctx context.Context, ref, name string) (*api.Snapshot, error) {
	w, unlock, err := m.locked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := requireDetached(w, "restore"); err != nil {
		return nil, err
	}
	v, err := m.holderFollowing(ctx, w, "restore")
	if err != nil {
		return nil, err
	}
	snaps, i, err := m.findSnapshot(ctx, w, name)
	if err != nil {
		return nil, err
	}
	if err := v.Rollback(ctx, name); err != nil {
		if errors.Is(err, pve.ErrSnapshotNotRecent) {
			var newer []string
			for _, s := range snaps[i+1:] {
				newer = append(newer, s.Name)
			}
			return nil, api.Errorf(http.StatusConflict, api.CodeUnsupported,
				"workspace %s is on ZFS, which rolls back only to the most recent snapshot; delete the newer snapshot(s) first: %s", w.Name, strings.Join(newer, ", "))
		}
		return nil, proxmoxErr("restore", w, err)
	}
	m.event(ctx, w, "workspace.snapshot_restored", "rolled back to "+name+" (later changes discarded)")
	return &api.Snapshot{Workspace: w.Name, Name: name, Description: snaps[i].Description, CreatedAt: snaps[i].Time.UTC()}, nil
}

// DeleteSnapshot removes a snapshot.
func (m *Manager) DeleteSnapshot(ctx context.Context, ref, name string) error {
	w, unlock, err := m.locked(ctx, ref)
	if err != nil {
		return err
	}
	defer unlock()
	if err := notMoving(w, "delete a snapshot of"); err != nil {
		return err
	}
	v, err := m.holderFollowing(ctx, w, "delete a snapshot of")
	if err != nil {
		return err
	}
	if _, _, err := m.findSnapshot(ctx, w, name); err != nil {
		return err
	}
	if err := v.DeleteSnapshot(ctx, name); err != nil {
		return proxmoxErr("delete snapshot of", w, err)
	}
	m.event(ctx, w, "workspace.snapshot_deleted", "snapshot "+name)
	return nil
}

// Fork makes a new workspace whose volume is a full copy of src's (of its
// snapshot when FromSnapshot is set): a full clone of the holder.
func (m *Manager) Fork(ctx context.Context, ref string, req api.ForkRequest) (*store.Workspace, error) {
	if err := validate.WorkspaceName("name", req.Name); err != nil {
		return nil, api.Invalid(err)
	}
	if req.FromSnapshot != "" {
		if err := validate.SnapshotName("from_snapshot", req.FromSnapshot); err != nil {
			return nil, api.Invalid(err)
		}
	}
	if req.Storage != "" {
		if err := m.Storage("storage", req.Storage); err != nil {
			return nil, err
		}
	}
	src, unlock, err := m.locked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Even from a snapshot, which needs no detach: the clone reads the
	// holder on the node the row names, which it may be leaving.
	if err := notMoving(src, "fork"); err != nil {
		return nil, err
	}
	srcVM, err := m.holderFollowing(ctx, src, "fork")
	if err != nil {
		return nil, err
	}
	if req.FromSnapshot == "" {
		if err := requireDetached(src, "fork"); err != nil {
			return nil, fmt.Errorf("%w (or fork from a snapshot)", err)
		}
	} else if _, _, err := m.findSnapshot(ctx, src, req.FromSnapshot); err != nil {
		return nil, err
	}
	storage := req.Storage
	if storage == "" {
		storage = src.Storage
	}
	// A fork belongs to its source's team, whoever asks.
	ctx = auth.For(ctx, src.Team)
	release, err := m.admitGB(ctx, src.Team, src.SizeGB, "the fork "+req.Name)
	if err != nil {
		return nil, err
	}
	w := &store.Workspace{ID: newID(), Name: req.Name, Team: src.Team, Node: src.Node, State: store.WorkspaceCreating, Step: "allocate_vmid",
		Storage: storage, SizeGB: src.SizeGB, DiskKey: src.DiskKey}
	msg := "fork of " + src.Name
	if req.FromSnapshot != "" {
		msg += " at snapshot " + req.FromSnapshot
	}
	err = m.store.CreateWorkspace(ctx, w, store.Event{Kind: "workspace.requested", Message: msg})
	release()
	if errors.Is(err, store.ErrConflict) {
		return nil, api.Errorf(http.StatusConflict, api.CodeConflict, "workspace %q already exists", req.Name)
	}
	if err != nil {
		return nil, err
	}
	defer m.Lock(w.ID)()
	opts := pve.CloneOptions{Full: true, Snapshot: req.FromSnapshot}
	if storage != src.Storage {
		opts.Storage = storage
	}
	for attempt := 1; ; attempt++ {
		if err = m.reserve(ctx, w, "clone_holder"); err != nil {
			break
		}
		err = srcVM.CloneTo(ctx, m.guard, m.proof(w), opts)
		if !errors.Is(err, pve.ErrExists) || attempt == maxAllocAttempts {
			break
		}
		if err = m.releaseVMID(ctx, w, err); err != nil {
			break
		}
	}
	if err == nil {
		// build tags the clone (the clone request carried the proof).
		err = m.build(ctx, w)
	}
	if err != nil {
		m.abandon(w, err)
		if errors.Is(err, pve.ErrUnsupported) {
			return nil, api.Errorf(http.StatusConflict, api.CodeUnsupported,
				"cannot fork workspace %s: %v (ZFS cannot copy from a snapshot; fork without --from-snapshot, or restore first)", src.Name, err)
		}
		return nil, proxmoxErr("fork", src, err)
	}
	m.event(ctx, src, "workspace.forked", "forked into "+w.Name)
	return w, nil
}

// SandboxVM is where a live sandbox's VM is: on a cluster its config is
// only readable through the node it runs on.
type SandboxVM struct {
	VMID int
	Node string
}

// Check compares the row with Proxmox and reports every mismatch. sandboxes
// maps the live sandboxes' ids to their VMs, to find references the
// database does not know about.
func (m *Manager) Check(ctx context.Context, ref string, sandboxes map[string]SandboxVM) (*api.CheckResult, error) {
	w, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	res := &api.CheckResult{Workspace: m.API(ctx, w, false), Findings: []api.Finding{}}
	add := func(code, format string, args ...any) {
		res.Findings = append(res.Findings, api.Finding{Code: code, Message: fmt.Sprintf(format, args...)})
	}
	vol := ""
	st, err := m.pve.On(w.Node).Status(ctx, w.HolderVMID)
	switch {
	case errors.Is(err, pve.ErrNotFound):
		add("holder_missing", "holder VM %d does not exist: the workspace's volume is gone or was never created", w.HolderVMID)
	case err != nil:
		return nil, proxmoxErr("check", w, err)
	default:
		if st.Status == "running" {
			add("holder_running", "holder VM %d is running; holders must never be started (stop it: qm stop %d)", w.HolderVMID, w.HolderVMID)
		}
		cfg, err := m.pve.On(w.Node).Config(ctx, w.HolderVMID)
		if err != nil {
			return nil, proxmoxErr("check", w, err)
		}
		if err := m.proof(w).Verify(cfg, true); err != nil {
			add("holder_not_owned", "%v", err)
		}
		vol = pve.DiskVolume(cfg, w.DiskKey)
		if vol == "" {
			add("volume_detached_from_holder", "holder VM %d has no %s: the volume is not owned by the holder any more", w.HolderVMID, w.DiskKey)
		} else {
			vols, err := m.pve.On(w.Node).Volumes(ctx, strings.SplitN(vol, ":", 2)[0], w.HolderVMID)
			if err != nil {
				return nil, proxmoxErr("check", w, err)
			}
			found := false
			for _, v := range vols {
				if v.Volid == vol {
					found = true
					if gb := int(v.Size >> 30); gb != w.SizeGB {
						add("size_mismatch", "volume %s is %d GiB, the database says %d GiB", vol, gb, w.SizeGB)
					}
				}
			}
			if !found {
				add("volume_missing", "volume %s named by holder VM %d does not exist on its storage", vol, w.HolderVMID)
			}
		}
	}
	if w.AttachedSandbox != "" {
		vm, ok := sandboxes[w.AttachedSandbox]
		id := vm.VMID
		if !ok {
			add("attached_to_gone_sandbox", "the database says it is attached to sandbox %s, which is not live", m.sandboxName(ctx, w.AttachedSandbox))
		} else if cfg, err := m.pve.On(vm.Node).Config(ctx, id); err != nil && !errors.Is(err, pve.ErrNotFound) {
			return nil, proxmoxErr("check", w, err)
		} else if err == nil && vol != "" && pve.DiskVolume(cfg, w.AttachKey) != vol {
			add("not_attached_in_proxmox", "the database says it is attached to sandbox %s (VM %d) as %s, but that VM does not reference %s", m.sandboxName(ctx, w.AttachedSandbox), id, w.AttachKey, vol)
		}
	}
	if vol != "" {
		for sbID, vm := range sandboxes {
			if sbID == w.AttachedSandbox {
				continue
			}
			id := vm.VMID
			cfg, err := m.pve.On(vm.Node).Config(ctx, id)
			if err != nil {
				continue
			}
			for k, v := range cfg {
				if s, ok := v.(string); ok && strings.SplitN(s, ",", 2)[0] == vol {
					add("attached_in_proxmox_only", "VM %d (sandbox %s) references the volume as %s, but the database does not record that attachment", id, m.sandboxName(ctx, sbID), k)
				}
			}
		}
	}
	res.OK = len(res.Findings) == 0
	return res, nil
}
