package sandbox

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/netpolicy"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/token"
)

// Provisioning steps, persisted in the row so an interrupted run resumes.
const (
	stepPlace    = "place"
	stepAllocate = "allocate_vmid"
	stepClone    = "clone"
	stepConfig   = "configure"
	stepResize   = "resize_disk"
	stepClean    = "clean_snapshot"
	stepAttachWS = "attach_workspace"
	stepStart    = "start"
	stepWaitIP   = "wait_for_ip"
	// stepRestart marks the start of an existing (STOPPED) sandbox: a failure
	// there stops the VM again instead of destroying it.
	stepRestart = "restart"
)

// maxAllocAttempts bounds retries when another client takes our VMID.
const maxAllocAttempts = 5

// createRun is what one worker run learned while it created the VM, so a
// later step of the same run need not ask Proxmox again. It lives only in
// memory: a run resumed after a crash starts empty and every step reads
// what Proxmox has, as before.
type createRun struct {
	// allocated: this run reserved the VMID (nextid), so no earlier attempt
	// of this sandbox can have cloned to it and the clone needs no check
	// for one. A VM someone else put there fails the clone itself (PVE's
	// clone_vm refuses an existing VMID: "config file already exists").
	allocated bool
	// cloned: this run's clone task made the VM; it has no snapshot (a
	// clone copies none) and nothing of ours has started it.
	cloned bool
	// vm: the handle configure proved and wrote through with the proof's
	// digest, its Config updated with what was written (see resize).
	vm *owner.VM
}

// stepError is a failure of one step.
type stepError struct {
	step string
	err  error
}

func (e *stepError) Error() string { return fmt.Sprintf("%s: %v", e.step, e.err) }
func (e *stepError) Unwrap() error { return e.err }

// run drives one sandbox from its current state to RUNNING (or to FAILED
// with the VM cleaned up), or finishes a journaled destroy. It holds the
// sandbox's lock only while saving (see commit), so a stop, destroy, renew or
// touch is answered at once; a destroy cancels it through ctx.
func (m *Manager) run(ctx context.Context, id string) {
	sb, err := m.store.Sandbox(ctx, id)
	if err != nil {
		return
	}
	if sb.State == api.StateDestroying {
		unlock := m.locks.Lock(id)
		defer unlock()
		if sb, err = m.store.Sandbox(ctx, id); err != nil || sb.State != api.StateDestroying {
			return
		}
		_ = m.finishDestroy(ctx, sb, 0)
		return
	}
	if !sb.State.InFlight() && sb.State != api.StateStopped {
		return
	}
	deadline := sb.CreatedAt.Add(m.opts.ProvisioningTimeout)
	if sb.State == api.StateBooting || sb.State == api.StateStopped {
		deadline = m.now().Add(m.opts.ProvisioningTimeout)
	}
	pctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	defer m.cluster.Landed(id) // a run that failed frees its node's slot too
	err = m.provision(pctx, sb)
	if err == nil {
		return
	}
	if m.ctx.Err() != nil {
		// agentd is shutting down: leave the row at its step for Resume.
		return
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		err = &stepError{step: sb.Step, err: cause}
	}
	m.fail(sb, err)
}

// commit is the worker's save: under the lock it re-reads the row, refuses
// if its state moved (a destroy won: ErrStale ends the worker), and writes
// only the fields the worker owns, so a concurrent touch or renew is kept.
func (m *Manager) commit(ctx context.Context, sb *store.Sandbox, to api.State, kind, msg string) error {
	defer m.locks.Lock(sb.ID)()
	cur, err := m.store.Sandbox(ctx, sb.ID)
	if err != nil {
		return err
	}
	if cur.State != sb.State {
		return fmt.Errorf("sandbox %s is %s now: %w", sb.Name, cur.State, store.ErrStale)
	}
	cur.Step, cur.VMID, cur.IP, cur.Error, cur.LeaseExpiresAt = sb.Step, sb.VMID, sb.IP, sb.Error, sb.LeaseExpiresAt
	if cur.Node == "" {
		cur.Node = sb.Node // placed by this worker (step allocate)
	}
	cur.PausedAt = sb.PausedAt
	if cur.Cores == 0 {
		// Learned by configure for a row older than the columns; a resize
		// (which needs a settled sandbox) owns them otherwise.
		cur.Cores, cur.MemoryMB = sb.Cores, sb.MemoryMB
	}
	if cur.State == to {
		err = m.store.Save(ctx, cur, cur.State, store.Event{Kind: kind, Message: msg})
	} else {
		err = m.save(ctx, cur, to, kind, msg)
	}
	if err != nil {
		return err
	}
	*sb = *cur
	return nil
}

func (m *Manager) save(ctx context.Context, sb *store.Sandbox, to api.State, kind, msg string) error {
	from := sb.State
	sb.State = to
	paused, lease := sb.PausedAt, sb.LeaseExpiresAt
	if to == api.StateStopped || to.Terminal() {
		if to == api.StateStopped && paused != nil && lease != nil && !m.opts.LeaseCountsWhilePaused {
			// The clock stood still while it slept: a hibernated sandbox
			// stopped keeps the time it had left, as a resume would, instead
			// of being handed its old deadline (long past) for lease GC.
			exp := lease.Add(m.now().Sub(*paused)).UTC()
			sb.LeaseExpiresAt = &exp
		}
		sb.PausedAt = nil // the hibernation state is gone with the VM's run
	}
	if err := m.store.Save(ctx, sb, from, store.Event{Kind: kind, Message: msg}); err != nil {
		sb.State, sb.PausedAt, sb.LeaseExpiresAt = from, paused, lease
		return err
	}
	m.opts.Metrics.Transition(string(from), string(to))
	if to == api.StateDestroyed {
		m.cluster.Forget(sb.ID)
	}
	m.syncAddress(sb)
	if !portLive(to) {
		m.syncPorts(sb)
	}
	attrs := []any{"sandbox_id", sb.ID, "sandbox", sb.Name, "from", string(from), "to", string(to), "reason", msg}
	if sb.VMID != 0 {
		attrs = append(attrs, "vmid", sb.VMID)
	}
	m.opts.Log.Info("sandbox "+kind, attrs...)
	return nil
}

// syncAddress keeps the host's sets in step with the sandbox: its binding
// (assigned address, MAC, bridge ports, mode) is live while vmMayRun,
// the states in which its VM may run and must be able to send as itself,
// and out otherwise, so nothing the host does not know can send at all.
func (m *Manager) syncAddress(sb *store.Sandbox) {
	if m.opts.Addresses == nil {
		return
	}
	var want netpolicy.Binding
	if sb.VMID != 0 && vmMayRun(sb) && m.onThisNode(sb) {
		if a, err := m.store.Address(context.Background(), sb.ID); err == nil {
			want = netpolicy.Binding{Addr: a, MAC: netpolicy.MAC(a), Ports: netpolicy.Ports(sb.VMID), Mode: netpolicy.Mode(m.profiles[sb.Profile])}
		} else if sb.IP != "" {
			// A sandbox provisioned before agentd assigned addresses: bind
			// what its guest reported (its MAC is Proxmox's).
			if a, err := netip.ParseAddr(sb.IP); err == nil {
				if mac, err := net.ParseMAC(m.guestMAC(sb)); err == nil {
					want = netpolicy.Binding{Addr: a, MAC: mac, Ports: netpolicy.Ports(sb.VMID), Mode: netpolicy.Mode(m.profiles[sb.Profile])}
				}
			}
		}
	}
	m.addrMu.Lock()
	have, had := m.addrs[sb.ID]
	if had == want.Addr.IsValid() && sameBinding(have, want) {
		m.addrMu.Unlock()
		return
	}
	if want.Addr.IsValid() {
		m.addrs[sb.ID] = want
	} else {
		delete(m.addrs, sb.ID)
	}
	m.addrMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if had {
		if err := m.opts.Addresses.Remove(ctx, have); err != nil {
			m.opts.Log.Warn("unbind sandbox address", "sandbox_id", sb.ID, "ip", have.Addr.String(), "err", err)
		}
	}
	if want.Addr.IsValid() {
		err := m.opts.Addresses.Add(ctx, want)
		if err != nil {
			m.opts.Log.Warn("bind sandbox address", "sandbox_id", sb.ID, "ip", want.Addr.String(), "err", err)
		}
		m.addrMu.Lock()
		if err != nil {
			m.addrFailed[sb.ID] = true
		} else {
			delete(m.addrFailed, sb.ID)
		}
		m.addrMu.Unlock()
	}
}

// onThisNode reports whether sb runs on agentd's own node, whose nftables
// sets (Options.Addresses) are the ones syncAddress keeps. Another node's
// sandbox is bound there, by its node's agent (NodeDuties); bound here as
// well, on an SDN VNet its MAC and address would count as this node's, which
// nothing from the tunnel may claim, and its frames would be dropped here.
func (m *Manager) onThisNode(sb *store.Sandbox) bool {
	return cmp.Or(sb.Node, m.opts.Node) == m.opts.Node
}

// vmMayRun reports whether sb's VM may be running: from BOOTING to RUNNING,
// a pool member, and a claim in progress (the member's VM runs throughout).
func vmMayRun(sb *store.Sandbox) bool {
	switch sb.State {
	case api.StateBooting, api.StateReady, api.StateRunning, api.StatePooled:
		return true
	case api.StateProvisioning:
		return sb.Step == stepClaim
	}
	return false
}

// ensureBound adds the sandbox's binding again before its VM starts and
// fails the start if it cannot (syncAddress only logs): on a kernel without
// nft bridge meta the bridge table filters only ports it was told about, so
// a VM started unbound would send unfiltered, as any address and MAC.
func (m *Manager) ensureBound(ctx context.Context, sb *store.Sandbox) error {
	if m.opts.Addresses == nil || !m.onThisNode(sb) {
		return nil // another node's sandbox: bound by its node's agent
	}
	m.addrMu.Lock()
	b, ok := m.addrs[sb.ID]
	failed := m.addrFailed[sb.ID]
	m.addrMu.Unlock()
	if !ok {
		if !m.opts.Subnet.IsValid() {
			return nil // a guest on DHCP (no agent subnet): bound once it reports its address
		}
		return fmt.Errorf("no binding for the sandbox's address: its VM would start unbound")
	}
	if !failed {
		return nil
	}
	if err := m.opts.Addresses.Add(ctx, b); err != nil {
		return fmt.Errorf("bind %s to the host's nftables sets before starting the VM (agentd host network apply loads the tables): %w", b.Addr, err)
	}
	m.addrMu.Lock()
	delete(m.addrFailed, sb.ID)
	m.addrMu.Unlock()
	return nil
}

func sameBinding(a, b netpolicy.Binding) bool {
	return a.Addr == b.Addr && a.MAC.String() == b.MAC.String() && a.Mode == b.Mode && strings.Join(a.Ports, ",") == strings.Join(b.Ports, ",")
}

// guestMAC is the MAC of the VM's net0 as Proxmox has it ("" if unknown).
func (m *Manager) guestMAC(sb *store.Sandbox) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := m.pve.On(sb.Node).Config(ctx, sb.VMID)
	if err != nil {
		return ""
	}
	if net0, _ := cfg["net0"].(string); net0 != "" {
		if mm := macRE.FindStringSubmatch(net0); mm != nil {
			return mm[1]
		}
	}
	return ""
}

// assignAddress gives the sandbox its address before its VM exists, so the
// clone is configured with it and every layer is bound to it from the first
// boot (the guest agent only confirms it later).
func (m *Manager) assignAddress(ctx context.Context, sb *store.Sandbox) error {
	if !m.opts.Subnet.IsValid() {
		return nil
	}
	a, err := m.store.AssignAddress(ctx, sb.ID, m.opts.Subnet, m.opts.HostAddr)
	if err != nil {
		return fmt.Errorf("assign an address of %s: %w", m.opts.Subnet, err)
	}
	if sb.IP == a.String() {
		return nil
	}
	sb.IP = a.String()
	return m.progress(ctx, sb, sb.Step, "assigned address "+sb.IP)
}

// timed runs one provisioning step and records its duration.
func (m *Manager) timed(step string, fn func() error) error {
	start := time.Now()
	err := fn()
	if err == nil {
		m.opts.Metrics.Step(step, time.Since(start))
	}
	return err
}

func (m *Manager) progress(ctx context.Context, sb *store.Sandbox, step, msg string) error {
	sb.Step = step
	kind := "sandbox.step"
	if msg == "" {
		kind = ""
	}
	return m.commit(ctx, sb, sb.State, kind, msg)
}

// provision walks the steps. Every step reads what Proxmox has and applies
// only the difference, so a run resumed after a crash at any point (even
// inside a step) ends with the full configuration; no step is skipped
// because of the stored step name, which only says how far it got.
func (m *Manager) provision(ctx context.Context, sb *store.Sandbox) error {
	p := m.profiles[sb.Profile]
	if p == nil {
		return &stepError{step: sb.Step, err: fmt.Errorf("profile %s is no longer loaded", sb.Profile)}
	}
	if sb.State == api.StateRequested {
		if err := m.commit(ctx, sb, api.StateProvisioning, "sandbox.state", "provisioning started"); err != nil {
			return &stepError{step: stepAllocate, err: err}
		}
	}
	if sb.State == api.StateProvisioning && sb.Step == stepClaim {
		if err := m.claimVM(ctx, sb, p); err != nil {
			return &stepError{step: stepClaim, err: err}
		}
	}
	var run createRun
	if sb.State == api.StateProvisioning {
		var err error
		if sb.Node == "" {
			if err := m.timed(stepPlace, func() error { return m.place(ctx, sb, p) }); err != nil {
				return &stepError{step: stepAllocate, err: err}
			}
		}
		if err := m.claimSlot(ctx, sb); err != nil {
			return &stepError{step: stepAllocate, err: err}
		}
		for attempt := 1; ; attempt++ {
			if sb.VMID == 0 {
				if err = m.allocate(ctx, sb); err != nil {
					return &stepError{step: stepAllocate, err: err}
				}
				run.allocated = true
			}
			if err = m.assignAddress(ctx, sb); err != nil {
				return &stepError{step: stepAllocate, err: err}
			}
			var release func()
			if release, err = m.poolCloneSlot(ctx, sb); err != nil {
				return &stepError{step: stepClone, err: err}
			}
			err = m.timed(stepClone, func() (err error) { run.cloned, err = m.clone(ctx, sb, p, run.allocated); return err })
			release()
			if !errors.Is(err, pve.ErrExists) || attempt == maxAllocAttempts {
				break
			}
			// Someone else created a VM with our VMID between nextid and clone.
			_ = m.store.AddEvent(ctx, sb, store.Event{Kind: "sandbox.vmid_taken",
				Message: fmt.Sprintf("VMID %d was taken by another client; allocating another", sb.VMID)})
			sb.VMID, run.allocated = 0, false
			if err := m.progress(ctx, sb, stepAllocate, ""); err != nil {
				return &stepError{step: stepAllocate, err: err}
			}
		}
		if err != nil {
			return &stepError{step: stepClone, err: err}
		}
		// The slot guards the node's storage lock, which only the clone
		// takes (vdisk_clone, vdisk_alloc); config, resize and the clean
		// snapshot take none. It goes back now and is taken again for the
		// start, so that a node's clones do not wait on others' configs.
		m.cluster.Landed(sb.ID)
		var changed []string
		if err := m.timed(stepConfig, func() (err error) { changed, err = m.configure(ctx, sb, p, &run); return err }); err != nil {
			return &stepError{step: stepConfig, err: err}
		}
		grown := ""
		if err := m.timed(stepResize, func() (err error) { grown, err = m.resize(ctx, sb, p, &run); return err }); err != nil {
			return &stepError{step: stepResize, err: err}
		}
		if p.Behavior.TakesCleanSnapshot() {
			if err := m.timed(stepClean, func() error { return m.cleanSnapshot(ctx, sb, run.cloned) }); err != nil {
				return &stepError{step: stepClean, err: err}
			}
			if err := m.timed(stepAttachWS, func() error { return m.attachAtCreate(ctx, sb, p) }); err != nil {
				return &stepError{step: stepAttachWS, err: err}
			}
		}
		msg := fmt.Sprintf("VM %d configured (%s)", sb.VMID, strings.Join(changed, ", "))
		if len(changed) == 0 {
			msg = fmt.Sprintf("VM %d already had its configuration", sb.VMID)
		}
		if grown != "" {
			msg += "; " + grown
		}
		sb.Step = stepStart
		if err := m.commit(ctx, sb, api.StateBooting, "sandbox.state", msg+"; starting"); err != nil {
			return &stepError{step: stepStart, err: err}
		}
	}
	if sb.State == api.StateStopped {
		if a, err := m.store.Address(ctx, sb.ID); err == nil {
			sb.IP = a.String() // known (and bound) before the VM boots
		}
		if sb.Step != stepRevertBoot {
			sb.Step = stepRestart
		}
		if err := m.commit(ctx, sb, api.StateBooting, "sandbox.state", "starting"); err != nil {
			return &stepError{step: stepRestart, err: err}
		}
	}
	if sb.State == api.StateBooting {
		v, err := m.guard.Must(ctx, m.proof(sb), true)
		if err != nil {
			return &stepError{step: stepStart, err: err}
		}
		if name, _ := v.Config["name"].(string); restarting(sb.Step) && !IsPoolMember(sb) && (name == sb.ID || owner.HasTag(v.Config, owner.PoolTag)) {
			// A rollback ran (reported or not) and restored the name and
			// tags of a clean snapshot taken while the claimed sandbox was
			// a pool member. Only that identity is undone: tags an operator
			// set by hand on a sandbox stay.
			if err := m.restoreIdentity(ctx, v, sb); err != nil {
				return &stepError{step: stepStart, err: err}
			}
		}
		// A VM this run cloned is stopped: nothing of ours started it, and
		// should anyone else have, the start answers "already running",
		// which counts as started. Otherwise ask (a resumed or restart run).
		running := false
		if !run.cloned {
			st, err := m.pve.On(sb.Node).Status(ctx, sb.VMID)
			if err != nil {
				return &stepError{step: stepStart, err: err}
			}
			running = st.Status == "running"
		}
		if err := m.ensureBound(ctx, sb); err != nil {
			return &stepError{step: stepStart, err: err}
		}
		if !running {
			release, err := m.starts.take(ctx, cmp.Or(sb.Node, m.opts.Node), m.cluster.Caps().MaxInFlight)
			if err != nil {
				return &stepError{step: stepStart, err: fmt.Errorf("%w while waiting for a free start slot on node %s", err, cmp.Or(sb.Node, m.opts.Node))}
			}
			err = m.timed(stepStart, func() error { return v.Start(ctx) })
			release()
			if err != nil && !errors.Is(err, pve.ErrRunning) {
				return &stepError{step: stepStart, err: err}
			}
		}
		step := stepWaitIP
		if restarting(sb.Step) {
			step = sb.Step
		}
		m.cluster.Landed(sb.ID) // a clone slot held since placement (a clone found made) is free again
		if err := m.progress(ctx, sb, step, fmt.Sprintf("VM %d started; waiting for the guest agent to report an address", sb.VMID)); err != nil {
			return &stepError{step: stepWaitIP, err: err}
		}
		var ip string
		err = m.timed(stepWaitIP, func() (err error) { ip, err = m.waitIP(ctx, sb); return err })
		if err != nil {
			return &stepError{step: stepWaitIP, err: err}
		}
		if a, err := m.store.Address(ctx, sb.ID); err == nil && a.String() != ip {
			return &stepError{step: stepWaitIP, err: fmt.Errorf("the guest of VM %d reports %s, not its assigned address %s: the template must apply cloud-init's ipconfig0 (network config v1/v2), and nothing else may configure net0; every layer drops what it sends from another address", sb.VMID, ip, a)}
		}
		sb.IP = ip
		if IsPoolMember(sb) {
			// Ready for a claim: no bootstrap token, no lease until then.
			sb.Step = ""
			if err := m.commit(ctx, sb, api.StatePooled, "pool.member_ready", fmt.Sprintf("warm-pool member ready: guest agent answered on %s", ip)); err != nil {
				return &stepError{step: stepWaitIP, err: err}
			}
			return nil
		}
		if sb.Step != stepRestart {
			if err := m.deliverBootstrap(ctx, sb); err != nil {
				return &stepError{step: stepWaitIP, err: err}
			}
		}
		if err := m.commit(ctx, sb, api.StateReady, "sandbox.state", "guest reported "+ip); err != nil {
			return &stepError{step: stepWaitIP, err: err}
		}
	}
	if sb.State == api.StateReady {
		now := m.now()
		msg := "running"
		if sb.PausedAt != nil {
			// Resumed from hibernation: the lease stood still while it slept
			// (unless lease_counts_while_paused), so it moves on by that long.
			paused := now.Sub(*sb.PausedAt)
			if sb.LeaseExpiresAt != nil && !m.opts.LeaseCountsWhilePaused {
				exp := sb.LeaseExpiresAt.Add(paused).UTC()
				sb.LeaseExpiresAt = &exp
			}
			msg = fmt.Sprintf("running, resumed after %s hibernated", paused.Round(time.Second))
			sb.PausedAt = nil
		} else {
			sb.LeaseExpiresAt = nil
			if sb.TTLSeconds > 0 {
				exp := now.Add(time.Duration(sb.TTLSeconds) * time.Second).UTC()
				sb.LeaseExpiresAt = &exp
			}
		}
		sb.Error, sb.Step = "", ""
		if err := m.commit(ctx, sb, api.StateRunning, "sandbox.state", msg); err != nil {
			return &stepError{step: "running", err: err}
		}
	}
	return nil
}

// allocate reserves a VMID and records it in the row before anything is
// created, so a crash never leaves a VM agentd cannot find again.
func (m *Manager) allocate(ctx context.Context, sb *store.Sandbox) error {
	start := time.Now()
	defer func() { m.opts.Metrics.Step(stepAllocate, time.Since(start)) }()
	_, err := m.alloc.Reserve(ctx, func(id int) error {
		sb.VMID, sb.Step = id, stepClone
		err := m.store.Save(ctx, sb, sb.State, store.Event{Kind: "sandbox.step", Message: fmt.Sprintf("reserved VMID %d", id)})
		if err != nil {
			sb.VMID, sb.Step = 0, stepAllocate
		}
		return err
	})
	return err
}

// clone makes the sandbox's VM, unless a VM proving it is ours is already
// at the VMID (a resumed run, or a clone whose answer was lost), in which case
// it waits for that clone to finish. The clone request itself carries the
// proof (description), so an interrupted create always leaves a VM agentd can
// recognise, find and remove.
//
// fresh says this run reserved the VMID: there was no earlier attempt, so
// the check for its clone is skipped and a VM found at the VMID can only be
// someone else's, which the clone request itself refuses (ErrExists, and the
// caller allocates another VMID). cloned reports that this call's clone made
// the VM.
func (m *Manager) clone(ctx context.Context, sb *store.Sandbox, p *profile.Profile, fresh bool) (cloned bool, err error) {
	if !fresh {
		v, err := m.guard.Prove(ctx, m.proof(sb), false)
		if errors.Is(err, owner.ErrNotOwned) {
			return false, &pve.Error{Op: fmt.Sprintf("clone to VM %d", sb.VMID), Msg: "VM already exists and is not this sandbox's: " + err.Error(), Kind: pve.ErrExists}
		}
		if err != nil {
			return false, err
		}
		if v != nil {
			if err := m.waitUnlocked(ctx, sb.Node, sb.VMID); err != nil {
				return false, err
			}
			return false, m.progress(ctx, sb, stepConfig, fmt.Sprintf("found VM %d cloned by an earlier run", sb.VMID))
		}
		if !untagged(sb) {
			// A run resumed past the clone whose VM is gone (an earlier
			// run's clean-up destroyed it and died before saving the
			// failure): the row goes back to the clone step first, so that
			// until the new VM is configured it is proven as a clone is
			// (by its description, no tag yet), not refused as not ours.
			if err := m.progress(ctx, sb, stepClone, fmt.Sprintf("VM %d of step %s is gone; cloning it again", sb.VMID, sb.Step)); err != nil {
				return false, err
			}
		}
	}
	if p.Template != "" {
		m.freshInventory(ctx) // a run resumed after a restart may come before any inventory
	}
	tmpl, tmplNode, why := m.templateFor(p, sb.Node)
	if tmpl == 0 {
		return false, fmt.Errorf("node %s: %s", sb.Node, why)
	}
	err = m.guard.Clone(ctx, tmpl, tmplNode, m.proof(sb), pve.CloneOptions{Full: p.Storage.Clone == "full", Storage: p.Storage.Storage})
	if errors.Is(err, pve.ErrUnsupported) && p.Storage.Clone != "full" {
		return false, fmt.Errorf("%w (a linked clone needs a template (qm template %d) on lvmthin, zfspool or dir storage; or set storage.clone: full in profile %s)", err, tmpl, p.Name)
	}
	if errors.Is(err, pve.ErrNotFound) {
		return false, fmt.Errorf("%w (template VM %d of profile %s does not exist on node %s)", err, tmpl, p.Name, cmp.Or(tmplNode, m.opts.Node))
	}
	if err != nil {
		return false, err
	}
	return true, m.progress(ctx, sb, stepConfig, fmt.Sprintf("cloned template %d to VM %d (%s clone)", tmpl, sb.VMID, p.Storage.Clone))
}

// waitUnlocked waits for a clone still in progress (lock=clone) to finish.
func (m *Manager) waitUnlocked(ctx context.Context, node string, vmid int) error {
	return m.waitLock(ctx, node, vmid, func(lock string) bool { return lock == "" })
}

// lockWaitError: a VM's lock outlived the wait for it.
type lockWaitError struct {
	VMID int
	Lock string
	Err  error // the context's error
}

func (e *lockWaitError) Error() string {
	return fmt.Sprintf("VM %d still locked (%s): %v", e.VMID, e.Lock, e.Err)
}

func (e *lockWaitError) Unwrap() error { return e.Err }

// waitLock polls the VM's lock until free accepts it or ctx ends.
func (m *Manager) waitLock(ctx context.Context, node string, vmid int, free func(lock string) bool) error {
	for {
		st, err := m.pve.On(node).Status(ctx, vmid)
		if err != nil {
			return err
		}
		if free(st.Lock) {
			return nil
		}
		select {
		case <-ctx.Done():
			return &lockWaitError{VMID: vmid, Lock: st.Lock, Err: ctx.Err()}
		case <-time.After(m.opts.IPPoll):
		}
	}
}

func (m *Manager) snippetName(sb *store.Sandbox) string { return "agentlab-" + sb.ID + ".yaml" }

type cloudUser struct {
	Name       string   `yaml:"name"`
	Sudo       string   `yaml:"sudo"`
	Shell      string   `yaml:"shell"`
	LockPasswd bool     `yaml:"lock_passwd"`
	SSHKeys    []string `yaml:"ssh_authorized_keys,omitempty"`
}

type cloudFile struct {
	Path        string `yaml:"path"`
	Permissions string `yaml:"permissions"`
	Owner       string `yaml:"owner"`
	Content     string `yaml:"content"`
}

// Bootstrap is what the guest finds in /etc/agentlab/bootstrap.json.
type Bootstrap struct {
	URL       string `json:"url"`
	Token     string `json:"token"`
	SandboxID string `json:"sandbox_id"`
}

// BootstrapPath is where agentd writes the bootstrap file in the guest,
// through the guest agent.
const BootstrapPath = "/etc/agentlab/bootstrap.json"

type cloudConfig struct {
	Hostname        string      `yaml:"hostname"`
	ManageEtcHosts  bool        `yaml:"manage_etc_hosts"`
	SSHPasswordAuth bool        `yaml:"ssh_pwauth"`
	Users           []cloudUser `yaml:"users"`
	Growpart        struct {
		Mode    string   `yaml:"mode"`
		Devices []string `yaml:"devices"`
	} `yaml:"growpart"`
	ResizeRootfs bool        `yaml:"resize_rootfs"`
	WriteFiles   []cloudFile `yaml:"write_files,omitempty"`
	BootCmd      []string    `yaml:"bootcmd,omitempty"`
}

// writeSnippet writes the cloud-init user-data that replaces Proxmox's own
// (cicustom user=…), atomically, readable only by root.
func (m *Manager) writeSnippet(sb *store.Sandbox) error {
	cc := cloudConfig{Hostname: sb.Name, ManageEtcHosts: true, ResizeRootfs: true,
		Users: []cloudUser{{Name: SSHUser, Sudo: "ALL=(ALL) NOPASSWD:ALL", Shell: "/bin/bash", LockPasswd: true, SSHKeys: m.opts.SSHPublicKeys}}}
	cc.Growpart.Mode, cc.Growpart.Devices = "auto", []string{"/"}
	if m.opts.GuestURL != "" {
		// The directory the bootstrap file is delivered into later, through
		// the guest agent (deliverBootstrap): root only. The snippet carries
		// no secret, so host storage never holds the token.
		cc.BootCmd = []string{"mkdir -p -m 0700 /etc/agentlab"}
	}
	body, err := yaml.Marshal(cc)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(m.opts.SnippetsDir, 0o755); err != nil {
		return fmt.Errorf("snippets_dir: %w", err)
	}
	path := filepath.Join(m.opts.SnippetsDir, m.snippetName(sb))
	tmp, err := os.CreateTemp(m.opts.SnippetsDir, ".agentlab-*.tmp")
	if err != nil {
		return fmt.Errorf("write cloud-init snippet: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append([]byte("#cloud-config\n"), body...)); err != nil {
		tmp.Close()
		return fmt.Errorf("write cloud-init snippet: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// deliverBootstrap issues the sandbox's single-use bootstrap token, bound
// from issuance to its assigned address, and writes the bootstrap file into
// the guest through the guest agent, which has just answered. A fresh token
// each time: one written earlier (a retried step) stops working.
func (m *Manager) deliverBootstrap(ctx context.Context, sb *store.Sandbox) error {
	if m.opts.GuestURL == "" {
		return nil
	}
	bound := ""
	if a, err := m.store.Address(ctx, sb.ID); err == nil {
		bound = a.String()
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	// The file carries a token that lets its reader act as the sandbox:
	// the VM is proven again first, since the wait for the guest gives
	// anyone time to put another VM (even one answering with the sandbox's
	// address, such as a restored copy of its settings) at the VMID.
	v, err := m.guard.Must(ctx, m.proof(sb), true)
	if err != nil {
		return err
	}
	raw, hash := token.New()
	if err := m.store.DeleteTokens(ctx, sb.ID, store.TokenBootstrap); err != nil {
		return err
	}
	if err := m.store.CreateToken(ctx, &store.Token{Hash: hash, Kind: store.TokenBootstrap, SandboxID: sb.ID,
		ExpiresAt: m.now().Add(m.opts.BootstrapTTL), BoundIP: bound}); err != nil {
		return fmt.Errorf("issue bootstrap token: %w", err)
	}
	bj, _ := json.Marshal(Bootstrap{URL: m.opts.GuestURL, Token: raw, SandboxID: sb.ID})
	if err := v.WriteFile(ctx, BootstrapPath, bj); err != nil {
		return fmt.Errorf("deliver the bootstrap file: %w", err)
	}
	return m.store.AddEvent(ctx, sb, store.Event{Kind: "bootstrap.written", Message: fmt.Sprintf("bootstrap file written to %s through the guest agent; token bound to %s", BootstrapPath, bound)})
}

func (m *Manager) removeSnippet(sb *store.Sandbox) {
	_ = os.Remove(filepath.Join(m.opts.SnippetsDir, m.snippetName(sb)))
}

// wantConfig is the configuration provisioning gives a sandbox's VM.
func (m *Manager) wantConfig(ctx context.Context, sb *store.Sandbox, p *profile.Profile) ([]pve.Option, error) {
	tags := append([]string{OwnerTag}, sb.Tags...)
	opts := []pve.Option{
		{Name: "tags", Value: strings.Join(tags, ";")},
		{Name: "cores", Value: cmp.Or(sb.Cores, p.Resources.Cores)},
		{Name: "memory", Value: strconv.Itoa(cmp.Or(sb.MemoryMB, p.Resources.MemoryMB))},
		{Name: "net0", Value: fmt.Sprintf("%s,bridge=%s,firewall=1", p.Network.Model, p.Network.Bridge)},
		{Name: "ipconfig0", Value: "ip=dhcp"},
		{Name: "cicustom", Value: fmt.Sprintf("user=%s:snippets/%s", m.opts.SnippetsStorage, m.snippetName(sb))},
		{Name: "agent", Value: "enabled=1"},
		{Name: "onboot", Value: 0},
	}
	if a, err := m.store.Address(ctx, sb.ID); err == nil {
		// Static: no DHCP on the agent bridge. The MAC is agentd's too, so the
		// bridge table and Proxmox's macfilter bind the same pair.
		opts[3].Value = fmt.Sprintf("%s=%s,bridge=%s,firewall=1", p.Network.Model, netpolicy.MAC(a), p.Network.Bridge)
		opts[4].Value = fmt.Sprintf("ip=%s/%d,gw=%s", a, m.opts.Subnet.Bits(), m.opts.HostAddr)
		if p.Network.Mode != "off" {
			// The host's resolver on the agent bridge; mode off gets none
			// (and the input chain drops its DNS anyway).
			opts = append(opts, pve.Option{Name: "nameserver", Value: m.opts.HostAddr.String()})
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if p.Resources.Balloon > 0 {
		opts = append(opts, pve.Option{Name: "balloon", Value: p.Resources.Balloon})
	}
	if p.Behavior.TakesCleanSnapshot() {
		// The workspace waits for the clean snapshot (attachAtCreate): a VM
		// snapshot would cover it too.
		return opts, nil
	}
	ws, err := m.workspaceOption(ctx, sb)
	if err != nil || ws == nil {
		return opts, err
	}
	return append(opts, *ws), nil
}

// workspaceOption is the drive option that references the workspace claimed
// for sb (nil: none claimed).
func (m *Manager) workspaceOption(ctx context.Context, sb *store.Sandbox) (*pve.Option, error) {
	w, err := m.store.WorkspaceBySandbox(ctx, sb.ID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// Referenced, not owned: the holder keeps the volume whatever happens here.
	vol, err := m.ws.AttachableVolume(ctx, w)
	if err != nil {
		return nil, fmt.Errorf("workspace %s: %w", w.Name, err)
	}
	return &pve.Option{Name: w.AttachKey, Value: vol}, nil
}

// configure applies the options the VM does not have yet and returns their
// names. It compares with the VM's current config rather than trusting the
// stored step: after a crash it may run on a VM configured halfway.
//
// The write is conditional on the config the proof read (its digest), so it
// can only land on the VM that proved to be ours; run keeps the handle for
// the resize that follows.
func (m *Manager) configure(ctx context.Context, sb *store.Sandbox, p *profile.Profile, run *createRun) ([]string, error) {
	v, err := m.guard.Must(ctx, m.proof(sb), false)
	if err != nil {
		return nil, err
	}
	if err := m.writeSnippet(sb); err != nil {
		return nil, err
	}
	want, err := m.wantConfig(ctx, sb, p)
	if err != nil {
		return nil, err
	}
	var diff []pve.Option
	var names []string
	for _, o := range want {
		if !hasOption(v.Config, o) {
			diff = append(diff, o)
			names = append(names, o.Name)
		}
	}
	if len(diff) > 0 {
		if err := v.ConfigureProven(ctx, diff...); err != nil {
			if errors.Is(err, pve.ErrModified) {
				return nil, fmt.Errorf("VM %d changed between agentd's ownership check and its config write (someone else edits it; agentd writes only the config it proved): %w", sb.VMID, err)
			}
			return nil, err
		}
	}
	run.vm = v
	if m.opts.FirewallGroup != nil {
		addr, err := m.store.Address(ctx, sb.ID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		if err := v.Firewall(ctx, m.opts.FirewallGroup(p), addr); err != nil {
			return nil, err
		}
		names = append(names, "firewall group "+m.opts.FirewallGroup(p))
	}
	// A row from before cores/memory were kept learns them here.
	sb.Cores, sb.MemoryMB = cmp.Or(sb.Cores, p.Resources.Cores), cmp.Or(sb.MemoryMB, p.Resources.MemoryMB)
	return names, m.progress(ctx, sb, stepResize, fmt.Sprintf("configured VM %d: %d cores, %d MiB, %s on %s", sb.VMID,
		sb.Cores, sb.MemoryMB, p.Network.Model, p.Network.Bridge))
}

// hasOption reports whether cfg already holds o as PVE stores it. net0 is
// compared without its MAC (PVE generates one), so a resumed configure
// never changes the address of the guest.
func hasOption(cfg map[string]any, o pve.Option) bool {
	want := fmt.Sprint(o.Value)
	have, ok := cfg[o.Name]
	if !ok {
		return o.Name == "onboot" && want == "0"
	}
	got := fmt.Sprint(have)
	switch o.Name {
	case "tags":
		return sameSet(splitList(got), splitList(want))
	case "net0":
		// The MAC counts only when agentd chose it (it binds the address).
		if mm := macRE.FindStringSubmatch(want); mm != nil {
			if hm := macRE.FindStringSubmatch(got); hm == nil || !strings.EqualFold(hm[1], mm[1]) {
				return false
			}
		}
		return sameSet(netParts(got), netParts(want))
	case "ipconfig0":
		// A property string: the same keys in any order are the same config.
		return sameSet(strings.Split(got, ","), strings.Split(want, ","))
	case "agent":
		return got == want || got == "1" && want == "enabled=1"
	}
	if strings.HasPrefix(o.Name, "scsi") {
		return pve.DiskVolume(cfg, o.Name) == want
	}
	return got == want
}

func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == ',' || r == ' ' })
}

// netParts is a net device's options with the model's MAC dropped.
func netParts(s string) []string {
	var out []string
	for _, kv := range strings.Split(s, ",") {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "virtio", "e1000", "e1000e", "rtl8139", "vmxnet3":
			out = append(out, k)
		case "model":
			out = append(out, strings.TrimPrefix(kv, "model="))
		case "macaddr":
		default:
			out = append(out, kv)
		}
	}
	return out
}

func sameSet(a, b []string) bool {
	seen := map[string]int{}
	for _, x := range a {
		seen[x]++
	}
	for _, x := range b {
		seen[x]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

var sizeRE = regexp.MustCompile(`(?:^|,)size=(\d+)([KMGT]?)`)

// bootDisk finds the root disk key: the first disk of boot order=, else the
// first of scsi0/virtio0/sata0/ide0.
func bootDisk(cfg map[string]any) string {
	if b, _ := cfg["boot"].(string); strings.Contains(b, "order=") {
		order := strings.SplitN(strings.SplitN(b, "order=", 2)[1], ",", 2)[0]
		for _, k := range strings.Split(order, ";") {
			if v, _ := cfg[k].(string); v != "" && !strings.Contains(v, "media=cdrom") {
				return k
			}
		}
	}
	for _, k := range []string{"scsi0", "virtio0", "sata0", "ide0"} {
		if _, ok := cfg[k]; ok {
			return k
		}
	}
	return ""
}

func sizeGB(drive string) int {
	mm := sizeRE.FindStringSubmatch(drive)
	if mm == nil {
		return 0
	}
	n, _ := strconv.Atoi(mm[1])
	switch mm[2] {
	case "T":
		return n * 1024
	case "G":
		return n
	case "M":
		return n / 1024
	case "K":
		return n / (1024 * 1024)
	}
	return n / (1024 * 1024 * 1024)
}

// resize grows the root disk to the profile's size if it is smaller and
// says what it did ("" when nothing).
func (m *Manager) resize(ctx context.Context, sb *store.Sandbox, p *profile.Profile, run *createRun) (string, error) {
	next := stepStart
	if p.Behavior.TakesCleanSnapshot() {
		next = stepClean
	}
	if p.Storage.RootSizeGB <= 0 {
		return "", m.progress(ctx, sb, next, "")
	}
	// Configure's proven handle tells the boot disk and its size without a
	// read (configure writes no disk key). The resize itself is another
	// matter: it must carry the digest of a read made after configure's
	// write, or a VM put at the VMID since that write would be grown (the
	// PUT leaves no digest to make the resize conditional on).
	v := run.vm
	if v == nil {
		var err error
		if v, err = m.guard.Must(ctx, m.proof(sb), true); err != nil {
			return "", err
		}
	}
	disk, cur, err := rootDisk(v.Config, sb, p)
	if err != nil {
		return "", err
	}
	if cur == p.Storage.RootSizeGB {
		return "", m.progress(ctx, sb, next, "")
	}
	if _, ok := v.Config["digest"].(string); !ok {
		if v, err = m.guard.Must(ctx, m.proof(sb), true); err != nil {
			return "", err
		}
		if disk, cur, err = rootDisk(v.Config, sb, p); err != nil {
			return "", err
		}
	}
	msg := ""
	if cur < p.Storage.RootSizeGB {
		if err := v.ResizeProven(ctx, disk, fmt.Sprintf("%dG", p.Storage.RootSizeGB)); err != nil {
			if errors.Is(err, pve.ErrModified) {
				return "", fmt.Errorf("VM %d changed between agentd's ownership check and its disk resize (someone else edits it; agentd grows only the VM it proved): %w", sb.VMID, err)
			}
			return "", err
		}
		msg = fmt.Sprintf("grew %s to %d GiB", disk, p.Storage.RootSizeGB)
	}
	return msg, m.progress(ctx, sb, next, msg)
}

// rootDisk is the boot disk of cfg and its size in GiB; a disk larger than
// the profile's is an error (disks cannot shrink).
func rootDisk(cfg map[string]any, sb *store.Sandbox, p *profile.Profile) (string, int, error) {
	disk := bootDisk(cfg)
	if disk == "" {
		return "", 0, fmt.Errorf("VM %d has no boot disk to grow (template %d needs scsi0, virtio0, sata0 or ide0)", sb.VMID, p.TemplateVMID)
	}
	drive, _ := cfg[disk].(string)
	cur := sizeGB(drive)
	if cur > p.Storage.RootSizeGB {
		return "", 0, fmt.Errorf("template disk %s is %d GiB, larger than root_size_gb %d of profile %s (disks cannot shrink)", disk, cur, p.Storage.RootSizeGB, p.Name)
	}
	return disk, cur, nil
}

var macRE = regexp.MustCompile(`(?i)=([0-9a-f]{2}(?::[0-9a-f]{2}){5})`)

func (m *Manager) waitIP(ctx context.Context, sb *store.Sandbox) (string, error) {
	mac := ""
	if a, err := m.store.Address(ctx, sb.ID); err == nil {
		// agentd chose the MAC with the address and configure wrote it
		// (hasOption compares it), so net0 need not be read for it.
		mac = netpolicy.MAC(a).String()
	} else if !errors.Is(err, store.ErrNotFound) {
		return "", err
	} else {
		cfg, err := m.pve.On(sb.Node).Config(ctx, sb.VMID)
		if err != nil {
			return "", err
		}
		if net0, _ := cfg["net0"].(string); net0 != "" {
			if mm := macRE.FindStringSubmatch(net0); mm != nil {
				mac = mm[1]
			}
		}
	}
	ip, err := m.pve.On(sb.Node).WaitGuestIP(ctx, sb.VMID, mac, m.opts.IPPoll)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.DeadlineExceeded) && !errors.Is(cause, context.Canceled) {
		return "", cause
	}
	if errors.Is(err, pve.ErrTimeout) || ctx.Err() != nil {
		return "", fmt.Errorf("the guest agent of VM %d reported no IPv4 address within the provisioning timeout (%s); check that qemu-guest-agent runs in the template and DHCP serves %s: %w",
			sb.VMID, m.opts.ProvisioningTimeout, m.profiles[sb.Profile].Network.Bridge, err)
	}
	if errors.Is(err, pve.ErrAgentNotConfigured) {
		return "", fmt.Errorf("%w (enable the guest agent on the template: qm set <template> --agent enabled=1)", err)
	}
	return ip, err
}

// fail records the failure and removes everything provisioning created. The
// row ends FAILED with the cause; if cleanup itself fails, the error says so
// and the row stays FAILED with its VMID, for prune (or the next destroy) to
// retry: the VM still carries the proof.
func (m *Manager) fail(sb *store.Sandbox, cause error) {
	ctx, cancel := context.WithTimeout(m.ctx, 2*time.Minute)
	defer cancel()
	defer m.locks.Lock(sb.ID)()
	// Re-read: the row may have moved (a destroy took over).
	cur, err := m.store.Sandbox(ctx, sb.ID)
	if err != nil || !cur.State.InFlight() {
		return
	}
	msg := cause.Error()
	if restarting(cur.Step) {
		// The sandbox existed before this start: keep its VM, power it off.
		kind := "sandbox.start_failed"
		if errors.Is(cause, errStopRequested) {
			kind, msg = "sandbox.stop", "start cancelled by a stop request"
		}
		if v, verr := m.vm(ctx, cur); verr != nil {
			msg += fmt.Sprintf("; stopping VM %d again failed: %v", cur.VMID, verr)
		} else if v != nil {
			if serr := v.Stop(ctx); serr != nil && !errors.Is(serr, pve.ErrNotFound) {
				msg += fmt.Sprintf("; stopping VM %d again failed: %v", cur.VMID, serr)
			}
		}
		cur.IP, cur.Step = "", ""
		if kind == "sandbox.start_failed" {
			cur.Error = "start failed: " + msg
		}
		if err := m.save(ctx, cur, api.StateStopped, kind, msg); err != nil {
			_ = m.store.AddEvent(ctx, cur, store.Event{Kind: "sandbox.error", Message: "could not record failure: " + err.Error()})
		}
		return
	}
	if cerr := m.removeVM(ctx, cur, 0); cerr != nil {
		msg += fmt.Sprintf("; cleanup of VM %d failed (prune retries it): %v", cur.VMID, cerr)
	} else if cur.VMID != 0 {
		msg += fmt.Sprintf(" (VM %d removed)", cur.VMID)
		cur.VMID = 0
	}
	cur.Error, cur.IP = msg, ""
	attrs := []any{"sandbox_id", cur.ID, "sandbox", cur.Name, "err", cause}
	var pe *pve.Error
	if errors.As(cause, &pe) && pe.UPID != "" {
		attrs = append(attrs, "upid", pe.UPID)
	}
	m.opts.Log.Warn("provisioning failed", attrs...)
	if err := m.save(ctx, cur, api.StateFailed, "sandbox.failed", msg); err != nil {
		_ = m.store.AddEvent(ctx, cur, store.Event{Kind: "sandbox.error", Message: "could not record failure: " + err.Error()})
	}
}
