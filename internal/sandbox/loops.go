package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/conntrack"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/workspace"
)

func (m *Manager) busy(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.workers[id]
	return ok
}

// relock re-reads a row under its lock; ok is false when it changed state.
func (m *Manager) relock(ctx context.Context, sb *store.Sandbox) (*store.Sandbox, func(), bool) {
	unlock := m.locks.Lock(sb.ID)
	cur, err := m.store.Sandbox(ctx, sb.ID)
	if err != nil || cur.State != sb.State {
		unlock()
		return nil, nil, false
	}
	return cur, unlock, true
}

// LeaseGC expires sandboxes whose lease ended: TIMEOUT, then the VM is
// destroyed (ownership-checked) and the row DESTROYED; a workspace is only
// detached. Keepalive: a keepalive sandbox that is the current sandbox of a
// live session has its lease renewed (now + its TTL) instead.
func (m *Manager) LeaseGC(ctx context.Context) error {
	rows, err := m.store.Sandboxes(ctx, store.Filter{States: []api.State{api.StateRunning, api.StateReady, api.StateStopped, api.StateSuspended}})
	if err != nil {
		return err
	}
	now := m.now()
	var errs []error
	for _, sb := range rows {
		if sb.LeaseExpiresAt == nil || sb.LeaseExpiresAt.After(now) || m.busy(sb.ID) {
			continue
		}
		cur, unlock, ok := m.relock(ctx, sb)
		if !ok {
			continue
		}
		if cur.Keepalive && cur.TTLSeconds > 0 {
			if ses, err := m.store.SessionOfSandbox(ctx, cur.ID); err == nil {
				exp := now.Add(time.Duration(cur.TTLSeconds) * time.Second).UTC()
				cur.LeaseExpiresAt = &exp
				err = m.store.Save(ctx, cur, cur.State, store.Event{Kind: "sandbox.lease_kept",
					Message: fmt.Sprintf("keepalive: lease renewed until %s while session %s uses it", exp.Format(time.RFC3339), ses.Name)})
				unlock()
				if err != nil {
					errs = append(errs, err)
				}
				continue
			}
		}
		err := m.expire(ctx, cur, fmt.Sprintf("lease expired at %s", cur.LeaseExpiresAt.Format(time.RFC3339)))
		unlock()
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// expire moves a row to TIMEOUT and destroys its VM; the caller holds the lock.
func (m *Manager) expire(ctx context.Context, sb *store.Sandbox, why string) error {
	sb.Error = why
	if err := m.save(ctx, sb, api.StateTimeout, "sandbox.timeout", why); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(m.ctx, 5*time.Minute)
	defer cancel()
	if err := m.removeVM(wctx, sb); err != nil {
		if errors.Is(err, owner.ErrNotOwned) {
			return m.lost(ctx, sb, "destroy the expired", err)
		}
		_ = m.store.AddEvent(ctx, sb, store.Event{Kind: "sandbox.cleanup_failed", Message: err.Error() + " (the row stays TIMEOUT; prune retries)"})
		return fmt.Errorf("sandbox %s: %w", sb.Name, err)
	}
	sb.IP = ""
	return m.save(wctx, sb, api.StateDestroyed, "sandbox.destroy", "destroyed after "+why)
}

// ProvisioningTimeouts ends sandboxes stuck before RUNNING for longer than
// provisioning_timeout with no worker driving them (a worker enforces the
// same deadline itself): TIMEOUT with the step, VM cleaned up.
func (m *Manager) ProvisioningTimeouts(ctx context.Context) error {
	rows, err := m.store.Sandboxes(ctx, store.Filter{States: []api.State{api.StateRequested, api.StateProvisioning, api.StateBooting, api.StateReady, api.StateDestroying}})
	if err != nil {
		return err
	}
	now := m.now()
	var errs []error
	for _, sb := range rows {
		if sb.State == api.StateDestroying {
			// A destroy whose Proxmox call failed: retry it in the background.
			if !m.busy(sb.ID) {
				m.startWorker(sb.ID)
			}
			continue
		}
		if m.busy(sb.ID) || now.Sub(sb.UpdatedAt) < m.opts.ProvisioningTimeout {
			continue
		}
		cur, unlock, ok := m.relock(ctx, sb)
		if !ok {
			continue
		}
		why := fmt.Sprintf("provisioning did not finish within %s (stuck at step %s)", m.opts.ProvisioningTimeout, cur.Step)
		cur.Error = why
		err := m.save(ctx, cur, api.StateTimeout, "sandbox.timeout", why)
		if err == nil {
			if rerr := m.removeVM(ctx, cur); rerr != nil {
				_ = m.store.AddEvent(ctx, cur, store.Event{Kind: "sandbox.cleanup_failed", Message: rerr.Error() + " (the row stays TIMEOUT; prune retries)"})
			} else if cur.VMID != 0 {
				cur.VMID, cur.Error = 0, why+fmt.Sprintf(" (VM %d removed)", sb.VMID)
				err = m.store.Save(ctx, cur, cur.State, store.Event{})
			}
		}
		unlock()
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Reconcile compares the rows with one /cluster/resources listing and repairs
// drift: VM gone → DESTROYED; stopped outside agentd → STOPPED; running while
// STOPPED → started (BOOTING until the guest reports its address). Tagged VMs
// without a row are reported as orphans, never touched. With dryRun nothing
// changes.
func (m *Manager) Reconcile(ctx context.Context, dryRun bool) (*api.ReconcileReport, error) {
	start := time.Now()
	res, err := m.pve.Resources(ctx)
	if err != nil {
		return nil, err
	}
	byID := make(map[int]pve.Resource, len(res))
	for _, r := range res {
		byID[r.VMID] = r
	}
	rows, err := m.store.Sandboxes(ctx, store.Filter{})
	if err != nil {
		return nil, err
	}
	rep := &api.ReconcileReport{DryRun: dryRun, VMs: len(res), Actions: []api.ReconcileAction{}, Orphans: []api.Orphan{}}
	live := map[int]bool{}
	for _, sb := range rows {
		if sb.VMID != 0 {
			live[sb.VMID] = true
		}
		if sb.VMID == 0 || sb.State.InFlight() || sb.State.Terminal() || m.busy(sb.ID) {
			continue
		}
		rep.Checked++
		r, exists := byID[sb.VMID]
		var act *api.ReconcileAction
		switch {
		case !exists:
			act = &api.ReconcileAction{Action: "destroyed", Reason: fmt.Sprintf("VM %d no longer exists in Proxmox", sb.VMID)}
		case r.Status == "stopped" && (sb.State == api.StateRunning || sb.State == api.StateReady):
			act = &api.ReconcileAction{Action: "stopped", Reason: fmt.Sprintf("VM %d was stopped outside agentd", sb.VMID)}
		case r.Status == "running" && sb.State == api.StateStopped:
			act = &api.ReconcileAction{Action: "started", Reason: fmt.Sprintf("VM %d was started outside agentd", sb.VMID)}
		}
		if act == nil {
			continue
		}
		act.Sandbox, act.VMID = sb.Name, sb.VMID
		rep.Actions = append(rep.Actions, *act)
		if dryRun {
			continue
		}
		if err := m.applyDrift(ctx, sb, act); err != nil {
			rep.Actions[len(rep.Actions)-1].Reason += "; not applied: " + err.Error()
		} else {
			m.opts.Metrics.Drift(act.Action)
		}
	}
	ws, err := m.store.Workspaces(ctx)
	if err != nil {
		return nil, err
	}
	holders := map[int]bool{}
	for _, w := range ws {
		holders[w.HolderVMID] = true
	}
	for _, r := range res {
		for _, tag := range r.Tags {
			switch {
			case tag == OwnerTag && !live[r.VMID]:
				rep.Orphans = append(rep.Orphans, api.Orphan{VMID: r.VMID, Name: r.Name, Node: r.Node, Status: r.Status, Kind: "sandbox",
					Note: "tagged agentlab but no live sandbox row; agentd sandbox prune --orphans removes it after re-checking its description"})
			case tag == workspace.HolderTag && !holders[r.VMID]:
				rep.Orphans = append(rep.Orphans, api.Orphan{VMID: r.VMID, Name: r.Name, Node: r.Node, Status: r.Status, Kind: "workspace-holder",
					Note: "a workspace holder without a workspace row: it owns data, so agentd never removes it; inspect and delete by hand"})
			}
		}
	}
	rep.Duration = float64(time.Since(start).Microseconds()) / 1000
	return rep, nil
}

func (m *Manager) applyDrift(ctx context.Context, sb *store.Sandbox, act *api.ReconcileAction) error {
	cur, unlock, ok := m.relock(ctx, sb)
	if !ok {
		return errors.New("state changed meanwhile")
	}
	start := false
	var err error
	switch act.Action {
	case "destroyed":
		if w, werr := m.store.WorkspaceBySandbox(ctx, cur.ID); werr == nil {
			_ = m.ws.Release(ctx, w, cur.ID)
		}
		m.removeSnippet(cur)
		cur.IP, cur.Step = "", ""
		err = m.save(ctx, cur, api.StateDestroyed, "sandbox.reconciled", act.Reason)
	case "stopped":
		cur.IP = ""
		err = m.save(ctx, cur, api.StateStopped, "sandbox.reconciled", act.Reason)
	case "started":
		cur.Step, cur.Error = stepRestart, ""
		err = m.save(ctx, cur, api.StateBooting, "sandbox.reconciled", act.Reason+"; waiting for its address")
		start = err == nil
	}
	unlock()
	if start {
		m.startWorker(cur.ID)
	}
	return err
}

// Orphans lists tagged VMs that no live row accounts for.
func (m *Manager) Orphans(ctx context.Context) ([]api.Orphan, error) {
	rep, err := m.Reconcile(ctx, true)
	if err != nil {
		return nil, err
	}
	return rep.Orphans, nil
}

// PruneOrphans destroys orphan sandbox VMs whose description names a sandbox
// of this agent that is gone (DESTROYED or unknown id with our marker), after
// re-reading each VM's config. Workspace holders are never pruned.
func (m *Manager) PruneOrphans(ctx context.Context) (destroyed, kept []api.Orphan, err error) {
	orphans, err := m.Orphans(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, o := range orphans {
		if o.Kind != "sandbox" {
			kept = append(kept, o)
			continue
		}
		cfg, err := m.pve.Config(ctx, o.VMID)
		if err != nil {
			o.Note = "could not re-read its config: " + err.Error()
			kept = append(kept, o)
			continue
		}
		desc, _ := cfg["description"].(string)
		tags, _ := cfg["tags"].(string)
		id := ""
		for _, line := range strings.Split(desc, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "agentlab-sandbox-id: "); ok {
				id = v
			}
		}
		o.SandboxID = id
		switch {
		case !strings.Contains(";"+tags+";", ";"+OwnerTag+";"):
			o.Note = "the agentlab tag is gone now; left alone"
		case id == "":
			o.Note = "tagged agentlab but its description names no sandbox id; left alone (not provably ours)"
		default:
			if sb, err := m.store.Sandbox(ctx, id); err == nil && sb.State != api.StateDestroyed {
				o.Note = fmt.Sprintf("its description names live sandbox %s; left alone", sb.Name)
				break
			}
			if err := m.pve.Stop(ctx, o.VMID); err != nil && !errors.Is(err, pve.ErrNotFound) {
				o.Note = "stop failed: " + err.Error()
				break
			}
			if err := m.pve.Destroy(ctx, o.VMID); err != nil && !errors.Is(err, pve.ErrNotFound) {
				o.Note = "destroy failed: " + err.Error()
				break
			}
			o.Note = "destroyed: its description names sandbox " + id + ", which is gone"
			_ = m.store.AddEvent(ctx, nil, store.Event{Kind: "sandbox.orphan_destroyed", Message: fmt.Sprintf("VM %d (%s): %s", o.VMID, o.Name, o.Note)})
			destroyed = append(destroyed, o)
			continue
		}
		kept = append(kept, o)
	}
	return destroyed, kept, nil
}

// IdleStatus says why idle stop is not acting, or "".
func (m *Manager) IdleStatus() string {
	m.idleMu.Lock()
	defer m.idleMu.Unlock()
	if !m.opts.IdleStopEnabled {
		return "disabled (idle_stop_enabled: false)"
	}
	return m.idleErr
}

// IdleStop stops RUNNING sandboxes idle for their window (profile
// behavior.idle_stop_minutes_default, else the config's; 0 disables). Idle means
// all of: no ESTABLISHED TCP flow to the sandbox's address on port 22
// (conntrack), CPU below idle_stop_cpu_threshold in /cluster/resources, and no
// touch (API or guest heartbeat). If conntrack cannot be read nothing is
// stopped, and the reason is reported once (event) and in status.
func (m *Manager) IdleStop(ctx context.Context) error {
	if !m.opts.IdleStopEnabled {
		return nil
	}
	rows, err := m.store.Sandboxes(ctx, store.Filter{States: []api.State{api.StateRunning}})
	if err != nil || len(rows) == 0 {
		return err
	}
	out, cerr := m.opts.Conntrack(ctx)
	m.idleMu.Lock()
	prevErr := m.idleErr
	if cerr != nil {
		m.idleErr = "not acting: cannot read SSH activity: " + cerr.Error()
		// Unknown activity counts as activity: the idle window restarts once
		// SSH flows can be read again.
		for _, sb := range rows {
			m.lastActive[sb.ID] = m.now()
		}
	} else {
		m.idleErr = ""
	}
	m.idleMu.Unlock()
	if cerr != nil {
		if prevErr == "" {
			_ = m.store.AddEvent(ctx, nil, store.Event{Kind: "idle_stop.unavailable", Message: "idle stop stops nothing until SSH activity can be read: " + cerr.Error()})
		}
		return cerr
	}
	flows := conntrack.Established(out)
	res, err := m.pve.Resources(ctx)
	if err != nil {
		return err
	}
	cpu := make(map[int]float64, len(res))
	for _, r := range res {
		cpu[r.VMID] = r.CPU
	}
	now := m.now()
	var errs []error
	for _, sb := range rows {
		window := m.idleWindow(sb)
		if window <= 0 {
			continue
		}
		m.idleMu.Lock()
		last := m.lastActive[sb.ID]
		if last.IsZero() {
			last = m.started
		}
		for _, t := range []*time.Time{&sb.UpdatedAt, sb.LastUsedAt} {
			if t != nil && t.After(last) {
				last = *t
			}
		}
		ssh := false
		if ip, err := netip.ParseAddr(sb.IP); err == nil {
			ssh = flows[ip]
		}
		c, known := cpu[sb.VMID]
		busy := !known || c > m.opts.IdleStopCPUThreshold
		if ssh || busy {
			m.lastActive[sb.ID] = now
			m.idleMu.Unlock()
			continue
		}
		m.lastActive[sb.ID] = last
		m.idleMu.Unlock()
		if now.Sub(last) < window {
			continue
		}
		cur, unlock, ok := m.relock(ctx, sb)
		if !ok {
			continue
		}
		why := fmt.Sprintf("idle stop after %s without activity: no SSH flow to %s:22, CPU %.1f%% below %.1f%%, no touch since %s",
			window, sb.IP, c*100, m.opts.IdleStopCPUThreshold*100, last.UTC().Format(time.RFC3339))
		_, err := m.stopLocked(cur, "sandbox.idle_stop", why)
		unlock()
		if err == nil {
			m.opts.Metrics.IdleStop()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("idle stop %s: %w", sb.Name, err))
		}
		m.idleMu.Lock()
		delete(m.lastActive, sb.ID)
		m.idleMu.Unlock()
	}
	return errors.Join(errs...)
}

func (m *Manager) idleWindow(sb *store.Sandbox) time.Duration {
	minutes := m.opts.IdleStopMinutesDefault
	if p := m.profiles[sb.Profile]; p != nil && p.Behavior.IdleStopMinutes != nil {
		minutes = *p.Behavior.IdleStopMinutes
	}
	return time.Duration(minutes) * time.Minute
}
