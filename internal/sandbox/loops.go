package sandbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/conntrack"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
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
		if sb.State == api.StateSuspended && !m.opts.LeaseCountsWhilePaused {
			continue // the clock stands still while it is hibernated
		}
		cur, unlock, ok := m.relock(ctx, sb)
		if !ok {
			continue
		}
		// The listing is from before the lock: a renew (or a hibernate and
		// resume, which moves the lease) may have committed in between, and
		// the row held now is the one to judge.
		if cur.LeaseExpiresAt == nil || cur.LeaseExpiresAt.After(now) || cur.State == api.StateSuspended && !m.opts.LeaseCountsWhilePaused {
			unlock()
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
	if err := m.removeVM(wctx, sb, 0); err != nil {
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
	if err := m.ws.RetryDeletes(ctx); err != nil {
		errs = append(errs, err)
	}
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
			if rerr := m.removeVM(ctx, cur, 0); rerr != nil {
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

// IdleStatus says why idle stop is not acting, or "".
func (m *Manager) IdleStatus() string {
	m.idleMu.Lock()
	defer m.idleMu.Unlock()
	if !m.opts.IdleStopEnabled {
		return "disabled (idle_stop_enabled: false)"
	}
	if m.opts.IdleStopOff != "" {
		return m.opts.IdleStopOff
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
	if !m.opts.IdleStopEnabled || m.opts.IdleStopOff != "" {
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
	remote, known := m.remoteActivity()
	for a := range remote {
		flows[a] = true
	}
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
		// On another node only that node's agent sees the SSH flows: with
		// no fresh report they are unknown, which counts as activity.
		ssh := cmp.Or(sb.Node, m.opts.Node) != m.opts.Node && !known[sb.Node]
		if ip, err := netip.ParseAddr(sb.IP); err == nil && flows[ip] {
			ssh = true
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
		// A touch may have committed while the lock was awaited.
		if cur.LastUsedAt != nil && now.Sub(*cur.LastUsedAt) < window {
			unlock()
			continue
		}
		action := m.idleAction(sb)
		why := fmt.Sprintf("idle %s after %s without activity: no SSH flow to %s:22, CPU %.1f%% below %.1f%%, no touch since %s",
			action, window, sb.IP, c*100, m.opts.IdleStopCPUThreshold*100, last.UTC().Format(time.RFC3339))
		if action == profile.IdleHibernate {
			_, err = m.hibernateLocked(cur, "sandbox.idle_hibernate", why)
		} else {
			_, err = m.stopLocked(cur, "sandbox.idle_stop", why)
		}
		unlock()
		if err == nil {
			m.opts.Metrics.IdleStop()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("idle %s %s: %w", action, sb.Name, err))
		}
		m.idleMu.Lock()
		delete(m.lastActive, sb.ID)
		m.idleMu.Unlock()
	}
	return errors.Join(errs...)
}

// idleAction is the profile's behavior.idle_action (stop unless it says
// hibernate): hibernation keeps the guest's state and, by default, its lease.
func (m *Manager) idleAction(sb *store.Sandbox) string {
	if p := m.profiles[sb.Profile]; p != nil && p.Behavior.IdleAction == profile.IdleHibernate {
		return profile.IdleHibernate
	}
	return profile.IdleStop
}

func (m *Manager) idleWindow(sb *store.Sandbox) time.Duration {
	minutes := m.opts.IdleStopMinutesDefault
	if p := m.profiles[sb.Profile]; p != nil && p.Behavior.IdleStopMinutes != nil {
		minutes = *p.Behavior.IdleStopMinutes
	}
	return time.Duration(minutes) * time.Minute
}
