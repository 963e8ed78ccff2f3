package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// errNotOwned means the VM at a sandbox's VMID lacks our tag or our id.
var errNotOwned = errors.New("not owned by this sandbox")

// checkOwner proves a VM belongs to sb: the agentlab tag and the sandbox id in
// the description. During failed provisioning the tag may not be set yet (it
// is set by the first config call after the clone), so there the description,
// which the clone itself wrote, suffices.
func (m *Manager) checkOwner(ctx context.Context, sb *store.Sandbox, provisioning bool) (exists bool, err error) {
	cfg, err := m.pve.Config(ctx, sb.VMID)
	if errors.Is(err, pve.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	desc, _ := cfg["description"].(string)
	tags, _ := cfg["tags"].(string)
	hasTag := false
	for _, t := range strings.FieldsFunc(tags, func(r rune) bool { return r == ';' || r == ',' || r == ' ' }) {
		hasTag = hasTag || t == OwnerTag
	}
	switch {
	case !strings.Contains(desc, marker(sb)):
		return true, fmt.Errorf("VM %d: its description does not name sandbox %s: %w", sb.VMID, sb.ID, errNotOwned)
	case !hasTag && !(provisioning && sb.Step == stepConfig):
		return true, fmt.Errorf("VM %d: it lacks the %q tag: %w", sb.VMID, OwnerTag, errNotOwned)
	}
	return true, nil
}

// removeVM hard-stops and destroys the sandbox's VM after the ownership check
// and deletes its snippet. A VM that is already gone is success.
func (m *Manager) removeVM(ctx context.Context, sb *store.Sandbox, provisioning bool) error {
	w, err := m.store.WorkspaceBySandbox(ctx, sb.ID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err := m.destroyVM(ctx, sb, w, provisioning); err != nil {
		return err
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

// destroyVM stops the VM, drops its reference to the workspace volume (so
// that not even a Proxmox bug in destroy could touch it), and destroys it.
func (m *Manager) destroyVM(ctx context.Context, sb *store.Sandbox, w *store.Workspace, provisioning bool) error {
	if sb.VMID == 0 {
		return nil
	}
	exists, err := m.checkOwner(ctx, sb, provisioning)
	if err != nil || !exists {
		return err
	}
	if provisioning {
		// A clone interrupted by a timeout may still hold lock=clone.
		if err := m.waitUnlocked(ctx, sb.VMID); err != nil && !errors.Is(err, pve.ErrNotFound) {
			return err
		}
	}
	if err := m.pve.Stop(ctx, sb.VMID); err != nil && !errors.Is(err, pve.ErrNotFound) {
		return err
	}
	if w != nil {
		if err := m.ws.Unplug(ctx, w, sb.VMID); err != nil {
			return fmt.Errorf("detach workspace %s before destroy: %w", w.Name, err)
		}
	}
	if err := m.pve.Destroy(ctx, sb.VMID); err != nil && !errors.Is(err, pve.ErrNotFound) {
		return err
	}
	return nil
}

// proxmoxError turns a Proxmox failure into an API error.
func proxmoxError(op string, sb *store.Sandbox, err error) error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return err
	}
	if errors.Is(err, errNotOwned) {
		return api.Errorf(http.StatusConflict, api.CodeNotOwned, "refusing to %s sandbox %s: %v", op, sb.Name, err)
	}
	if errors.Is(err, pve.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "%s sandbox %s: Proxmox is unreachable: %v", op, sb.Name, err)
	}
	return api.Errorf(http.StatusBadGateway, api.CodeProxmox, "%s sandbox %s: %v", op, sb.Name, err)
}

// getLocked finds a sandbox, takes its lock and re-reads it under the lock.
func (m *Manager) getLocked(ctx context.Context, ref string) (*store.Sandbox, func(), error) {
	sb, err := m.Get(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	unlock := m.locks.Lock(sb.ID)
	if sb, err = m.store.Sandbox(ctx, sb.ID); err != nil {
		unlock()
		return nil, nil, err
	}
	return sb, unlock, nil
}

// Start boots a STOPPED sandbox in the background (→ BOOTING → RUNNING).
func (m *Manager) Start(ctx context.Context, ref string) (*store.Sandbox, error) {
	sb, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	start, err := m.markStarting(ctx, sb)
	// The worker takes the lock itself: release it first.
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
	case api.StateStopped:
	default:
		return false, invalidState(sb, "start", api.StateStopped)
	}
	if _, err := m.checkOwner(ctx, sb, false); err != nil {
		return false, proxmoxError("start", sb, err)
	}
	sb.Step, sb.Error = stepRestart, ""
	if err := m.save(ctx, sb, api.StateBooting, "sandbox.start", "start requested"); err != nil {
		return false, err
	}
	return true, nil
}

// Stop shuts the guest down (hard stop after shutdown_timeout) and keeps the VM.
func (m *Manager) Stop(ctx context.Context, ref string) (*store.Sandbox, error) {
	sb, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	switch sb.State {
	case api.StateStopped:
		return sb, nil
	case api.StateRunning, api.StateReady, api.StateSuspended:
	default:
		return nil, invalidState(sb, "stop", api.StateRunning, api.StateReady, api.StateSuspended)
	}
	return m.stopLocked(sb, "sandbox.stop", "stopped by request")
}

// stopLocked shuts a sandbox down; the caller holds its lock.
func (m *Manager) stopLocked(sb *store.Sandbox, kind, msg string) (*store.Sandbox, error) {
	// Work on the agent's context: a client that disconnects must not leave a
	// half-stopped VM with a row that says RUNNING.
	wctx, cancel := context.WithTimeout(m.ctx, m.opts.ShutdownTimeout+2*time.Minute)
	defer cancel()
	exists, err := m.checkOwner(wctx, sb, false)
	if err != nil {
		return nil, proxmoxError("stop", sb, err)
	}
	if exists {
		if err := m.pve.Shutdown(wctx, sb.VMID, m.opts.ShutdownTimeout); err != nil && !errors.Is(err, pve.ErrNotFound) {
			return nil, proxmoxError("stop", sb, err)
		}
	}
	sb.IP = ""
	if err := m.save(wctx, sb, api.StateStopped, kind, msg); err != nil {
		return nil, err
	}
	return sb, nil
}

// Destroy removes the sandbox's VM and marks the row DESTROYED. Without force
// it refuses sandboxes that are still provisioning; force cancels provisioning
// first, and also retires a row whose VMID now belongs to someone else (that VM
// is left untouched).
func (m *Manager) Destroy(ctx context.Context, ref string, force bool) (*store.Sandbox, error) {
	sb, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	if sb.State == api.StateDestroyed {
		return sb, nil
	}
	if sb.State.InFlight() || sb.State == api.StateBooting {
		if !force {
			return nil, api.Errorf(http.StatusConflict, api.CodeInvalidState,
				"sandbox %s is %s (step %s); wait until it settles or destroy with force", sb.Name, sb.State, sb.Step)
		}
		m.cancelWorker(sb.ID)
	}
	defer m.locks.Lock(sb.ID)()
	if sb, err = m.store.Sandbox(ctx, sb.ID); err != nil {
		return nil, err
	}
	if sb.State == api.StateDestroyed {
		return sb, nil
	}
	wctx, cancel := context.WithTimeout(m.ctx, 5*time.Minute)
	defer cancel()
	msg := "destroyed"
	if err := m.removeVM(wctx, sb, sb.State.InFlight()); err != nil {
		if !force || !errors.Is(err, errNotOwned) {
			return nil, proxmoxError("destroy", sb, err)
		}
		msg = fmt.Sprintf("row retired with force; VM %d left alone: %v", sb.VMID, err)
		if w, werr := m.store.WorkspaceBySandbox(wctx, sb.ID); werr == nil {
			_ = m.ws.Release(wctx, w, sb.ID)
		}
	}
	sb.IP, sb.Step = "", ""
	kind := "sandbox.destroy"
	if force {
		kind = "sandbox.destroy_forced"
	}
	if err := m.save(wctx, sb, api.StateDestroyed, kind, msg); err != nil {
		return nil, err
	}
	return sb, nil
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
	if err := m.checkTTL(sb.Profile, d); err != nil {
		return nil, err
	}
	exp := m.now().Add(d).UTC()
	sb.LeaseExpiresAt = &exp
	sb.TTLSeconds = int64(d / time.Second)
	if err := m.store.Save(ctx, sb, sb.State, store.Event{Kind: "sandbox.lease_renewed",
		Message: fmt.Sprintf("lease renewed for %s, until %s", d, exp.Format(time.RFC3339))}); err != nil {
		return nil, err
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
	if sb.State == api.StateDestroyed {
		return nil, invalidState(sb, "touch", api.StateRunning, api.StateStopped)
	}
	now := m.now().UTC()
	sb.LastUsedAt = &now
	if err := m.store.Save(ctx, sb, sb.State, store.Event{}); err != nil {
		return nil, err
	}
	return sb, nil
}

// Prune destroys the VMs of FAILED and TIMEOUT sandboxes and retires their
// rows; a VM that fails the ownership check is skipped and reported.
func (m *Manager) Prune(ctx context.Context) (*api.PruneResult, error) {
	rows, err := m.store.Sandboxes(ctx, store.Filter{States: []api.State{api.StateFailed, api.StateTimeout}})
	if err != nil {
		return nil, err
	}
	res := &api.PruneResult{Destroyed: []api.Sandbox{}, Skipped: []api.PruneSkipped{}}
	for _, sb := range rows {
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
// running one gets the disk hot-plugged).
func (m *Manager) AttachWorkspace(ctx context.Context, sbRef, wsRef string) (*store.Sandbox, error) {
	sb, err := m.Get(ctx, sbRef)
	if err != nil {
		return nil, err
	}
	w, err := m.ws.Get(ctx, wsRef)
	if err != nil {
		return nil, err
	}
	defer m.locks.Lock(sb.ID)()
	defer m.ws.Lock(w.ID)()
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
	if _, err := m.checkOwner(ctx, sb, false); err != nil {
		return nil, proxmoxError("attach a workspace to", sb, err)
	}
	if err := m.ws.Claim(ctx, w, sb.ID, ""); err != nil {
		return nil, err
	}
	if err := m.ws.Plug(ctx, w, sb.VMID); err != nil {
		_ = m.ws.Release(ctx, w, sb.ID)
		return nil, proxmoxError("attach a workspace to", sb, err)
	}
	sb.Workspace = w.Name
	if err := m.store.Save(ctx, sb, sb.State, store.Event{Kind: "sandbox.workspace_attached", Message: "workspace " + w.Name + " attached as " + w.AttachKey}); err != nil {
		return nil, err
	}
	return sb, nil
}

// DetachWorkspace removes a workspace from the sandbox it is attached to.
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
	defer m.locks.Lock(sb.ID)()
	defer m.ws.Lock(w.ID)()
	if sb, err = m.store.Sandbox(ctx, sb.ID); err != nil {
		return nil, err
	}
	if w, err = m.store.Workspace(ctx, w.ID); err != nil {
		return nil, err
	}
	if w.AttachedSandbox != sb.ID {
		return w, nil
	}
	if sb.State.InFlight() {
		return nil, invalidState(sb, "detach a workspace from", api.StateStopped, api.StateRunning, api.StateFailed)
	}
	if sb.VMID != 0 && sb.State != api.StateDestroyed {
		if exists, err := m.checkOwner(ctx, sb, false); err != nil {
			return nil, proxmoxError("detach a workspace from", sb, err)
		} else if exists {
			if err := m.ws.Unplug(ctx, w, sb.VMID); err != nil {
				return nil, proxmoxError("detach a workspace from", sb, err)
			}
		}
	}
	if err := m.ws.Release(ctx, w, sb.ID); err != nil {
		return nil, err
	}
	sb.Workspace = ""
	if err := m.store.Save(ctx, sb, sb.State, store.Event{Kind: "sandbox.workspace_detached", Message: "workspace " + w.Name + " detached"}); err != nil {
		return nil, err
	}
	return w, nil
}
