// Package session binds a name, a profile and a workspace to whichever sandbox
// is current: resume provisions a fresh sandbox with the workspace attached,
// stop destroys the sandbox and keeps the workspace reserved, fork starts a new
// session on a fork of the workspace.
package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/keylock"
	"github.com/agentlab/terraform-provider-agentlab/internal/sandbox"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
	"github.com/agentlab/terraform-provider-agentlab/internal/workspace"
)

// Manager runs sessions.
type Manager struct {
	store *store.Store
	sb    *sandbox.Manager
	ws    *workspace.Manager
	locks keylock.Set // one per session id
}

// New builds a manager.
func New(st *store.Store, sb *sandbox.Manager) *Manager {
	return &Manager{store: st, sb: sb, ws: sb.Workspaces()}
}

func newID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "ses-" + hex.EncodeToString(b)
}

// Get finds a live session by name or id.
func (m *Manager) Get(ctx context.Context, ref string) (*store.Session, error) {
	x, err := m.store.LookupSession(ctx, ref)
	if errors.Is(err, store.ErrNotFound) {
		return nil, api.Errorf(http.StatusNotFound, api.CodeSessionNotFound, "session %q not found", ref)
	}
	return x, err
}

// apiLockWait bounds a request's wait for a session another request holds
// (the sandbox and workspace managers bound theirs the same).
const apiLockWait = 10 * time.Second

// getLocked finds a session, takes its lock and re-reads it under the lock.
func (m *Manager) getLocked(ctx context.Context, ref string) (*store.Session, func(), error) {
	x, err := m.Get(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	// A resume may wait for a destroy to release the workspace: the requests
	// behind it wait no longer than for any object another operation holds
	// (409 busy, nothing done). A longer wait here adds to the waits for the
	// sandbox and its VM that the request itself may meet next.
	unlock, err := m.locks.LockWithin(ctx, x.ID, "a request on session "+x.Name, apiLockWait)
	if err != nil {
		return nil, nil, api.Errorf(http.StatusConflict, api.CodeBusy, "session %s is busy (%v); retry", x.Name, err)
	}
	if x, err = m.store.Session(ctx, x.ID); err != nil {
		unlock()
		return nil, nil, err
	}
	return x, unlock, nil
}

// List lists live sessions.
func (m *Manager) List(ctx context.Context) ([]*store.Session, error) { return m.store.Sessions(ctx) }

// API renders a session with its current sandbox.
func (m *Manager) API(ctx context.Context, x *store.Session) api.Session {
	out := api.Session{ID: x.ID, Name: x.Name, Team: x.Team, Profile: x.Profile, State: "STOPPED", CreatedAt: x.CreatedAt, UpdatedAt: x.UpdatedAt}
	if w, err := m.store.Workspace(ctx, x.WorkspaceID); err == nil {
		out.Workspace = w.Name
	}
	if x.SandboxID != "" {
		if sb, err := m.store.Sandbox(ctx, x.SandboxID); err == nil {
			out.State, out.Sandbox, out.SandboxVMID, out.IP, out.Error = string(sb.State), sb.Name, sb.VMID, sb.IP, sb.Error
		}
	}
	return out
}

// Create registers a session on an existing workspace, or on a new one
// ("new:NAME" with WorkspaceSize). It does not start a sandbox: Resume does.
func (m *Manager) Create(ctx context.Context, req api.CreateSessionRequest) (*store.Session, error) {
	if err := validate.SessionName("name", req.Name); err != nil {
		return nil, api.Invalid(err)
	}
	team := auth.Team(ctx)
	ctx = auth.For(ctx, team)
	if err := m.sb.MayUseProfile(ctx, req.Profile, team); err != nil {
		return nil, err
	}
	if req.Workspace == "" {
		return nil, api.FieldError("workspace", "is required: an existing workspace, or new:NAME with workspace_size")
	}
	if existing, err := m.store.LookupSession(ctx, req.Name); err == nil {
		if w, werr := m.store.Workspace(ctx, existing.WorkspaceID); werr == nil && existing.Profile == req.Profile &&
			(w.Name == req.Workspace || "new:"+w.Name == req.Workspace) {
			return existing, nil // a retry of the same request
		}
		return nil, api.Errorf(http.StatusConflict, api.CodeConflict, "session %q already exists with another profile or workspace", req.Name)
	}
	var w *store.Workspace
	var err error
	name, isNew := strings.CutPrefix(req.Workspace, "new:")
	if isNew {
		if req.WorkspaceSize == "" {
			return nil, api.FieldError("workspace_size", "is required with workspace new:%s (e.g. 80G)", name)
		}
		// The same checks as the workspace's own, but naming this request's fields.
		if err := validate.WorkspaceName("workspace", name); err != nil {
			return nil, api.Invalid(err)
		}
		if _, err := validate.ParseSize("workspace_size", req.WorkspaceSize); err != nil {
			return nil, api.Invalid(err)
		}
		if req.WorkspaceStorage != "" {
			if err := m.ws.Storage("workspace_storage", req.WorkspaceStorage); err != nil {
				return nil, err
			}
		}
		if w, err = m.ws.Create(ctx, api.CreateWorkspaceRequest{Name: name, Size: req.WorkspaceSize, Storage: req.WorkspaceStorage}); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil { // the session was not created: do not leave its new, empty workspace
				_, _ = m.ws.Delete(context.WithoutCancel(ctx), w.ID)
			}
		}()
	} else if w, err = m.ws.Get(ctx, req.Workspace); err != nil {
		return nil, err
	}
	x := &store.Session{ID: newID(), Name: req.Name, Team: team, Profile: req.Profile, WorkspaceID: w.ID, State: store.SessionActive}
	err = m.store.CreateSession(ctx, x, store.Event{Kind: "session.created", Message: fmt.Sprintf("profile %s, workspace %s", req.Profile, w.Name)})
	switch {
	case errors.Is(err, store.ErrConflict):
		err = api.Errorf(http.StatusConflict, api.CodeConflict, "session %q already exists", req.Name)
	case errors.Is(err, store.ErrStale):
		err = api.Errorf(http.StatusConflict, api.CodeReserved, "workspace %s is reserved by another session", w.Name)
	}
	if err != nil {
		return nil, err
	}
	return x, nil
}

// Resume makes the session run: a current sandbox that runs or is being
// provisioned is kept; otherwise the old one is destroyed and a fresh sandbox
// is provisioned from the profile with the workspace attached.
func (m *Manager) Resume(ctx context.Context, ref string) (*store.Session, error) {
	x, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := live(x, "resume"); err != nil {
		return nil, err
	}
	ctx = auth.For(ctx, x.Team) // its sandbox is the session's team's
	prevSandbox := x.SandboxID
	var old *store.Sandbox
	if x.SandboxID != "" {
		sb, err := m.store.Sandbox(ctx, x.SandboxID)
		if err == nil && (sb.State == api.StateRunning || sb.State.InFlight()) {
			return x, nil
		}
		if err == nil && sb.State != api.StateDestroyed {
			old = sb
		}
	}
	w, err := m.store.Workspace(ctx, x.WorkspaceID)
	if err != nil {
		return nil, err
	}
	// Admit the new sandbox before the old one is destroyed: a refusal (a
	// team quota, a limit, a lease too long) leaves the session and its
	// sandbox as they were. The old sandbox's slot is the new one's, which
	// no concurrent create can take meanwhile.
	oldID := ""
	if old != nil {
		oldID = old.ID
	}
	release, err := m.sb.Replace(ctx, api.CreateSandboxRequest{Name: fmt.Sprintf("%s-%d", x.Name, x.Generation+1), Profile: x.Profile, Workspace: w.Name}, oldID)
	if err != nil {
		return nil, err
	}
	defer release()
	if x.SandboxID != "" {
		if old != nil {
			if _, err := m.sb.DestroyFor(ctx, old.ID, true, "by session "+x.Name+" resume (replacing it)"); err != nil {
				return nil, fmt.Errorf("replace sandbox %s: %w", old.Name, err)
			}
		}
		// A sandbox reaching DESTROYED unlinks itself from its session (in
		// the store, with the transition): re-read the pointer.
		if cur, err := m.store.Session(ctx, x.ID); err == nil {
			prevSandbox = cur.SandboxID
		}
	}
	if w, err = m.awaitRelease(ctx, w); err != nil {
		return nil, err
	}
	// Journal the new generation first: a crash between the sandbox's
	// creation and the session's pointer to it is then adopted by Recover
	// (the sandbox's name is derived from the generation).
	x.Generation++
	x.SandboxID = ""
	if err := m.store.SaveSession(ctx, x, prevSandbox, store.Event{Kind: "session.resuming", Message: fmt.Sprintf("generation %d", x.Generation)}); err != nil {
		return nil, conflict(x, err)
	}
	sb, _, err := m.sb.CreateFor(ctx, api.CreateSandboxRequest{Name: sandboxName(x), Profile: x.Profile, Workspace: w.Name}, x.ID)
	if err != nil {
		return nil, err
	}
	x.SandboxID = sb.ID
	if err := m.store.SaveSession(ctx, x, "", store.Event{Kind: "session.resumed", Message: "sandbox " + sb.Name + " provisioning"}); err != nil {
		_, _ = m.sb.Destroy(context.WithoutCancel(ctx), sb.ID, true)
		return nil, conflict(x, err)
	}
	return x, nil
}

// sandboxName is the name of the sandbox of the session's current generation.
func sandboxName(x *store.Session) string { return fmt.Sprintf("%s-%d", x.Name, x.Generation) }

// Recover adopts sandboxes a crash left between their creation and their
// session's pointer: a live session without a current sandbox whose
// generation's sandbox exists points at it again. Run at start and by the
// reconcile loop; it returns what it adopted.
func (m *Manager) Recover(ctx context.Context) ([]string, error) {
	xs, err := m.store.Sessions(ctx)
	if err != nil {
		return nil, err
	}
	var adopted []string
	for _, x := range xs {
		if x.SandboxID != "" || x.Generation == 0 {
			continue
		}
		rows, err := m.store.Sandboxes(ctx, store.Filter{Name: sandboxName(x), Team: x.Team})
		if err != nil || len(rows) == 0 {
			continue
		}
		unlock := m.locks.Lock(x.ID)
		cur, err := m.store.Session(ctx, x.ID)
		if err == nil && cur.State != store.SessionDeleted && cur.SandboxID == "" && cur.Generation == x.Generation {
			cur.SandboxID = rows[0].ID
			if err := m.store.SaveSession(ctx, cur, "", store.Event{Kind: "session.recovered",
				Message: fmt.Sprintf("sandbox %s of generation %d adopted after an interrupted resume", rows[0].Name, cur.Generation)}); err == nil {
				adopted = append(adopted, cur.Name+":"+rows[0].Name)
			}
		}
		unlock()
	}
	return adopted, nil
}

// awaitRelease waits (bounded by ctx and 15 seconds) while the workspace is
// still claimed by a sandbox being destroyed: a stop cancelling provisioning
// answers at once and releases the workspace only once Proxmox confirmed.
func (m *Manager) awaitRelease(ctx context.Context, w *store.Workspace) (*store.Workspace, error) {
	deadline := time.Now().Add(15 * time.Second)
	for w.AttachedSandbox != "" && time.Now().Before(deadline) {
		sb, err := m.store.Sandbox(ctx, w.AttachedSandbox)
		if err != nil || sb.State != api.StateDestroying {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if w, err = m.store.Workspace(ctx, w.ID); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// live refuses operations on a session a concurrent delete ended.
func live(x *store.Session, op string) error {
	if x.State == store.SessionDeleted {
		return api.Errorf(http.StatusConflict, api.CodeInvalidState, "cannot %s session %s: it was deleted", op, x.Name)
	}
	return nil
}

// Stop destroys the current sandbox; the workspace stays reserved.
func (m *Manager) Stop(ctx context.Context, ref string) (*store.Session, error) {
	x, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := live(x, "stop"); err != nil {
		return nil, err
	}
	return x, m.stopLocked(ctx, x, "stop")
}

// stopLocked destroys the session's sandbox; the caller holds its lock.
func (m *Manager) stopLocked(ctx context.Context, x *store.Session, op string) error {
	if x.SandboxID == "" {
		return nil
	}
	if _, err := m.sb.DestroyFor(ctx, x.SandboxID, true, "by session "+x.Name+" "+op); err != nil && !api.IsCode(err, api.CodeSandboxNotFound) {
		return err
	}
	// A sandbox that reached DESTROYED has already unlinked itself.
	prev := x.SandboxID
	if cur, err := m.store.Session(ctx, x.ID); err == nil {
		prev = cur.SandboxID
	}
	x.SandboxID = ""
	if err := m.store.SaveSession(ctx, x, prev, store.Event{Kind: "session.stopped", Message: "sandbox destroyed; workspace kept"}); err != nil {
		x.SandboxID = prev
		return conflict(x, err)
	}
	return nil
}

func conflict(x *store.Session, err error) error {
	if errors.Is(err, store.ErrStale) {
		return api.Errorf(http.StatusConflict, api.CodeConflict, "session %s changed concurrently; retry", x.Name)
	}
	return err
}

// Delete stops the session and releases its workspace (which is kept), all
// under the session's lock, so a concurrent resume either runs before (and
// its sandbox is destroyed here) or after (and is refused with 409).
func (m *Manager) Delete(ctx context.Context, ref string) (*store.Session, error) {
	x, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if x.State == store.SessionDeleted {
		return x, nil
	}
	if err := m.stopLocked(ctx, x, "delete"); err != nil {
		return nil, err
	}
	x.State = store.SessionDeleted
	if err := m.store.SaveSession(ctx, x, "", store.Event{Kind: "session.deleted", Message: "workspace released"}); err != nil {
		return nil, conflict(x, err)
	}
	return x, nil
}

// Fork creates a session on a fork of ref's workspace (same profile unless
// given). Without a snapshot the source must be stopped: a running sandbox's
// disk cannot be copied consistently.
func (m *Manager) Fork(ctx context.Context, ref string, req api.ForkSessionRequest) (*store.Session, error) {
	src, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	ctx = auth.For(ctx, src.Team) // the fork is the source's team's
	w, err := m.store.Workspace(ctx, src.WorkspaceID)
	if err != nil {
		return nil, err
	}
	wsName := req.WorkspaceName
	if wsName == "" {
		wsName = req.Name
	}
	profile := req.Profile
	if profile == "" {
		profile = src.Profile
	}
	if err := validate.SessionName("name", req.Name); err != nil {
		return nil, api.Invalid(err)
	}
	// Refused before the fork: Create would refuse it after, leaving a
	// forked workspace behind.
	if err := m.sb.MayUseProfile(ctx, profile, src.Team); err != nil {
		return nil, err
	}
	if _, err := m.store.LookupSession(ctx, req.Name); err == nil {
		return nil, api.Errorf(http.StatusConflict, api.CodeConflict, "session %q already exists", req.Name)
	}
	fw, err := m.ws.Fork(ctx, w.Name, api.ForkRequest{Name: wsName, FromSnapshot: req.FromSnapshot})
	if err != nil {
		return nil, err
	}
	x, err := m.Create(ctx, api.CreateSessionRequest{Name: req.Name, Profile: profile, Workspace: fw.Name})
	if err != nil {
		return nil, err
	}
	return x, nil
}
