package sandbox

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// stepClaim is the step of a row that took over a warm-pool member: its VM
// runs already and is given the new sandbox's name, tags, hostname and
// workspace before the common boot path (address, bootstrap) finishes it.
const stepClaim = "claim"

// poolState is the Manager's warm-pool bookkeeping.
type poolState struct {
	fill   sync.Mutex // one fill at a time (loop runs and kicks)
	again  sync.Mutex // guards kicked
	kicked bool       // a kick's fill is scheduled and has not started

	slots nodeSlots // pool clones per node

	errMu sync.Mutex
	errs  map[string]string // profile → last pool error
}

// poolRequest is the Request of a warm-pool member: the profile version it
// is built from. A claim replaces it with the create's canonical request.
type poolRequest struct {
	Pool         string `json:"pool"`
	ProfileHash  string `json:"profile_hash"`
	TemplateVMID int    `json:"template_vmid"`
}

// IsPoolMember reports whether the row is an unclaimed warm-pool member:
// members are named after their id, a name no client may choose (ids'
// prefixes are reserved), and a claim gives the row the client's name.
func IsPoolMember(sb *store.Sandbox) bool { return sb.Name == sb.ID }

func poolOf(sb *store.Sandbox) poolRequest {
	var r poolRequest
	_ = json.Unmarshal([]byte(sb.Request), &r)
	return r
}

// poolSize is the pool a profile asks for: the runtime override if one is
// stored, else the profile's pool key.
func (m *Manager) poolSize(ctx context.Context, p *profile.Profile) (store.PoolSize, string, error) {
	o, err := m.store.PoolOverride(ctx, p.Name)
	if err != nil {
		return store.PoolSize{}, "", err
	}
	if o != nil {
		return *o, "override", nil
	}
	if p.Pool != nil {
		return store.PoolSize{MinReady: p.Pool.MinReady, Max: p.Pool.Max}, "profile", nil
	}
	return store.PoolSize{}, "profile", nil
}

// Pools reports every profile's pool.
func (m *Manager) Pools(ctx context.Context) ([]api.Pool, error) {
	ctx = auth.Host(ctx)
	rows, err := m.store.Sandboxes(ctx, store.Filter{})
	if err != nil {
		return nil, err
	}
	out := []api.Pool{}
	for _, name := range m.profiles.Names() {
		pl, err := m.poolOfProfile(ctx, m.profiles[name], rows)
		if err != nil {
			return nil, err
		}
		out = append(out, pl)
	}
	return out, nil
}

// Pool reports one profile's pool.
func (m *Manager) Pool(ctx context.Context, name string) (*api.Pool, error) {
	ctx = auth.Host(ctx)
	p, err := m.profile(name)
	if err != nil {
		return nil, err
	}
	rows, err := m.store.Sandboxes(ctx, store.Filter{Profile: name})
	if err != nil {
		return nil, err
	}
	pl, err := m.poolOfProfile(ctx, p, rows)
	return &pl, err
}

func (m *Manager) profile(name string) (*profile.Profile, error) {
	p, ok := m.profiles[name]
	if !ok {
		return nil, &api.Error{Status: http.StatusNotFound, Code: api.CodeProfileNotFound, Field: "profile",
			Message: fmt.Sprintf("profile %q does not exist (available: %s)", name, strings.Join(m.profiles.Names(), ", "))}
	}
	return p, nil
}

func (m *Manager) poolOfProfile(ctx context.Context, p *profile.Profile, rows []*store.Sandbox) (api.Pool, error) {
	size, source, err := m.poolSize(ctx, p)
	if err != nil {
		return api.Pool{}, err
	}
	claimed, err := m.store.PoolClaims(ctx, p.Name)
	if err != nil {
		return api.Pool{}, err
	}
	pl := api.Pool{Profile: p.Name, MinReady: size.MinReady, Max: size.Max, Source: source, Claimed: claimed, ProfileHash: p.Hash()}
	for _, sb := range rows {
		if sb.Profile != p.Name || !IsPoolMember(sb) {
			continue
		}
		switch {
		case sb.State == api.StatePooled:
			pl.Ready++
		case sb.State.InFlight():
			pl.Building++
		}
	}
	m.pool.errMu.Lock()
	pl.LastError = m.pool.errs[p.Name]
	m.pool.errMu.Unlock()
	return pl, nil
}

// SetPool stores a runtime override of a profile's pool (clear drops it)
// and refills at once.
func (m *Manager) SetPool(ctx context.Context, name string, req api.SetPoolRequest) (*api.Pool, error) {
	ctx = auth.Host(ctx)
	if _, err := m.profile(name); err != nil {
		return nil, err
	}
	var size *store.PoolSize
	switch {
	case req.Clear && (req.MinReady != nil || req.Max != nil):
		return nil, api.FieldError("clear", "cannot be combined with min_ready or max")
	case !req.Clear && (req.MinReady == nil || req.Max == nil):
		return nil, api.FieldError("min_ready", "min_ready and max are both required (or clear: true to use the profile's pool key again)")
	case !req.Clear:
		if e := api.ValidatePool("", *req.MinReady, *req.Max); e != nil {
			return nil, e
		}
		size = &store.PoolSize{MinReady: *req.MinReady, Max: *req.Max}
	}
	if err := m.store.SetPoolOverride(ctx, name, size); err != nil {
		return nil, err
	}
	msg := fmt.Sprintf("pool of profile %s cleared: the profile's pool key applies", name)
	if size != nil {
		msg = fmt.Sprintf("pool of profile %s set to min_ready %d, max %d", name, size.MinReady, size.Max)
	}
	_ = m.store.AddEvent(ctx, nil, store.Event{Kind: "pool.set", Message: msg})
	m.KickPool()
	return m.Pool(ctx, name)
}

// KickPool runs a fill in the background now (after a claim, an override):
// a pool refills as soon as it is drawn on, not at the next loop tick.
// Kicks arriving while one waits coalesce into it.
func (m *Manager) KickPool() {
	m.pool.again.Lock()
	if m.pool.kicked {
		m.pool.again.Unlock()
		return
	}
	m.pool.kicked = true
	m.pool.again.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.pool.fill.Lock()
		defer m.pool.fill.Unlock()
		// From here on a new kick schedules another fill: this one may have
		// read the rows before the change that kick is about.
		m.pool.again.Lock()
		m.pool.kicked = false
		m.pool.again.Unlock()
		if err := m.poolFillOnce(m.ctx); err != nil && m.ctx.Err() == nil {
			m.opts.Log.Warn("pool fill", "err", err)
		}
	}()
}

// PoolFill is the pool loop: per profile it retires members that are
// unhealthy (guest agent silent), outdated (another profile version or
// template) or failed, trims a pool above max, and starts new members until
// min_ready are ready or building. Building is bounded per node by
// pool_clone_concurrency at the clone step, so a large deficit queues
// instead of piling clones onto the template's lock. Fills are serial.
func (m *Manager) PoolFill(ctx context.Context) error {
	m.pool.fill.Lock()
	defer m.pool.fill.Unlock()
	return m.poolFillOnce(ctx)
}

func (m *Manager) poolFillOnce(ctx context.Context) error {
	ctx = auth.Host(ctx)
	rows, err := m.store.Sandboxes(ctx, store.Filter{})
	if err != nil {
		return err
	}
	byProfile := map[string][]*store.Sandbox{}
	for _, sb := range rows {
		if IsPoolMember(sb) {
			byProfile[sb.Profile] = append(byProfile[sb.Profile], sb)
		}
	}
	var errs []error
	for name, members := range byProfile {
		if m.profiles[name] == nil {
			for _, sb := range members {
				if err := m.retireMember(ctx, sb, "its profile is no longer loaded"); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	for _, name := range m.profiles.Names() {
		err := m.fillProfile(ctx, m.profiles[name], byProfile[name])
		m.pool.errMu.Lock()
		if m.pool.errs == nil {
			m.pool.errs = map[string]string{}
		}
		if err != nil {
			m.pool.errs[name] = err.Error()
			errs = append(errs, fmt.Errorf("pool of profile %s: %w", name, err))
		} else {
			delete(m.pool.errs, name)
		}
		m.pool.errMu.Unlock()
	}
	return errors.Join(errs...)
}

func (m *Manager) fillProfile(ctx context.Context, p *profile.Profile, members []*store.Sandbox) error {
	size, _, err := m.poolSize(ctx, p)
	if err != nil {
		return err
	}
	hash := p.Hash()
	var ready []*store.Sandbox
	building, failed := 0, ""
	var errs []error
	for _, sb := range members {
		req := poolOf(sb)
		switch {
		case sb.State == api.StatePooled:
			why := ""
			if req.ProfileHash != hash || req.TemplateVMID != p.TemplateVMID {
				why = fmt.Sprintf("built from profile version %s (template %d); the profile is now %s (template %d)", req.ProfileHash, req.TemplateVMID, hash, p.TemplateVMID)
			} else if sb.Cores != 0 && (sb.Cores != p.Resources.Cores || sb.MemoryMB != p.Resources.MemoryMB) {
				// Recorded by reconcile: resized outside agentd.
				why = fmt.Sprintf("it has %d cores and %d MiB, not the profile's %d and %d", sb.Cores, sb.MemoryMB, p.Resources.Cores, p.Resources.MemoryMB)
			} else if perr := m.pve.On(sb.Node).AgentPing(ctx, sb.VMID); perr != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				why = "failed its health check: " + perr.Error()
			}
			if why != "" {
				if err := m.retireMember(ctx, sb, why); err != nil {
					errs = append(errs, err)
				}
				continue
			}
			ready = append(ready, sb)
		case sb.State.InFlight():
			building++
		case sb.State == api.StateFailed || sb.State == api.StateTimeout:
			failed = sb.Error
			if err := m.retireMember(ctx, sb, "it failed to build"); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Above max (lowered, or ready while an override shrank it): the newest
	// go first, the oldest stay for the next claim.
	for len(ready)+building > size.Max && len(ready) > 0 {
		sb := ready[0]
		ready = ready[1:]
		if err := m.retireMember(ctx, sb, fmt.Sprintf("the pool is above its max %d", size.Max)); err != nil {
			errs = append(errs, err)
		}
	}
	want := size.MinReady - len(ready) - building
	if room := size.Max - len(ready) - building; want > room {
		want = room
	}
	if failed != "" && want > 1 {
		// A member just failed to build: try one, not the whole deficit,
		// until the template or profile is fixed.
		want = 1
	}
	for i := 0; i < want; i++ {
		if err := m.addMember(ctx, p, hash); err != nil {
			errs = append(errs, err)
			break
		}
	}
	if failed != "" {
		errs = append(errs, fmt.Errorf("a member failed to build (%s); fix the template or profile, the pool retries one at a time", failed))
	}
	return errors.Join(errs...)
}

// addMember records a new member and starts building it. It has no lease,
// no keepalive and no user tags; its only tag beyond the owner's says what
// it is.
func (m *Manager) addMember(ctx context.Context, p *profile.Profile, hash string) error {
	id := newID()
	req, _ := json.Marshal(poolRequest{Pool: p.Name, ProfileHash: hash, TemplateVMID: p.TemplateVMID})
	sb := &store.Sandbox{Sandbox: api.Sandbox{ID: id, Name: id, Profile: p.Name, State: api.StateRequested, Node: m.opts.Node,
		Tags: []string{owner.PoolTag}, Step: stepAllocate}, Request: string(req)}
	if err := m.store.CreateSandbox(ctx, sb, store.Event{Kind: "pool.member_requested",
		Message: fmt.Sprintf("warm-pool member of profile %s (version %s) requested", p.Name, hash)}); err != nil {
		return fmt.Errorf("add a pool member: %w", err)
	}
	m.startWorker(id)
	return nil
}

// retireMember destroys an unclaimed member. The loop decided from rows it
// read before its health checks and earlier retirements, during which a
// create may have claimed the member and even brought it to RUNNING: the
// row is checked again under its lock, and a claim landing after that
// check loses the state compare-and-set (POOLED is gone). Either way a
// member already claimed is left to its new owner.
func (m *Manager) retireMember(ctx context.Context, sb *store.Sandbox, why string) error {
	_, err := m.destroyIf(ctx, sb.ID, false, "by the pool loop: "+why, IsPoolMember)
	var ae *api.Error
	if errors.Is(err, errKept) || errors.As(err, &ae) && (ae.Code == api.CodeInvalidState || ae.Code == api.CodeConflict) || errors.Is(err, store.ErrStale) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("retire member %s (VM %d, %s): %w", sb.ID, sb.VMID, why, err)
	}
	return nil
}

// poolable reports whether a create may take a pool member: the profile
// has a pool and the create keeps the profile's cores and memory (a member
// booted with them; changing them would be pending until a restart).
// Everything else a create asks for (name, tags, lease, keepalive, a
// workspace, which a running VM takes by hotplug) is given at the claim.
func (m *Manager) poolable(ctx context.Context, c canonical) bool {
	p := m.profiles[c.Profile]
	if p == nil || c.Cores != 0 || c.MemoryMB != 0 || c.Node != "" {
		return false
	}
	if c.Workspace != "" && m.multiNode() {
		return false // members live on one node; the workspace may not
	}
	size, _, err := m.poolSize(ctx, p)
	return err == nil && size.Max > 0
}

// insert records a new sandbox: by claiming a ready pool member when the
// profile has one, else as a cold create. claimed tells the caller which.
func (m *Manager) insert(ctx context.Context, sb *store.Sandbox, c canonical, ev store.Event, claims []store.Claim) (claimed bool, err error) {
	if m.poolable(ctx, c) {
		want := *sb
		got, err := m.store.ClaimPooled(ctx, c.Profile, m.profiles[c.Profile].Hash(), func(row *store.Sandbox) {
			row.Name, row.Team, row.Request, row.Keepalive, row.TTLSeconds = want.Name, want.Team, want.Request, want.Keepalive, want.TTLSeconds
			row.Tags, row.Workspace, row.Step = want.Tags, want.Workspace, stepClaim
			row.CreatedAt = m.now().UTC()
		}, store.Event{Kind: "sandbox.claimed", Message: ev.Message + "; claimed a warm-pool member"}, claims...)
		if err == nil {
			*sb = *got
			return true, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return false, err
		}
	}
	return false, m.store.CreateSandbox(ctx, sb, ev, claims...)
}

// claimVM turns the running pool member into the claiming sandbox: name and
// description (the pool marker dropped), tags, hostname through the guest
// agent, the workspace by hotplug. It then hands the row to the boot path
// (BOOTING, wait_for_ip), which confirms the address, delivers the
// bootstrap file and starts the lease, as for a cold create. Every action
// compares with what the VM has, so a claim resumed after a crash finishes.
// A claim that fails sends the VM to destroy and the row on as a cold create.
func (m *Manager) claimVM(ctx context.Context, sb *store.Sandbox, p *profile.Profile) error {
	err := m.timed(stepClaim, func() error { return m.claimSteps(ctx, sb, p) })
	if err == nil {
		return m.commit(ctx, sb, api.StateBooting, "sandbox.state", fmt.Sprintf("pooled VM %d is sandbox %s now; confirming its address", sb.VMID, sb.Name))
	}
	if ctx.Err() != nil || errors.Is(err, store.ErrStale) {
		return err
	}
	return m.claimFallback(ctx, sb, err)
}

func (m *Manager) claimSteps(ctx context.Context, sb *store.Sandbox, p *profile.Profile) error {
	v, err := m.guard.Must(ctx, m.proof(sb), true)
	if err != nil {
		return err
	}
	if err := stillMember(v, sb); err != nil {
		return err
	}
	// A claim serves only creates of the profile's own resources, which a
	// running VM would take only at its next boot: a member resized outside
	// agentd, or built before the profile changed (a claim resumed after a
	// restart with new profiles), cannot be that sandbox.
	if got := readResources(v.Config); got.Cores != p.Resources.Cores || got.MemoryMB != p.Resources.MemoryMB {
		return fmt.Errorf("member VM %d has %d cores and %d MiB, profile %s asks for %d and %d (resized outside agentd, or the profile changed since the member was built)",
			v.VMID(), got.Cores, got.MemoryMB, p.Name, p.Resources.Cores, p.Resources.MemoryMB)
	}
	want, err := m.wantConfig(ctx, sb, p)
	if err != nil {
		return err
	}
	w, err := m.store.WorkspaceBySandbox(ctx, sb.ID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	want = append(want, pve.Option{Name: "name", Value: m.proof(sb).VMName()}, pve.Option{Name: "description", Value: m.proof(sb).Description()})
	var diff []pve.Option
	for _, o := range want {
		if w != nil && o.Name == w.AttachKey {
			continue // hotplugged below
		}
		if !hasOption(v.Config, o) {
			diff = append(diff, o)
		}
	}
	if err := m.writeSnippet(sb); err != nil {
		return err
	}
	if len(diff) > 0 {
		if err := v.Configure(ctx, diff...); err != nil {
			return err
		}
	}
	if err := m.setHostname(ctx, v, sb.Name); err != nil {
		return err
	}
	if w != nil {
		if err := m.ws.Plug(ctx, w, v); err != nil {
			return fmt.Errorf("hotplug workspace %s: %w", w.Name, err)
		}
	}
	return nil
}

// stillMember checks that the VM taken over was never handed to a user: it
// carries the pool marker, or this claim (resumed after a crash) already
// replaced the marker with its own name. The row alone is not enough: a
// restored backup says POOLED for a member claimed after the backup, whose
// VM is that user's sandbox now (their disk, hostname, bootstrap), with the
// same id. A create with that user's very name is the one case the VM
// cannot tell apart.
func stillMember(v *owner.VM, sb *store.Sandbox) error {
	desc, _ := v.Config["description"].(string)
	mk, _ := owner.Parse(desc)
	if mk.Pool == sb.Profile || mk.Pool == "" && mk.Name == sb.Name {
		return nil
	}
	why := fmt.Sprintf("it is no longer a warm-pool member of profile %s (its description lacks %q): it was handed to sandbox %q already", sb.Profile, "agentlab-pool: "+sb.Profile, mk.Name)
	if mk.Pool != "" {
		why = fmt.Sprintf("it is a warm-pool member of profile %s, not %s", mk.Pool, sb.Profile)
	}
	return &owner.NotOwnedError{VMID: v.VMID(), Reason: why}
}

// setHostname renames the running guest (its cloud-init ran with the
// member's name) through the guest agent.
func (m *Manager) setHostname(ctx context.Context, v *owner.VM, name string) error {
	pid, err := v.Exec(ctx, []string{"hostnamectl", "set-hostname", name}, "")
	if err != nil {
		return fmt.Errorf("set the hostname through the guest agent: %w", err)
	}
	for {
		st, err := v.ExecStatus(ctx, pid)
		if err != nil {
			return fmt.Errorf("set the hostname through the guest agent: %w", err)
		}
		if st.Exited {
			if st.ExitCode == nil || *st.ExitCode != 0 {
				code := "on a signal"
				if st.ExitCode != nil {
					code = fmt.Sprintf("with %d", *st.ExitCode)
				}
				return fmt.Errorf("hostnamectl set-hostname %s exited %s in VM %d: %s", name, code, v.VMID(), strings.TrimSpace(st.ErrData))
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// claimFallback destroys the member's VM (never back to the pool: it may be
// half renamed) and turns the row into a cold create. The workspace claim
// and the row's identity stay; the address goes with the VM.
func (m *Manager) claimFallback(ctx context.Context, sb *store.Sandbox, cause error) error {
	msg := fmt.Sprintf("claim of pooled VM %d failed (%v); destroying it and creating the sandbox cold", sb.VMID, cause)
	v, err := m.vm(ctx, sb)
	if err == nil && errors.Is(cause, owner.ErrNotOwned) {
		// Refused by the claim's own checks (stillMember): the VM passes the
		// sandbox proof but is not the member, so it is not ours to destroy.
		err = cause
	}
	switch {
	case errors.Is(err, owner.ErrNotOwned):
		// Not ours (any more): left alone, and the row no longer points at it.
		msg = fmt.Sprintf("claim of VM %d refused (%v); leaving it alone and creating the sandbox cold", sb.VMID, err)
	case err != nil:
		return fmt.Errorf("%s: %w", msg, err)
	case v != nil:
		if err := v.Stop(ctx); err != nil && !errors.Is(err, pve.ErrNotFound) {
			return fmt.Errorf("%s: stop: %w", msg, err)
		}
		if err := v.Destroy(ctx); err != nil && !errors.Is(err, pve.ErrNotFound) {
			return fmt.Errorf("%s: destroy: %w", msg, err)
		}
	}
	// Destroyed, never there, or not ours: no VM of this row is at the VMID.
	if gerr := m.store.VMGone(ctx, sb.ID, sb.VMID); gerr != nil {
		return gerr
	}
	m.opts.Log.Warn("pool claim failed", "sandbox_id", sb.ID, "sandbox", sb.Name, "vmid", sb.VMID, "err", cause)
	_ = m.store.AddEvent(ctx, sb, store.Event{Kind: "sandbox.claim_failed", Message: msg})
	sb.VMID, sb.IP = 0, ""
	m.syncAddress(sb)
	if err := m.forgetResources(ctx, sb); err != nil {
		return err
	}
	return m.progress(ctx, sb, stepAllocate, "")
}

// forgetResources clears the row's cores and memory, which are the member
// VM's (configure records what Proxmox has, and commit keeps a row's once
// set): the cold VM must get the profile's current ones, as the create
// asked (a claim serves no overrides), not the member's older profile's.
func (m *Manager) forgetResources(ctx context.Context, sb *store.Sandbox) error {
	defer m.locks.Lock(sb.ID)()
	cur, err := m.store.Sandbox(ctx, sb.ID)
	if err != nil {
		return err
	}
	if cur.State != sb.State {
		return fmt.Errorf("sandbox %s is %s now: %w", sb.Name, cur.State, store.ErrStale)
	}
	cur.Cores, cur.MemoryMB = 0, 0
	if err := m.store.Save(ctx, cur, cur.State, store.Event{}); err != nil {
		return err
	}
	sb.Cores, sb.MemoryMB = 0, 0
	return nil
}

// poolCloneSlot bounds the pool clones running at once on the node; a
// user's create never waits for one.
func (m *Manager) poolCloneSlot(ctx context.Context, sb *store.Sandbox) (release func(), err error) {
	if !IsPoolMember(sb) {
		return func() {}, nil
	}
	return m.pool.slots.take(ctx, sb.Node, cmp.Or(m.opts.PoolCloneConcurrency, 2))
}
