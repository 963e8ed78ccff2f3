package sandbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/workspace"
)

// Reconcile compares the rows with one /cluster/resources listing and repairs
// drift: VM gone → DESTROYED; stopped outside agentd → STOPPED; running while
// STOPPED → started (BOOTING until the guest reports its address); a VM at a
// row's VMID that is no longer provably the row's → LOST. It finishes
// attachments a crash left journaled and compares every claimed attachment
// with the sandbox VM's config. Orphans are found by tag and by the VMIDs this
// database issued (an untagged VM interrupted right after its clone), and are
// only listed. With dryRun nothing changes.
func (m *Manager) Reconcile(ctx context.Context, dryRun bool) (*api.ReconcileReport, error) {
	ctx = auth.Host(ctx)
	start := time.Now()
	inv, err := m.pve.Inventory(ctx)
	if err != nil {
		return nil, err
	}
	res := inv.VMs
	rows, err := m.store.Sandboxes(ctx, store.Filter{})
	if err != nil {
		return nil, err
	}
	if err := m.refreshClusterRows(ctx, inv, rows); err != nil {
		return nil, err
	}
	byID := make(map[int]pve.Resource, len(res))
	for _, r := range res {
		byID[r.VMID] = r
	}
	ws, err := m.store.Workspaces(ctx)
	if err != nil {
		return nil, err
	}
	prove := m.proofsDue(rows, ws, byID)
	rep := &api.ReconcileReport{DryRun: dryRun, VMs: len(res), Actions: []api.ReconcileAction{}, Orphans: []api.Orphan{}}
	byNode := m.settleNodes(ctx, inv, byID, rows, dryRun, rep)
	live := map[int]bool{}
	sandboxes := map[string]*store.Sandbox{}
	settled := func(sb *store.Sandbox) bool {
		return !(sb.VMID == 0 || sb.State.InFlight() || sb.State.Terminal() || m.busy(sb.ID) || byNode[sb.ID])
	}
	proved := m.driftProved(ctx, rows, byID, prove, settled)
	for _, sb := range rows {
		sandboxes[sb.ID] = sb
		if sb.VMID != 0 {
			live[sb.VMID] = true
		}
		if !settled(sb) {
			continue
		}
		rep.Checked++
		act, ok := proved[sb.ID]
		if !ok {
			act = m.drift(ctx, sb, byID, prove[sb.ID])
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
	holders := map[int]bool{}
	for _, w := range ws {
		holders[w.HolderVMID] = true
		if act := m.holderMoved(ctx, w, byID, dryRun); act != nil {
			rep.Actions = append(rep.Actions, *act)
		}
		if act := m.holderDrift(ctx, w, byID, dryRun, prove[w.ID]); act != nil {
			rep.Actions = append(rep.Actions, *act)
		}
		// A journaled attach or detach is finished every cycle; a settled
		// claim is compared with the VMs on the proof schedule (two config
		// reads), so the cycle's cost stays bounded.
		if w.Step == "" && !prove[w.ID] && !prove[w.AttachedSandbox] {
			continue
		}
		if act := m.attachment(ctx, w, sandboxes[w.AttachedSandbox], dryRun); act != nil {
			rep.Actions = append(rep.Actions, *act)
		}
	}
	orphans, err := m.orphans(ctx, res, byID, live, holders, dryRun)
	if err != nil {
		return nil, err
	}
	rep.Orphans = orphans
	rep.Duration = float64(time.Since(start).Microseconds()) / 1000
	return rep, nil
}

// proofParallel is how many proofs (a config read each) a cycle runs at
// once: one after the other, a hundred round trips made most of a cycle.
const proofParallel = 8

// driftProved runs drift, with its proof, for every settled row due a
// proof, proofParallel at a time (drift only reads). The cycle applies
// the actions in row order as before.
func (m *Manager) driftProved(ctx context.Context, rows []*store.Sandbox, byID map[int]pve.Resource, prove map[string]bool, settled func(*store.Sandbox) bool) map[string]*api.ReconcileAction {
	out := map[string]*api.ReconcileAction{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, proofParallel)
	for _, sb := range rows {
		if !prove[sb.ID] || !settled(sb) {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(sb *store.Sandbox) {
			defer func() { <-sem; wg.Done() }()
			act := m.drift(ctx, sb, byID, true)
			mu.Lock()
			out[sb.ID] = act
			mu.Unlock()
		}(sb)
	}
	wg.Wait()
	return out
}

// proofsDue picks the objects to prove this cycle.
func (m *Manager) proofsDue(rows []*store.Sandbox, ws []*store.Workspace, byID map[int]pve.Resource) map[string]bool {
	type obj struct {
		id, name, tag string
		vmid          int
	}
	var objs []obj
	// The names the VMs carry ("<team>-<name>" outside default): comparing
	// with the bare name would make every team's VM due every cycle.
	for _, sb := range rows {
		if sb.VMID != 0 {
			objs = append(objs, obj{sb.ID, owner.Proof{Kind: owner.Sandbox, Name: sb.Name, Team: sb.Team}.VMName(), OwnerTag, sb.VMID})
		}
	}
	for _, w := range ws {
		if w.HolderVMID != 0 {
			objs = append(objs, obj{w.ID, owner.Proof{Kind: owner.Holder, Name: w.Name, Team: w.Team}.VMName(), workspace.HolderTag, w.HolderVMID})
		}
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].id < objs[j].id })
	m.proofMu.Lock()
	defer m.proofMu.Unlock()
	if m.lastSig == nil {
		m.lastSig = map[int]string{}
	}
	due := map[string]bool{}
	sigs := make(map[int]string, len(objs))
	for _, o := range objs {
		r, ok := byID[o.vmid]
		if !ok {
			continue
		}
		sig := fmt.Sprintf("%s|%s|%s|%v", r.Name, r.Node, strings.Join(r.Tags, ";"), r.Uptime > 0)
		sigs[o.vmid] = sig
		if r.Name != o.name || !hasString(r.Tags, o.tag) || m.lastSig[o.vmid] != sig {
			due[o.id] = true
		}
	}
	m.lastSig = sigs
	// The audit: Options.AuditPerCycle full config reads on rows whose
	// listing looks unchanged, round-robin, so each is re-proven every
	// rows/AuditPerCycle cycles. Rows whose listing changed (tag, name, node
	// or a restart) are proven above, in the same cycle. Every write proves
	// the VM anyway: this only decides how soon a row shows LOST.
	audit := m.opts.AuditPerCycle
	for i := 0; i < audit && i < len(objs); i++ {
		due[objs[(m.proofCursor+i)%len(objs)].id] = true
	}
	if len(objs) > 0 {
		m.proofCursor = (m.proofCursor + audit) % len(objs)
	}
	return due
}

// drift is the action a settled row needs, or nil. The listing has tags and
// name but no description, so every row's VM is read in full and proven
// (one config read per row and cycle): a VM tagged and named like ours but
// naming an unknown id or another installation must be seen as LOST too,
// and tag and name are exactly what a copy or another agentd has.
func (m *Manager) drift(ctx context.Context, sb *store.Sandbox, byID map[int]pve.Resource, prove bool) *api.ReconcileAction {
	if sb.State == api.StateLost {
		return nil
	}
	r, exists := byID[sb.VMID]
	if !exists {
		return &api.ReconcileAction{Action: "destroyed", Reason: fmt.Sprintf("VM %d no longer exists in Proxmox", sb.VMID)}
	}
	var cfg map[string]any
	if prove {
		v, err := m.vm(ctx, sb)
		if errors.Is(err, owner.ErrNotOwned) {
			return &api.ReconcileAction{Action: "lost", Reason: err.Error()}
		}
		if err == nil && v != nil {
			cfg = v.Config
		}
	}
	switch {
	case r.Status == "stopped" && (sb.State == api.StateRunning || sb.State == api.StateReady):
		return &api.ReconcileAction{Action: "stopped", Reason: fmt.Sprintf("VM %d was stopped outside agentd", sb.VMID)}
	case r.Status == "running" && sb.State == api.StateStopped:
		return &api.ReconcileAction{Action: "started", Reason: fmt.Sprintf("VM %d was started outside agentd", sb.VMID)}
	}
	// The proof's config read (pending values included, as resize reads
	// them) shows a change of cores or memory made outside agentd.
	if cfg != nil {
		if got := readResources(cfg); got.Cores != sb.Cores || got.MemoryMB != sb.MemoryMB {
			return &api.ReconcileAction{Action: "resized", Cores: got.Cores, MemoryMB: got.MemoryMB,
				Reason: fmt.Sprintf("VM %d has %d cores, %d MiB in Proxmox (agentd knew %d, %d; changed outside agentd or not read yet)",
					sb.VMID, got.Cores, got.MemoryMB, sb.Cores, sb.MemoryMB)}
		}
	}
	return nil
}

func hasString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
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
		_ = m.store.VMGone(ctx, cur.ID, cur.VMID)
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
	case "resized":
		cur.Cores, cur.MemoryMB = act.Cores, act.MemoryMB
		err = m.store.Save(ctx, cur, cur.State, store.Event{Kind: "sandbox.reconciled", Message: act.Reason})
	case "lost":
		cur.Error = act.Reason
		err = m.save(ctx, cur, api.StateLost, "sandbox.not_owned", act.Reason+"; agentd will not touch this VM (destroy --force retires the row)")
		if err == nil {
			m.releaseUnplugged(ctx, cur)
		}
	}
	unlock()
	if start {
		m.startWorker(cur.ID)
	}
	return err
}

// holderMoved settles a move a crash left journaled, and follows a holder
// that is on another node than its row says (migrated outside agentd): the
// row must name the node the holder is on, since attaching and placing a
// sandbox with the workspace go there.
func (m *Manager) holderMoved(ctx context.Context, w *store.Workspace, byID map[int]pve.Resource, dryRun bool) *api.ReconcileAction {
	if w.State != store.WorkspaceReady || w.HolderVMID == 0 {
		return nil
	}
	if workspace.Moving(w) {
		act := &api.ReconcileAction{VMID: w.HolderVMID, Action: "workspace_move_pending",
			Reason: fmt.Sprintf("workspace %s has an interrupted move journaled", w.Name)}
		if dryRun {
			return act
		}
		done, err := m.ws.FinishMove(ctx, w)
		if err != nil {
			act.Reason += "; not settled yet: " + err.Error()
			return act
		}
		return done
	}
	r, ok := byID[w.HolderVMID]
	if !ok || r.Node == "" || r.Node == cmp.Or(w.Node, m.pve.Node()) {
		return nil
	}
	act, err := m.ws.Follow(ctx, w, r.Node, dryRun)
	if err != nil {
		return &api.ReconcileAction{VMID: w.HolderVMID, Action: "workspace_node_changed",
			Reason: fmt.Sprintf("holder VM %d of workspace %s is on node %s; not followed: %v", w.HolderVMID, w.Name, r.Node, err)}
	}
	return act
}

// holderDrift checks a workspace's holder: gone is reported (never
// repaired: the data is gone), not provably ours marks the workspace LOST.
func (m *Manager) holderDrift(ctx context.Context, w *store.Workspace, byID map[int]pve.Resource, dryRun, prove bool) *api.ReconcileAction {
	if w.State != store.WorkspaceReady || w.HolderVMID == 0 {
		return nil
	}
	_, ok := byID[w.HolderVMID]
	act := &api.ReconcileAction{Sandbox: "", VMID: w.HolderVMID}
	if !ok {
		act.Action, act.Reason = "holder_missing", fmt.Sprintf("holder VM %d of workspace %s does not exist: its volume is gone (workspace check tells more)", w.HolderVMID, w.Name)
		return act
	}
	if !prove {
		return nil
	}
	if dryRun {
		cfg, err := m.pve.On(w.Node).Config(ctx, w.HolderVMID)
		if err != nil {
			return nil
		}
		// A placeholder config (a task still creating the VM) proves
		// nothing either way: LOST would be a guess.
		if err := m.guard.Proof(owner.Holder, w.ID, w.Name, w.HolderVMID).Verify(cfg, true); err != nil && !errors.Is(err, pve.ErrLocked) {
			act.Action, act.Reason = "lost", err.Error()
			return act
		}
		return nil
	}
	err := m.ws.Verify(ctx, w)
	if err == nil || !api.IsCode(err, api.CodeNotOwned) {
		return nil
	}
	act.Action, act.Reason = "lost", err.Error()
	return act
}

// attachment compares a workspace claim with the sandbox VM and repairs it:
// a journaled attach is finished (the disk plugged), a journaled detach is
// finished (unplugged, claim released), an unjournaled claim whose disk is
// missing from the VM is plugged again; anything else is reported.
func (m *Manager) attachment(ctx context.Context, w *store.Workspace, sb *store.Sandbox, dryRun bool) *api.ReconcileAction {
	if w.AttachedSandbox == "" || sb == nil || sb.VMID == 0 || m.busy(sb.ID) {
		return nil
	}
	if sb.State != api.StateRunning && sb.State != api.StateStopped {
		return nil
	}
	unlockSB := m.locks.Lock(sb.ID)
	defer unlockSB()
	unlockWS := m.ws.Lock(w.ID)
	defer unlockWS()
	cur, err := m.store.Sandbox(ctx, sb.ID)
	if err != nil || (cur.State != api.StateRunning && cur.State != api.StateStopped) {
		return nil
	}
	if w, err = m.store.Workspace(ctx, w.ID); err != nil || w.AttachedSandbox != cur.ID {
		return nil
	}
	v, err := m.vm(ctx, cur)
	if err != nil || v == nil {
		return nil // drift handles a gone or foreign VM
	}
	vol, err := m.ws.Volume(ctx, w)
	if err != nil {
		return &api.ReconcileAction{Sandbox: cur.Name, VMID: cur.VMID, Action: "attachment_unknown", Reason: fmt.Sprintf("workspace %s: %v", w.Name, err)}
	}
	have := pve.DiskVolume(v.Config, w.AttachKey)
	act := &api.ReconcileAction{Sandbox: cur.Name, VMID: cur.VMID}
	switch {
	case w.Step == workspace.StepDetach:
		act.Action, act.Reason = "workspace_detached", fmt.Sprintf("finished the interrupted detach of workspace %s", w.Name)
		if !dryRun {
			if err := m.detachLocked(ctx, cur, w); err != nil {
				act.Reason += "; not applied: " + err.Error()
			}
		}
	case have == vol && w.Step == "":
		return nil
	case have == vol:
		act.Action, act.Reason = "workspace_attached", fmt.Sprintf("workspace %s was plugged before a crash; attach recorded as finished", w.Name)
		if !dryRun {
			_ = m.ws.Settle(ctx, w, "workspace.attached", "attach finished by reconcile")
		}
	case have == "":
		act.Action, act.Reason = "workspace_attached", fmt.Sprintf("the database says workspace %s is attached as %s but VM %d lacks it; plugged again", w.Name, w.AttachKey, cur.VMID)
		if !dryRun {
			if err := m.ws.Plug(ctx, w, v); err != nil {
				act.Reason += "; not applied: " + err.Error()
			} else {
				_ = m.ws.Settle(ctx, w, "workspace.attached", "attach finished by reconcile")
				if cur.Workspace != w.Name {
					cur.Workspace = w.Name
					_ = m.store.Save(ctx, cur, cur.State, store.Event{Kind: "sandbox.workspace_attached", Message: "workspace " + w.Name + " attached by reconcile"})
				}
			}
		}
	default:
		act.Action, act.Reason = "attachment_mismatch", fmt.Sprintf("workspace %s should be %s as %s on VM %d, but %s is there; left alone", w.Name, vol, w.AttachKey, cur.VMID, have)
	}
	return act
}

// orphans lists VMs that no live row accounts for: tagged ones, and any VM
// at a VMID this database issued and has not seen destroyed (a create
// interrupted before the tag was set). Each is classified by a fresh read of
// its description: only a VM naming this installation and an id this
// database issued for exactly that VMID is ours; everything else is foreign.
func (m *Manager) orphans(ctx context.Context, res []pve.Resource, byID map[int]pve.Resource, live, holders map[int]bool, dryRun bool) ([]api.Orphan, error) {
	pending, err := m.store.PendingVMs(ctx)
	if err != nil {
		return nil, err
	}
	// Absence is never taken as "gone" here: a clone agentd sent before its
	// row was retired (destroy --force during the clone task) may land at
	// the VMID later, untagged. Every destroy agentd saw itself is
	// confirmed where it happened (removeVM, drift, prune); an entry is
	// also settled once another VM was seen at its VMID (its clone can no
	// longer land there).
	issuedAt := map[int][]string{}
	for _, is := range pending {
		if _, exists := byID[is.VMID]; exists {
			issuedAt[is.VMID] = append(issuedAt[is.VMID], is.ID)
		}
	}
	out := []api.Orphan{}
	for _, r := range res {
		if live[r.VMID] || holders[r.VMID] {
			continue
		}
		tagged := hasString(r.Tags, OwnerTag) || hasString(r.Tags, workspace.HolderTag)
		if !tagged && len(issuedAt[r.VMID]) == 0 {
			continue
		}
		o, read := m.classify(ctx, r)
		out = append(out, o)
		if !read || dryRun {
			continue
		}
		for _, id := range issuedAt[r.VMID] {
			if id != o.SandboxID || o.Owner != api.OwnerThisAgent {
				_ = m.store.VMGone(ctx, id, r.VMID)
			}
		}
	}
	return out, nil
}

// classify reads an orphan candidate's description and decides whose it is;
// read is false when the config could not be read.
func (m *Manager) classify(ctx context.Context, r pve.Resource) (o api.Orphan, read bool) {
	o = api.Orphan{VMID: r.VMID, Name: r.Name, Node: r.Node, Status: r.Status, Kind: "sandbox", Owner: api.OwnerForeign}
	if hasString(r.Tags, workspace.HolderTag) {
		o.Kind = "workspace-holder"
	}
	cfg, err := m.pve.On(r.Node).Config(ctx, r.VMID)
	if err != nil {
		o.Note = "could not read its config: " + err.Error() + "; left alone"
		return o, false
	}
	read = true
	desc, _ := cfg["description"].(string)
	mk, ok := owner.Parse(desc)
	if err := owner.Creating(cfg, r.VMID); err != nil {
		o.Note = err.Error() + "; left alone"
		return o, false
	}
	if !ok {
		o.Note = "its description names no AgentLab object: not provably ours; left alone"
		return o, true
	}
	if mk.Kind == owner.Holder {
		o.Kind = "workspace-holder"
	}
	o.SandboxID = mk.ID
	if mk.Instance != "" && mk.Instance != m.guard.Instance() {
		o.Note = fmt.Sprintf("created by another agentd installation (instance %s); left alone", mk.Instance)
		return o, true
	}
	is, err := m.store.IssuedID(ctx, mk.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		o.Note = fmt.Sprintf("its description names %s, an id this database never issued; left alone", mk.ID)
		return o, true
	case err != nil:
		o.Note = "could not check its id: " + err.Error() + "; left alone"
		return o, false
	case is.VMID != r.VMID || string(mk.Kind) != is.Kind:
		o.Note = fmt.Sprintf("names our %s %s, which had VMID %d: a copy made outside agentd; left alone", is.Kind, mk.ID, is.VMID)
		return o, true
	}
	o.Owner = api.OwnerThisAgent
	if o.Kind == "workspace-holder" {
		// A workspace that never became READY acknowledged no write: its
		// holder (a create or fork whose answer was lost, say) holds no data.
		if w, err := m.store.Workspace(ctx, mk.ID); err == nil && w.State == store.WorkspaceDeleted && w.Step != "" {
			o.Prunable = true
			o.Note = fmt.Sprintf("the holder of our workspace %s whose create failed (%s): it holds no data; sandbox prune --orphans --yes destroys it", mk.ID, w.Error)
			return o, true
		}
		o.Note = fmt.Sprintf("the holder of our deleted or unknown workspace %s: it owns data, so agentd never removes it; inspect and delete by hand", mk.ID)
		return o, true
	}
	o.Prunable = true
	o.Note = fmt.Sprintf("VM of our sandbox %s, which is gone; sandbox prune --orphans --yes destroys it", mk.ID)
	return o, true
}

// Orphans lists VMs that no live row accounts for.
func (m *Manager) Orphans(ctx context.Context) ([]api.Orphan, error) {
	ctx = auth.Host(ctx)
	rep, err := m.Reconcile(ctx, true)
	if err != nil {
		return nil, err
	}
	return rep.Orphans, nil
}

// PruneOrphans destroys orphan sandbox VMs that are provably this
// installation's (see classify), re-proving each just before it acts; node,
// when set, limits it to one node; dryRun only lists them. Holders and
// foreign VMs are never destroyed.
func (m *Manager) PruneOrphans(ctx context.Context, node string, dryRun bool) (destroyed, kept []api.Orphan, err error) {
	orphans, err := m.Orphans(ctx)
	if err != nil {
		return nil, nil, err
	}
	destroyed, kept = []api.Orphan{}, []api.Orphan{}
	for _, o := range orphans {
		if o.Owner != api.OwnerThisAgent || !o.Prunable || (node != "" && o.Node != node) {
			kept = append(kept, o)
			continue
		}
		if dryRun {
			o.Note = "would be destroyed: " + o.Note
			destroyed = append(destroyed, o)
			continue
		}
		kind, name := owner.Sandbox, o.Name
		if o.Kind == "workspace-holder" {
			kind, name = owner.Holder, strings.TrimPrefix(o.Name, "ws-")
		}
		v, err := m.guard.Prove(ctx, m.guard.Proof(kind, o.SandboxID, name, o.VMID), false)
		if err != nil || v == nil {
			o.Note = fmt.Sprintf("re-check before destroy failed (%v); left alone", err)
			kept = append(kept, o)
			continue
		}
		if err := v.Stop(ctx); err != nil && !errors.Is(err, pve.ErrNotFound) {
			o.Note = "stop failed: " + err.Error()
			kept = append(kept, o)
			continue
		}
		if err := v.Destroy(ctx); err != nil && !errors.Is(err, pve.ErrNotFound) {
			o.Note = "destroy failed: " + err.Error()
			kept = append(kept, o)
			continue
		}
		_ = m.store.VMGone(ctx, o.SandboxID, o.VMID)
		o.Note = "destroyed: " + strings.TrimSuffix(o.Note, "; sandbox prune --orphans --yes destroys it")
		_ = m.store.AddEvent(ctx, nil, store.Event{Kind: "sandbox.orphan_destroyed", Message: fmt.Sprintf("VM %d (%s): %s", o.VMID, o.Name, o.Note)})
		destroyed = append(destroyed, o)
	}
	return destroyed, kept, nil
}
