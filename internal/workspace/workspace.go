// Package workspace manages durable workspace volumes with the holder-VM model:
// a never-started VM (ws-<name>, tagged agentlab-workspace) owns the volume;
// sandboxes only reference it, so destroying a sandbox can never free it.
// Snapshots, rollbacks and forks act on the holder, only while detached.
package workspace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/keylock"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
	"github.com/agentlab/terraform-provider-agentlab/internal/vmid"
)

// HolderTag marks holder VMs.
const HolderTag = "agentlab-workspace"

// AttachKey is the drive key a workspace gets on a sandbox.
const AttachKey = "scsi1"

// Manager runs workspace operations.
type Manager struct {
	store          *store.Store
	pve            *pve.Client
	alloc          *vmid.Allocator
	defaultStorage string
	storages       []string    // where a volume may be created: the default first
	locks          keylock.Set // one per workspace id
}

// New builds a manager. Volumes go on defaultStorage unless a request names
// one of the other allowed storages.
func New(st *store.Store, pc *pve.Client, alloc *vmid.Allocator, defaultStorage string, allowed ...string) *Manager {
	storages := []string{defaultStorage}
	for _, s := range allowed {
		if !slices.Contains(storages, s) {
			storages = append(storages, s)
		}
	}
	return &Manager{store: st, pve: pc, alloc: alloc, defaultStorage: defaultStorage, storages: storages}
}

// Storage checks a storage a client asked for (under field) before it can
// reach Proxmox: PVE's id format, and one of the storages agentd may use.
func (m *Manager) Storage(field, s string) error {
	return api.Invalid(validate.Storage(field, s, m.storages))
}

// Lock serialises operations on one workspace in this process (the sandbox
// manager takes it too, always after the sandbox's own lock).
func (m *Manager) Lock(id string) func() { return m.locks.Lock(id) }

func sizeOf(size string, gb int) (int, error) {
	switch {
	case size != "" && gb != 0:
		return 0, api.FieldError("size", "give size or size_gb, not both")
	case size != "":
		n, err := validate.ParseSize("size", size)
		return n, api.Invalid(err)
	case gb == 0:
		return 0, api.FieldError("size", "is required (e.g. 80G)")
	}
	return gb, api.Invalid(validate.SizeGiB("size_gb", int64(gb)))
}

func newID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "ws-" + hex.EncodeToString(b)
}

func marker(w *store.Workspace) string { return "agentlab-workspace-id: " + w.ID }

func description(w *store.Workspace) string {
	return fmt.Sprintf("AgentLab workspace holder: owns the volume of workspace %s. Never start or delete it by hand.\n%s\nagentlab-workspace-name: %s\n",
		w.Name, marker(w), w.Name)
}

// NotFound is the API error for an unknown workspace.
func NotFound(ref string) error {
	return api.Errorf(http.StatusNotFound, api.CodeWorkspaceNotFound, "workspace %q not found", ref)
}

// Get finds a live workspace by name or id.
func (m *Manager) Get(ctx context.Context, ref string) (*store.Workspace, error) {
	w, err := m.store.LookupWorkspace(ctx, ref)
	if errors.Is(err, store.ErrNotFound) {
		return nil, NotFound(ref)
	}
	return w, err
}

// proxmoxErr turns a Proxmox failure into an API error with the storage hint.
func proxmoxErr(op string, w *store.Workspace, err error) error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return err
	}
	switch {
	case errors.Is(err, pve.ErrUnavailable):
		return api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "%s workspace %s: Proxmox is unreachable: %v", op, w.Name, err)
	case errors.Is(err, pve.ErrUnsupported):
		return api.Errorf(http.StatusConflict, api.CodeUnsupported, "%s workspace %s: storage %s does not support this: %v", op, w.Name, w.Storage, err)
	}
	return api.Errorf(http.StatusBadGateway, api.CodeProxmox, "%s workspace %s: %v", op, w.Name, err)
}

// Create allocates a holder VM owning a new volume of the given size.
func (m *Manager) Create(ctx context.Context, req api.CreateWorkspaceRequest) (*store.Workspace, error) {
	if err := validate.WorkspaceName("name", req.Name); err != nil {
		return nil, api.Invalid(err)
	}
	size, err := sizeOf(req.Size, req.SizeGB)
	if err != nil {
		return nil, err
	}
	storage := req.Storage
	if storage == "" {
		storage = m.defaultStorage
	} else if err := m.Storage("storage", storage); err != nil {
		return nil, err
	}
	w := &store.Workspace{ID: newID(), Name: req.Name, State: store.WorkspaceCreating, Step: "allocate_vmid",
		Storage: storage, SizeGB: size, DiskKey: "scsi0"}
	err = m.store.CreateWorkspace(ctx, w, store.Event{Kind: "workspace.requested", Message: fmt.Sprintf("%d GiB on %s", size, storage)})
	if errors.Is(err, store.ErrConflict) {
		return nil, api.Errorf(http.StatusConflict, api.CodeConflict, "workspace %q already exists", req.Name)
	}
	if err != nil {
		return nil, err
	}
	defer m.Lock(w.ID)()
	if err := m.build(ctx, w); err != nil {
		m.abandon(w, err)
		return nil, proxmoxErr("create", w, err)
	}
	return w, nil
}

// build runs (or resumes) the creation of a holder: reserve its VMID, create
// it with its volume, then mark the workspace READY.
func (m *Manager) build(ctx context.Context, w *store.Workspace) error {
	if w.HolderVMID == 0 {
		_, err := m.alloc.Reserve(ctx, func(id int) error {
			prev := *w
			w.HolderVMID, w.Step = id, "create_holder"
			if err := m.store.SaveWorkspace(ctx, w, prev, store.Event{}); err != nil {
				w.HolderVMID, w.Step = 0, prev.Step
				return err
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if _, err := m.pve.Config(ctx, w.HolderVMID); errors.Is(err, pve.ErrNotFound) {
		if _, err := m.pve.HolderVolume(ctx, w.HolderVMID, "ws-"+w.Name, w.Storage, w.SizeGB, []string{HolderTag}, description(w)); err != nil {
			return err
		}
	} else if err != nil {
		return err
	} else if err := m.owned(ctx, w); err != nil {
		return err
	}
	prev := *w
	w.State, w.Step = store.WorkspaceReady, ""
	return m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.created",
		Message: fmt.Sprintf("holder VM %d owns a %d GiB volume on %s", w.HolderVMID, w.SizeGB, w.Storage)})
}

// abandon removes what a failed create made and retires the row.
func (m *Manager) abandon(w *store.Workspace, cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	msg := cause.Error()
	if w.HolderVMID != 0 {
		if err := m.destroyHolder(ctx, w); err != nil {
			msg += fmt.Sprintf("; removing holder VM %d failed: %v", w.HolderVMID, err)
		}
	}
	prev := *w
	w.State, w.Error = store.WorkspaceDeleted, msg
	_ = m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.create_failed", Message: msg})
}

var errNotOwned = errors.New("not a holder of this workspace")

// owned proves the holder VM belongs to w (tag and id in the description).
func (m *Manager) owned(ctx context.Context, w *store.Workspace) error {
	cfg, err := m.pve.Config(ctx, w.HolderVMID)
	if err != nil {
		return err
	}
	desc, _ := cfg["description"].(string)
	tags, _ := cfg["tags"].(string)
	if !strings.Contains(desc, marker(w)) || !strings.Contains(";"+tags+";", ";"+HolderTag+";") {
		return fmt.Errorf("VM %d lacks the %s tag or this workspace's id: %w", w.HolderVMID, HolderTag, errNotOwned)
	}
	return nil
}

func (m *Manager) destroyHolder(ctx context.Context, w *store.Workspace) error {
	err := m.owned(ctx, w)
	if errors.Is(err, pve.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	err = m.pve.Destroy(ctx, w.HolderVMID)
	if errors.Is(err, pve.ErrNotFound) {
		return nil
	}
	return err
}

// Volume reads the holder's volume id from Proxmox (never cached: Proxmox
// renames volumes on some operations).
func (m *Manager) Volume(ctx context.Context, w *store.Workspace) (string, error) {
	cfg, err := m.pve.Config(ctx, w.HolderVMID)
	if err != nil {
		return "", err
	}
	vol := pve.DiskVolume(cfg, w.DiskKey)
	if vol == "" {
		return "", fmt.Errorf("holder VM %d has no %s: the workspace volume is missing", w.HolderVMID, w.DiskKey)
	}
	return vol, nil
}

// Claim records in the store that sandboxID uses the workspace (compare-and-
// set: at most one sandbox). sessionID may use a workspace its session reserved.
func (m *Manager) Claim(ctx context.Context, w *store.Workspace, sandboxID, sessionID string) error {
	if w.AttachedSandbox == sandboxID {
		return nil
	}
	if err := m.Busy(ctx, w, sandboxID, sessionID); err != nil {
		return err
	}
	prev := *w
	w.AttachedSandbox, w.AttachKey = sandboxID, AttachKey
	err := m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.claimed", Message: "claimed by sandbox " + m.sandboxName(ctx, sandboxID)})
	if errors.Is(err, store.ErrStale) || errors.Is(err, store.ErrConflict) {
		*w = prev
		return api.Errorf(http.StatusConflict, api.CodeAttached, "workspace %s or the sandbox changed concurrently; retry", w.Name)
	}
	return err
}

// Busy explains why sandboxID (of session sessionID) cannot use w, or is nil.
func (m *Manager) Busy(ctx context.Context, w *store.Workspace, sandboxID, sessionID string) error {
	switch {
	case w.State != store.WorkspaceReady:
		return api.Errorf(http.StatusConflict, api.CodeInvalidState, "workspace %s is %s", w.Name, w.State)
	case w.AttachedSandbox != "" && w.AttachedSandbox != sandboxID:
		return api.Errorf(http.StatusConflict, api.CodeAttached, "workspace %s is attached to another sandbox (%s); detach it first", w.Name, m.sandboxName(ctx, w.AttachedSandbox))
	case w.ReservedBy != "" && w.ReservedBy != sessionID:
		return api.Errorf(http.StatusConflict, api.CodeReserved, "workspace %s is reserved by session %s; use that session", w.Name, m.sessionName(ctx, w.ReservedBy))
	}
	return nil
}

// Release clears the claim of sandboxID (no-op if it does not hold it).
func (m *Manager) Release(ctx context.Context, w *store.Workspace, sandboxID string) error {
	if w.AttachedSandbox != sandboxID || sandboxID == "" {
		return nil
	}
	prev := *w
	w.AttachedSandbox, w.AttachKey = "", ""
	return m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.released", Message: "released by sandbox " + m.sandboxName(ctx, sandboxID)})
}

// Plug references the holder's volume as AttachKey on vmid.
func (m *Manager) Plug(ctx context.Context, w *store.Workspace, vmid int) error {
	vol, err := m.Volume(ctx, w)
	if err != nil {
		return err
	}
	return m.pve.AttachVolume(ctx, vmid, w.AttachKey, vol)
}

// Unplug removes the reference from vmid, but only if the key really names
// this workspace's volume (never drop a disk we did not put there).
func (m *Manager) Unplug(ctx context.Context, w *store.Workspace, vmid int) error {
	key := w.AttachKey
	if key == "" {
		key = AttachKey
	}
	cfg, err := m.pve.Config(ctx, vmid)
	if errors.Is(err, pve.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	got := pve.DiskVolume(cfg, key)
	if got == "" {
		return nil
	}
	vol, err := m.Volume(ctx, w)
	if err != nil {
		return err
	}
	if got != vol {
		return fmt.Errorf("VM %d's %s is %s, not workspace %s's volume %s; left alone", vmid, key, got, w.Name, vol)
	}
	return m.pve.DetachVolume(ctx, vmid, key)
}

func (m *Manager) sandboxName(ctx context.Context, id string) string {
	if sb, err := m.store.Sandbox(ctx, id); err == nil {
		return sb.Name
	}
	return id
}

func (m *Manager) sessionName(ctx context.Context, id string) string {
	if x, err := m.store.Session(ctx, id); err == nil {
		return x.Name
	}
	return id
}

// API renders a workspace; withVolume reads the current volume id.
func (m *Manager) API(ctx context.Context, w *store.Workspace, withVolume bool) api.Workspace {
	out := api.Workspace{ID: w.ID, Name: w.Name, State: w.State, Storage: w.Storage, SizeGB: w.SizeGB,
		HolderVMID: w.HolderVMID, Error: w.Error, CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt}
	if w.AttachedSandbox != "" {
		out.AttachedSandbox = m.sandboxName(ctx, w.AttachedSandbox)
	}
	if w.ReservedBy != "" {
		out.Session = m.sessionName(ctx, w.ReservedBy)
	}
	if withVolume && w.State == store.WorkspaceReady {
		out.Volume, _ = m.Volume(ctx, w)
	}
	return out
}

func requireDetached(w *store.Workspace, op string) error {
	if w.AttachedSandbox != "" {
		return api.Errorf(http.StatusConflict, api.CodeAttached, "cannot %s workspace %s while it is attached to a sandbox; detach it (or stop its session) first", op, w.Name)
	}
	if w.State != store.WorkspaceReady {
		return api.Errorf(http.StatusConflict, api.CodeInvalidState, "cannot %s workspace %s: it is %s", op, w.Name, w.State)
	}
	return nil
}

// Resize grows the volume; it never shrinks.
func (m *Manager) Resize(ctx context.Context, ref string, req api.ResizeWorkspaceRequest) (*store.Workspace, error) {
	size, err := sizeOf(req.Size, req.SizeGB)
	if err != nil {
		return nil, err
	}
	w, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer m.Lock(w.ID)()
	if w, err = m.store.Workspace(ctx, w.ID); err != nil {
		return nil, err
	}
	if size < w.SizeGB {
		return nil, api.FieldError("size", "workspace %s is %d GiB; volumes can grow but never shrink (asked %d GiB)", w.Name, w.SizeGB, size)
	}
	if size == w.SizeGB {
		return w, nil
	}
	if err := m.pve.Resize(ctx, w.HolderVMID, w.DiskKey, fmt.Sprintf("%dG", size)); err != nil {
		return nil, proxmoxErr("resize", w, err)
	}
	prev := *w
	w.SizeGB = size
	if err := m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.resized", Message: fmt.Sprintf("grown to %d GiB", size)}); err != nil {
		return nil, err
	}
	return w, nil
}

// Delete destroys the holder and its volume. Refused while attached or
// reserved by a session: this is the one operation that destroys data.
func (m *Manager) Delete(ctx context.Context, ref string) (*store.Workspace, error) {
	w, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer m.Lock(w.ID)()
	if w, err = m.store.Workspace(ctx, w.ID); err != nil {
		return nil, err
	}
	if w.ReservedBy != "" {
		return nil, api.Errorf(http.StatusConflict, api.CodeReserved, "workspace %s is reserved by session %s; delete the session first", w.Name, m.sessionName(ctx, w.ReservedBy))
	}
	if w.AttachedSandbox != "" {
		return nil, api.Errorf(http.StatusConflict, api.CodeAttached, "workspace %s is attached to sandbox %s; detach it first", w.Name, m.sandboxName(ctx, w.AttachedSandbox))
	}
	prev := *w
	w.State = store.WorkspaceDeleting
	if err := m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.deleting", Message: "delete requested"}); err != nil {
		return nil, err
	}
	return w, m.finishDelete(ctx, w)
}

func (m *Manager) finishDelete(ctx context.Context, w *store.Workspace) error {
	if err := m.destroyHolder(ctx, w); err != nil {
		return proxmoxErr("delete", w, err)
	}
	prev := *w
	w.State = store.WorkspaceDeleted
	return m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.deleted", Message: fmt.Sprintf("holder VM %d and its volume destroyed", w.HolderVMID)})
}

// Resume finishes creates and deletes interrupted by a restart.
func (m *Manager) Resume(ctx context.Context) error {
	ws, err := m.store.Workspaces(ctx, store.WorkspaceCreating, store.WorkspaceDeleting)
	if err != nil {
		return err
	}
	for _, w := range ws {
		unlock := m.Lock(w.ID)
		if w.State == store.WorkspaceCreating {
			if err := m.build(ctx, w); err != nil {
				m.abandon(w, err)
			}
		} else {
			_ = m.finishDelete(ctx, w)
		}
		unlock()
	}
	return nil
}
