// Package workspace manages durable workspace volumes with the holder-VM model:
// a never-started VM (ws-<name>, tagged agentlab-workspace) owns the volume;
// sandboxes only reference it, so destroying a sandbox can never free it.
// Snapshots, rollbacks and forks act on the holder, only while detached.
package workspace

import (
	"cmp"
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
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/keylock"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
	"github.com/agentlab/terraform-provider-agentlab/internal/vmid"
)

// HolderTag marks holder VMs.
const HolderTag = "agentlab-workspace"

// AttachKey is the drive key a workspace gets on a sandbox.
const AttachKey = "scsi1"

// Attachment steps journaled in the workspace row while an attach or detach
// is between the database and Proxmox; reconcile finishes them after a crash.
const (
	StepAttach = "attach"
	StepDetach = "detach"
)

// Manager runs workspace operations.
type Manager struct {
	store          *store.Store
	pve            *pve.Client
	guard          *owner.Guard
	alloc          *vmid.Allocator
	defaultStorage string
	storages       []string    // where a volume may be created: the default first
	locks          keylock.Set // one per workspace id
	// nodeDown says whether a node is offline now (the cluster ledger).
	nodeDown func(node string) bool
	// nodes lists the nodes agentd uses, read fresh (moves check targets).
	nodes func(ctx context.Context) ([]api.Node, error)
}

// SetNodeCheck tells the manager how to learn that a node is offline: its
// workspaces are reported unavailable then.
func (m *Manager) SetNodeCheck(down func(node string) bool) { m.nodeDown = down }

// New builds a manager. Volumes go on defaultStorage unless a request names
// one of the other allowed storages.
func New(st *store.Store, pc *pve.Client, guard *owner.Guard, alloc *vmid.Allocator, defaultStorage string, allowed ...string) *Manager {
	storages := []string{defaultStorage}
	for _, s := range allowed {
		if !slices.Contains(storages, s) {
			storages = append(storages, s)
		}
	}
	return &Manager{store: st, pve: pc, guard: guard, alloc: alloc, defaultStorage: defaultStorage, storages: storages}
}

// Storage checks a storage a client asked for (under field) before it can
// reach Proxmox: PVE's id format, and one of the storages agentd may use.
func (m *Manager) Storage(field, s string) error {
	return api.Invalid(validate.Storage(field, s, m.storages))
}

// Storages lists the storages Storage accepts, the default first.
func (m *Manager) Storages() api.StorageList {
	return api.StorageList{Default: m.defaultStorage, Storages: slices.Clone(m.storages)}
}

// Lock serialises operations on one workspace in this process (the sandbox
// manager takes it too, always after the sandbox's own lock).
func (m *Manager) Lock(id string) func() { return m.locks.Lock(id) }

// apiLockWait bounds a request's wait for a workspace another operation
// holds (see the sandbox manager's): 409 busy instead of a hang.
const apiLockWait = 10 * time.Second

// LockAPI takes w's lock for a request, or answers 409 busy.
func (m *Manager) LockAPI(ctx context.Context, w *store.Workspace) (func(), error) {
	unlock, err := m.locks.LockWithin(ctx, w.ID, "a request on workspace "+w.Name, apiLockWait)
	if err != nil {
		return nil, api.Errorf(http.StatusConflict, api.CodeBusy, "workspace %s is busy (%v); retry", w.Name, err)
	}
	return unlock, nil
}

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

// proof is what the VM at the holder's VMID must show.
func (m *Manager) proof(w *store.Workspace) owner.Proof {
	p := m.guard.Proof(owner.Holder, w.ID, w.Name, w.HolderVMID)
	p.Team, p.Node = w.Team, w.Node
	return p
}

// holder proves the holder VM is w's and returns it for writes. Every
// Proxmox call on a holder goes through it. A VM that fails the proof marks
// the workspace LOST and is refused with 409 not_owned; nothing is changed.
func (m *Manager) holder(ctx context.Context, w *store.Workspace, op string) (*owner.VM, error) {
	if w.State == store.WorkspaceCreating || w.State == store.WorkspaceDeleting {
		return nil, api.Errorf(http.StatusConflict, api.CodeInvalidState, "cannot %s workspace %s: it is %s", op, w.Name, w.State)
	}
	if w.State == store.WorkspaceLost {
		return nil, api.Errorf(http.StatusConflict, api.CodeNotOwned, "cannot %s workspace %s: it is LOST (%s)", op, w.Name, w.Error)
	}
	v, err := m.guard.Must(ctx, m.proof(w), true)
	if errors.Is(err, owner.ErrNotOwned) {
		return nil, m.lost(ctx, w, op, err)
	}
	if errors.Is(err, pve.ErrNotFound) {
		return nil, api.Errorf(http.StatusConflict, api.CodeInvalidState, "cannot %s workspace %s: holder VM %d does not exist (the volume is gone; see workspace check)", op, w.Name, w.HolderVMID)
	}
	if err != nil {
		return nil, proxmoxErr(op, w, err)
	}
	return v, nil
}

// Verify proves the holder (marking the workspace LOST if it fails).
func (m *Manager) Verify(ctx context.Context, w *store.Workspace) error {
	_, err := m.holder(ctx, w, "verify")
	return err
}

// lost records a failed proof: event, LOST, 409.
func (m *Manager) lost(ctx context.Context, w *store.Workspace, op string, cause error) error {
	prev := *w
	w.State, w.Error = store.WorkspaceLost, cause.Error()
	if err := m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.not_owned",
		Message: fmt.Sprintf("refused to %s: %v; agentd will not touch VM %d", op, cause, w.HolderVMID)}); err != nil {
		*w = prev
	}
	return api.Errorf(http.StatusConflict, api.CodeNotOwned, "refusing to %s workspace %s: %v", op, w.Name, cause)
}

// NotFound is the API error for an unknown workspace.
func NotFound(ref string) error {
	return api.Errorf(http.StatusNotFound, api.CodeWorkspaceNotFound, "workspace %q not found", ref)
}

// admitGB checks that team's quota has room for add more GiB of workspace.
// The returned release must be called once the new size is written: until
// then no other create, fork or resize of the team can count the same room.
func (m *Manager) admitGB(ctx context.Context, team string, add int, what string) (release func(), err error) {
	unlock := m.locks.Lock("quota:" + team)
	t, err := m.store.Team(ctx, team)
	if errors.Is(err, store.ErrNotFound) {
		err = api.TeamNotFound(team)
	}
	if err == nil && t.Quota.WorkspaceGB > 0 {
		var use api.TeamQuota
		if use, err = m.store.TeamUsage(ctx, team); err == nil && use.WorkspaceGB+int64(add) > t.Quota.WorkspaceGB {
			err = api.QuotaError(team, "workspace_gb", t.Quota.WorkspaceGB, use.WorkspaceGB, "%s needs %d GiB more", what, add)
		}
	}
	if err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
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
	if req.Node != "" && req.Node != m.pve.Node() {
		// Checked before the row exists: Proxmox would only answer for the
		// node after a VMID and a row were taken.
		if m.nodes == nil {
			return nil, api.FieldError("node", "agentd manages one node (%s), not %q", m.pve.Node(), req.Node)
		}
		nodes, err := m.nodes(ctx)
		if err != nil {
			return nil, err
		}
		if err := usable(nodes, req.Node, "create the workspace on an online node"); err != nil {
			return nil, err
		}
	}
	team := auth.Team(ctx)
	ctx = auth.For(ctx, team)
	release, err := m.admitGB(ctx, team, size, "this workspace")
	if err != nil {
		return nil, err
	}
	if req.Node == m.pve.Node() {
		req.Node = "" // the agent's own node, as rows made before clusters say
	}
	w := &store.Workspace{ID: newID(), Name: req.Name, Team: team, Node: req.Node, State: store.WorkspaceCreating, Step: "allocate_vmid",
		Storage: storage, SizeGB: size, DiskKey: "scsi0"}
	err = m.store.CreateWorkspace(ctx, w, store.Event{Kind: "workspace.requested", Message: fmt.Sprintf("%d GiB on %s", size, storage)})
	release()
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
	for attempt := 1; ; attempt++ {
		fresh := w.HolderVMID == 0
		if fresh {
			if err := m.reserve(ctx, w, "create_holder"); err != nil {
				return err
			}
		}
		err := m.buildAt(ctx, w)
		if !fresh || !vmidTaken(err) || attempt == maxAllocAttempts {
			return err
		}
		if err := m.releaseVMID(ctx, w, err); err != nil {
			return err
		}
	}
}

// maxAllocAttempts bounds how often a create moves to another VMID when
// another client takes the one reserved.
const maxAllocAttempts = 5

// reserve gives w a VMID no row holds and Proxmox knows nothing at, saving
// it (and step) in the row before anything is created.
func (m *Manager) reserve(ctx context.Context, w *store.Workspace, step string) error {
	_, err := m.alloc.Reserve(ctx, func(id int) error {
		prev := *w
		w.HolderVMID, w.Step = id, step
		if err := m.store.SaveWorkspace(ctx, w, prev, store.Event{}); err != nil {
			w.HolderVMID, w.Step = 0, prev.Step
			return err
		}
		return nil
	})
	return err
}

// vmidTaken says a create at a VMID this run just reserved met a VM there:
// another client made it between the allocator's check and the create
// (Proxmox reserves nothing), so it is theirs and the create moves on.
func vmidTaken(err error) bool {
	return errors.Is(err, pve.ErrExists) || errors.Is(err, owner.ErrNotOwned)
}

// releaseVMID gives up the row's VMID, which another client's VM holds.
func (m *Manager) releaseVMID(ctx context.Context, w *store.Workspace, cause error) error {
	prev := *w
	w.HolderVMID, w.Step = 0, "allocate_vmid"
	err := m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.vmid_taken",
		Message: fmt.Sprintf("VMID %d was taken by another client (%v); allocating another", prev.HolderVMID, cause)})
	if err != nil {
		*w = prev
	}
	return err
}

// buildAt creates (or finds) the holder at the row's VMID, tags it and
// marks the workspace READY.
func (m *Manager) buildAt(ctx context.Context, w *store.Workspace) error {
	v, err := m.guard.Prove(ctx, m.proof(w), false)
	if err != nil {
		return err
	}
	if v == nil {
		if err := m.guard.CreateHolder(ctx, m.proof(w), w.Storage, w.SizeGB); err != nil {
			return err
		}
	} else if !owner.HasTag(v.Config, HolderTag) {
		// A fork's clone carries the proof but not yet the tag; after a crash
		// its clone task may still run (lock=clone).
		if err := m.waitUnlocked(ctx, w.Node, w.HolderVMID); err != nil {
			return err
		}
		if err := v.Configure(ctx, pve.Option{Name: "tags", Value: HolderTag}); err != nil {
			return err
		}
	}
	prev := *w
	w.State, w.Step = store.WorkspaceReady, ""
	return m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.created",
		Message: fmt.Sprintf("holder VM %d owns a %d GiB volume on %s", w.HolderVMID, w.SizeGB, w.Storage)})
}

// abandonPrefix marks the error of a CREATING row whose create was given
// up: the row is kept until its holder is gone.
const abandonPrefix = "abandoning: "

// abandon removes what a failed create made and retires the row. The intent
// is saved before the holder's destroy: a crash between the two used to
// leave the row CREATING, and the resume rebuilt it on the holder whose
// destroy was still running, a READY workspace without a holder (its VMID
// then went to another VM, and the workspace read as LOST).
func (m *Manager) abandon(w *store.Workspace, cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	msg := strings.TrimPrefix(cause.Error(), abandonPrefix)
	if w.HolderVMID != 0 && !strings.HasPrefix(w.Error, abandonPrefix) {
		prev := *w
		w.Error = abandonPrefix + msg
		if err := m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.abandoning",
			Message: fmt.Sprintf("create failed (%s); removing holder VM %d", msg, w.HolderVMID)}); err != nil {
			*w = prev // unjournaled, as before: the destroy is still worth trying
		}
	}
	if w.HolderVMID != 0 {
		if err := m.destroyHolder(ctx, w); err != nil {
			msg += fmt.Sprintf("; removing holder VM %d failed: %v", w.HolderVMID, err)
		}
	}
	prev := *w
	w.State, w.Error = store.WorkspaceDeleted, msg
	_ = m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.create_failed", Message: msg})
}

// waitUnlocked waits while a task holds the VM's lock (bounded by ctx and
// two minutes: a fork's clone copies the whole volume).
func (m *Manager) waitUnlocked(ctx context.Context, node string, vmid int) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		st, err := m.pve.On(node).Status(ctx, vmid)
		if err != nil || st.Lock == "" {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("VM %d still locked (%s): %w", vmid, st.Lock, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (m *Manager) destroyHolder(ctx context.Context, w *store.Workspace) error {
	v, err := m.guard.Prove(ctx, m.proof(w), w.State != store.WorkspaceCreating)
	if err != nil || v == nil {
		// A fork's clone abandoned while PVE's task runs may land later
		// (untagged): absent is not gone then, the VMID stays pending so
		// reconcile lists that copy as ours.
		if err == nil && !(w.State == store.WorkspaceCreating && w.Step == "clone_holder") {
			err = m.store.VMGone(ctx, w.ID, w.HolderVMID)
		}
		return err
	}
	err = v.Destroy(ctx)
	if errors.Is(err, pve.ErrNotFound) {
		err = nil
	}
	if err == nil {
		err = m.store.VMGone(ctx, w.ID, w.HolderVMID)
	}
	return err
}

// Volume reads the holder's volume id from Proxmox (never cached: Proxmox
// renames volumes on some operations).
// The holder must prove itself: a foreign VM at its VMID must never lend its
// disk to a sandbox.
func (m *Manager) Volume(ctx context.Context, w *store.Workspace) (string, error) {
	v, err := m.holder(ctx, w, "use")
	if err != nil {
		return "", err
	}
	return holderVolume(v, w)
}

// holderVolume is the workspace volume a proven holder names.
func holderVolume(v *owner.VM, w *store.Workspace) (string, error) {
	vol := pve.DiskVolume(v.Config, w.DiskKey)
	if vol == "" {
		return "", fmt.Errorf("holder VM %d has no %s: the workspace volume is missing", w.HolderVMID, w.DiskKey)
	}
	return vol, nil
}

// Claim records in the store that sandboxID uses the workspace (compare-and-
// set: at most one sandbox). sessionID may use a workspace its session reserved.
// step journals the attach (StepAttach) until Settle.
func (m *Manager) Claim(ctx context.Context, w *store.Workspace, sandboxID, sessionID, step string) error {
	if w.AttachedSandbox == sandboxID {
		return m.Journal(ctx, w, step)
	}
	if err := m.Busy(ctx, w, sandboxID, sessionID); err != nil {
		return err
	}
	prev := *w
	w.AttachedSandbox, w.AttachKey, w.Step = sandboxID, AttachKey, step
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
	case Moving(w):
		return api.Errorf(http.StatusConflict, api.CodeBusy, "workspace %s is being moved to another node; retry when the move has settled", w.Name)
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
	w.AttachedSandbox, w.AttachKey, w.Step = "", "", ""
	return m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.released", Message: "released by sandbox " + m.sandboxName(ctx, sandboxID)})
}

// AttachableVolume is Volume for an attach: refused while a task holds the
// holder's lock (a rollback or snapshot still running, perhaps started by an
// agentd that died), since what a sandbox writes then could be rolled back.
func (m *Manager) AttachableVolume(ctx context.Context, w *store.Workspace) (string, error) {
	v, err := m.holder(ctx, w, "attach")
	if err != nil {
		return "", err
	}
	if lock, _ := v.Config["lock"].(string); lock != "" {
		return "", api.Errorf(http.StatusConflict, api.CodeInvalidState, "cannot attach workspace %s: its holder VM %d is locked (%s) by a Proxmox task still running; retry when it ends", w.Name, w.HolderVMID, lock)
	}
	return holderVolume(v, w)
}

// Journal records an attachment step in the row (before Proxmox is asked).
func (m *Manager) Journal(ctx context.Context, w *store.Workspace, step string) error {
	if w.Step == step {
		return nil
	}
	prev := *w
	w.Step = step
	if err := m.store.SaveWorkspace(ctx, w, prev, store.Event{}); err != nil {
		*w = prev
		if errors.Is(err, store.ErrStale) {
			return api.Errorf(http.StatusConflict, api.CodeConflict, "workspace %s changed concurrently; retry", w.Name)
		}
		return err
	}
	return nil
}

// Settle clears the journaled step once Proxmox agrees with the row.
func (m *Manager) Settle(ctx context.Context, w *store.Workspace, kind, msg string) error {
	prev := *w
	w.Step = ""
	if err := m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: kind, Message: msg}); err != nil {
		*w = prev
		return err
	}
	return nil
}

// Plug references the holder's volume as AttachKey on a proven sandbox VM
// (idempotent: a VM that already references it is left as it is).
func (m *Manager) Plug(ctx context.Context, w *store.Workspace, v *owner.VM) error {
	vol, err := m.AttachableVolume(ctx, w)
	if err != nil {
		return err
	}
	if pve.DiskVolume(v.Config, w.AttachKey) == vol {
		return nil
	}
	return v.AttachVolume(ctx, w.AttachKey, vol)
}

// Unplug removes the reference from a proven sandbox VM, but only if the key
// really names this workspace's volume (never drop a disk we did not put there).
func (m *Manager) Unplug(ctx context.Context, w *store.Workspace, v *owner.VM) error {
	key := w.AttachKey
	if key == "" {
		key = AttachKey
	}
	got := pve.DiskVolume(v.Config, key)
	if got == "" {
		return nil
	}
	vol, err := m.Volume(ctx, w)
	if err != nil {
		return err
	}
	if got != vol {
		return fmt.Errorf("VM %d's %s is %s, not workspace %s's volume %s; left alone", v.VMID(), key, got, w.Name, vol)
	}
	return v.DetachVolume(ctx, key)
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
	out := api.Workspace{ID: w.ID, Name: w.Name, Team: w.Team, Node: cmp.Or(w.Node, m.pve.Node()), State: w.State, Storage: w.Storage, SizeGB: w.SizeGB,
		HolderVMID: w.HolderVMID, Error: w.Error, CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt}
	if w.AttachedSandbox != "" {
		out.AttachedSandbox = m.sandboxName(ctx, w.AttachedSandbox)
	}
	if w.ReservedBy != "" {
		out.Session = m.sessionName(ctx, w.ReservedBy)
	}
	if m.nodeDown != nil && m.nodeDown(out.Node) {
		out.Unavailable = "node " + out.Node + " is offline: the volume cannot be reached until it is back"
		return out
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
	return notMoving(w, op)
}

// notMoving refuses op while a move of w is journaled: its holder may be
// mid-migration, on either node.
func notMoving(w *store.Workspace, op string) error {
	if Moving(w) {
		return api.Errorf(http.StatusConflict, api.CodeBusy, "cannot %s workspace %s: it is being moved to another node; retry when the move has settled", op, w.Name)
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
	unlock, err := m.LockAPI(ctx, w)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if w, err = m.store.Workspace(ctx, w.ID); err != nil {
		return nil, err
	}
	if w.State != store.WorkspaceReady {
		return nil, api.Errorf(http.StatusConflict, api.CodeInvalidState, "cannot resize workspace %s: it is %s", w.Name, w.State)
	}
	if Moving(w) {
		return nil, api.Errorf(http.StatusConflict, api.CodeBusy, "cannot resize workspace %s: it is being moved to another node; retry when the move has settled", w.Name)
	}
	if size < w.SizeGB {
		return nil, api.FieldError("size", "workspace %s is %d GiB; volumes can grow but never shrink (asked %d GiB)", w.Name, w.SizeGB, size)
	}
	if size == w.SizeGB {
		return w, nil
	}
	release, err := m.admitGB(ctx, w.Team, size-w.SizeGB, "growing "+w.Name)
	if err != nil {
		return nil, err
	}
	defer release()
	v, err := m.holderFollowing(ctx, w, "resize")
	if err != nil {
		return nil, err
	}
	if err := v.Resize(ctx, w.DiskKey, fmt.Sprintf("%dG", size)); err != nil {
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
	unlock, err := m.LockAPI(ctx, w)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if w, err = m.store.Workspace(ctx, w.ID); err != nil {
		return nil, err
	}
	if w.ReservedBy != "" {
		return nil, api.Errorf(http.StatusConflict, api.CodeReserved, "workspace %s is reserved by session %s; delete the session first", w.Name, m.sessionName(ctx, w.ReservedBy))
	}
	if w.AttachedSandbox != "" {
		return nil, api.Errorf(http.StatusConflict, api.CodeAttached, "workspace %s is attached to sandbox %s; detach it first", w.Name, m.sandboxName(ctx, w.AttachedSandbox))
	}
	if w.State == store.WorkspaceLost {
		return nil, api.Errorf(http.StatusConflict, api.CodeNotOwned, "workspace %s is LOST (%s); agentd will not delete VM %d", w.Name, w.Error, w.HolderVMID)
	}
	if Moving(w) {
		// Its holder may be mid-migration, on either node: settle first.
		return nil, api.Errorf(http.StatusConflict, api.CodeBusy, "workspace %s is being moved to another node; retry when the move has settled", w.Name)
	}
	if w.State == store.WorkspaceReady {
		// Prove before journaling the delete: a refusal must leave the
		// workspace as it was (LOST), not stuck in DELETING.
		v, err := m.guard.Prove(ctx, m.proof(w), true)
		if errors.Is(err, owner.ErrNotOwned) {
			return nil, m.lost(ctx, w, "delete", err)
		} else if err != nil {
			return nil, proxmoxErr("delete", w, err)
		}
		if v == nil {
			// Not on the row's node: migrated outside agentd and not yet
			// followed, it is deleted where it is, not taken for gone.
			if at, _, lerr := m.locate(ctx, w); lerr == nil && at != m.nodeOf(w) {
				if _, err := m.follow(ctx, w, at); err != nil {
					return nil, proxmoxErr("delete", w, err)
				}
			}
		}
	}
	prev := *w
	w.State = store.WorkspaceDeleting
	if err := m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.deleting", Message: "delete requested"}); err != nil {
		return nil, err
	}
	return w, m.finishDelete(ctx, w)
}

func (m *Manager) finishDelete(ctx context.Context, w *store.Workspace) error {
	msg := fmt.Sprintf("holder VM %d and its volume destroyed", w.HolderVMID)
	if err := m.destroyHolder(ctx, w); err != nil {
		if !errors.Is(err, owner.ErrNotOwned) {
			return proxmoxErr("delete", w, err)
		}
		// The delete was journaled after the holder proved itself: a VM that
		// fails the proof now is another one at the reused VMID (ours went
		// before a crash lost the answer) or ours edited out of band. It is
		// left alone; the delete the user asked for ends here.
		msg = fmt.Sprintf("deleted; VM %d left alone: %v", w.HolderVMID, err)
	}
	prev := *w
	w.State = store.WorkspaceDeleted
	return m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.deleted", Message: msg})
}

// Resume finishes creates, deletes and moves interrupted by a restart (a
// move whose migration still runs is left to reconcile).
func (m *Manager) Resume(ctx context.Context) error {
	ws, err := m.store.Workspaces(ctx, store.WorkspaceCreating, store.WorkspaceDeleting, store.WorkspaceReady)
	if err != nil {
		return err
	}
	for _, w := range ws {
		if w.State == store.WorkspaceReady {
			if Moving(w) {
				_, _ = m.FinishMove(ctx, w)
			}
			continue
		}
		unlock := m.Lock(w.ID)
		if w.State == store.WorkspaceCreating {
			if strings.HasPrefix(w.Error, abandonPrefix) {
				m.abandon(w, errors.New(w.Error))
			} else if err := m.build(ctx, w); err != nil {
				m.abandon(w, err)
			}
		} else {
			_ = m.finishDelete(ctx, w)
		}
		unlock()
	}
	return nil
}

// RetryDeletes finishes deletes whose Proxmox call failed (the row stays
// DELETING, the holder is proven again before it is destroyed). The
// provisioning-timeout loop runs it, so a transient fault does not leave a
// workspace DELETING until the next restart.
func (m *Manager) RetryDeletes(ctx context.Context) error {
	ws, err := m.store.Workspaces(ctx, store.WorkspaceDeleting)
	if err != nil {
		return err
	}
	var errs []error
	for _, w := range ws {
		unlock := m.Lock(w.ID)
		if cur, err := m.store.Workspace(ctx, w.ID); err == nil && cur.State == store.WorkspaceDeleting {
			if err := m.finishDelete(ctx, cur); err != nil {
				errs = append(errs, err)
			}
		}
		unlock()
	}
	return errors.Join(errs...)
}
