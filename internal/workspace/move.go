package workspace

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// Moves. A move migrates the detached holder (offline, its volume copied
// by Proxmox) to another node. The row names the node where the holder is;
// between the journal and the answer it carries StepMove with the target,
// and whoever settles it (the request, the startup resume, reconcile)
// reads where the holder really is rather than trusting either side: a
// migrate task outlives a killed agentd, and its config moves to the target
// only at its very end (QemuMigrate's phase3_cleanup), so the holder is
// always on exactly one node. Nothing here deletes a volume; the source
// copy is freed by Proxmox itself once the target holds the data.

// StepMove prefixes the journaled step of a move: "move:<node>:<storage>".
const StepMove = "move"

func moveStep(node, storage string) string { return StepMove + ":" + node + ":" + storage }

// moveTarget reads a journaled move step.
func moveTarget(step string) (node, storage string, ok bool) {
	rest, ok := strings.CutPrefix(step, StepMove+":")
	if !ok {
		return "", "", false
	}
	node, storage, _ = strings.Cut(rest, ":")
	return node, storage, true
}

// Moving reports whether w has a journaled move.
func Moving(w *store.Workspace) bool {
	_, _, ok := moveTarget(w.Step)
	return ok
}

// SetNodes tells the manager how to read the nodes agentd uses, fresh from
// Proxmox (a move checks its target against them).
func (m *Manager) SetNodes(list func(ctx context.Context) ([]api.Node, error)) { m.nodes = list }

// nodeOf is the node a row names ("" is the agent's own).
func (m *Manager) nodeOf(w *store.Workspace) string { return cmp.Or(w.Node, m.pve.Node()) }

// rowNode is what a row stores for node: "" for the agent's own node, as
// rows made before clusters say.
func (m *Manager) rowNode(node string) string {
	if node == m.pve.Node() {
		return ""
	}
	return node
}

// Move migrates a detached workspace's holder to node, onto storage there
// (default: the storage it is on). Already there is a no-op.
func (m *Manager) Move(ctx context.Context, ref string, req api.MoveWorkspaceRequest) (*store.Workspace, error) {
	if req.Node == "" {
		return nil, api.FieldError("node", "is required (the node to move the workspace to; agentd node list shows them)")
	}
	if req.Storage != "" {
		if err := m.Storage("storage", req.Storage); err != nil {
			return nil, err
		}
	}
	w, unlock, err := m.locked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if w.AttachedSandbox != "" {
		return nil, api.Errorf(http.StatusConflict, api.CodeAttached, "cannot move workspace %s while it is attached to sandbox %s; detach it (or stop its session) first", w.Name, m.sandboxName(ctx, w.AttachedSandbox))
	}
	if w.State != store.WorkspaceReady {
		return nil, api.Errorf(http.StatusConflict, api.CodeInvalidState, "cannot move workspace %s: it is %s", w.Name, w.State)
	}
	if w.Step != "" {
		return nil, api.Errorf(http.StatusConflict, api.CodeBusy, "cannot move workspace %s: an interrupted %s is still being finished; retry shortly", w.Name, strings.SplitN(w.Step, ":", 2)[0])
	}
	src, storage := m.nodeOf(w), cmp.Or(req.Storage, w.Storage)
	if req.Node == src {
		if storage != w.Storage {
			return nil, api.FieldError("storage", "workspace %s is already on node %s; a move changes the node (and the storage with it), not the storage alone", w.Name, src)
		}
		return w, nil
	}
	if err := m.checkTarget(ctx, w, src, req.Node, storage); err != nil {
		return nil, err
	}
	v, err := m.holderFollowing(ctx, w, "move")
	if err != nil {
		return nil, err
	}
	if at := m.nodeOf(w); at != src {
		// It was migrated outside agentd and is followed now: already on
		// the target is what was asked, else it moves from where it is.
		src = at
		if req.Node == src {
			if req.Storage != "" && req.Storage != w.Storage {
				return nil, api.FieldError("storage", "workspace %s is already on node %s (migrated there outside agentd), on storage %s; a move changes the node (and the storage with it), not the storage alone", w.Name, src, w.Storage)
			}
			return w, nil
		}
		storage = cmp.Or(req.Storage, w.Storage)
	}
	if lock, _ := v.Config["lock"].(string); lock != "" {
		return nil, api.Errorf(http.StatusConflict, api.CodeBusy, "cannot move workspace %s: its holder VM %d is locked (%s) by a Proxmox task still running; retry when it ends", w.Name, w.HolderVMID, lock)
	}
	prev := *w
	w.Step = moveStep(req.Node, storage)
	if err := m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.moving",
		Message: fmt.Sprintf("moving holder VM %d from node %s (storage %s) to node %s (storage %s), as asked", w.HolderVMID, src, w.Storage, req.Node, storage)}); err != nil {
		*w = prev
		return nil, err
	}
	targetStorage := ""
	if storage != w.Storage {
		targetStorage = storage
	}
	merr := v.Migrate(ctx, req.Node, targetStorage)
	serr := m.settleMove(ctx, w, false, merr)
	switch {
	case serr == nil && m.nodeOf(w) == req.Node:
		// Done, even when the answer was lost on the way (the holder is
		// on the target: that is what was asked).
		return w, nil
	case merr != nil:
		// A storage the migration could not use (full, say) is the
		// target's: the error names that one.
		at := *w
		at.Storage = fmt.Sprintf("%s on node %s", storage, req.Node)
		return nil, proxmoxErr("move", &at, merr)
	case serr != nil:
		return nil, proxmoxErr("move", w, serr)
	}
	return nil, api.Errorf(http.StatusBadGateway, api.CodeProxmox, "move workspace %s: Proxmox reported the migration done, but holder VM %d is on node %s", w.Name, w.HolderVMID, m.nodeOf(w))
}

// checkTarget refuses a move whose target agentd cannot use: a node it
// does not know, one offline or drained, a storage the target lacks. The
// source must be reachable too (its pvedaemon runs the migration).
func (m *Manager) checkTarget(ctx context.Context, w *store.Workspace, src, node, storage string) error {
	if m.nodes == nil {
		return api.FieldError("node", "agentd manages one node (%s); there is nowhere to move workspace %s", src, w.Name)
	}
	nodes, err := m.nodes(ctx)
	if err != nil {
		return proxmoxErr("move", w, err)
	}
	for _, n := range nodes {
		if n.Name == src && !n.Online {
			return api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "cannot move workspace %s: its node %s is offline (the migration runs there)", w.Name, src)
		}
	}
	if err := usable(nodes, node, "move the workspace to an online node"); err != nil {
		return err
	}
	sts, err := m.pve.On(node).Storages(ctx)
	if err != nil {
		return proxmoxErr("move", w, err)
	}
	var have []string
	for _, st := range sts {
		if strings.Contains(","+st.Content+",", ",images,") {
			have = append(have, st.Storage)
		}
		// QemuMigrate's scan_local_volumes leaves a shared storage's
		// volumes in place (targetstorage maps local ones only): the
		// volume would stay where it is, whatever was asked.
		if st.Storage == w.Storage && st.Shared == 1 && storage != w.Storage {
			return api.FieldError("storage", "workspace %s is on the shared storage %s, which a move does not copy (node %s reads it too): move it without --storage, or fork it onto %s", w.Name, w.Storage, node, storage)
		}
	}
	if !slices.Contains(have, storage) {
		return api.FieldError("storage", "storage %s does not exist on node %s or holds no VM images there (its image storages: %s); name one with --storage", storage, node, strings.Join(have, ", "))
	}
	return nil
}

// usable refuses a node agentd does not use, or one that is offline or
// drained, as the node field's error.
func usable(nodes []api.Node, node, offlineHint string) error {
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
		if n.Name != node {
			continue
		}
		switch {
		case !n.Online:
			return api.FieldError("node", "node %s is offline; %s", node, offlineHint)
		case n.Drained:
			return api.FieldError("node", "node %s is drained for maintenance (agentd node undrain %s puts it back)", node, node)
		}
		return nil
	}
	return api.FieldError("node", "node %q is not a node agentd uses (nodes: %s)", node, strings.Join(names, ", "))
}

// moveWait bounds how long settling waits for a migration still running
// (its lock on the holder) before leaving the step journaled for the next
// reconcile: a large volume copies for hours.
const moveWait = 2 * time.Minute

// settleMove ends w's journaled move: it finds the holder in the cluster
// listing, proves it on the node it is on, and writes that node and the
// volume's storage with the step cleared. While the migration still runs
// (lock migrate) it waits when wait is set, else leaves the journal as it
// is (ErrLocked). cause is why the request's migration failed, for the
// event. The caller holds w's lock.
func (m *Manager) settleMove(ctx context.Context, w *store.Workspace, wait bool, cause error) error {
	node, storage, ok := moveTarget(w.Step)
	if !ok {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, moveWait)
	defer cancel()
	for {
		at, cfg, err := m.locate(ctx, w)
		if errors.Is(err, pve.ErrNotFound) && at == "" {
			return m.moveGone(ctx, w, node, err)
		}
		if err != nil {
			return err
		}
		if lock, _ := cfg["lock"].(string); lock == "migrate" {
			if !wait {
				return fmt.Errorf("holder VM %d is still migrating (lock migrate on node %s): %w", w.HolderVMID, at, pve.ErrLocked)
			}
			select {
			case <-wctx.Done():
				return fmt.Errorf("holder VM %d is still migrating (lock migrate on node %s): %w", w.HolderVMID, at, pve.ErrLocked)
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		p := m.proof(w)
		p.Node = m.rowNode(at)
		if err := p.Verify(cfg, true); err != nil {
			if errors.Is(err, owner.ErrNotOwned) {
				return m.lost(ctx, w, "move", err)
			}
			return err
		}
		from := m.nodeOf(w)
		prev := *w
		w.Node, w.Step = m.rowNode(at), ""
		if vol := pve.DiskVolume(cfg, w.DiskKey); vol != "" {
			w.Storage = strings.SplitN(vol, ":", 2)[0]
		}
		ev := store.Event{Kind: "workspace.moved", Message: fmt.Sprintf("holder VM %d moved from node %s to node %s (storage %s)", w.HolderVMID, from, at, w.Storage)}
		switch {
		case at != node && cause != nil:
			ev = store.Event{Kind: "workspace.move_failed", Message: fmt.Sprintf("holder VM %d stays on node %s (storage %s): the migration to %s failed: %v", w.HolderVMID, at, w.Storage, node, cause)}
		case at != node:
			ev = store.Event{Kind: "workspace.move_failed", Message: fmt.Sprintf("holder VM %d is on node %s (storage %s): the move to %s (storage %s) was interrupted before it ended; retry it", w.HolderVMID, at, w.Storage, node, storage)}
		case at != from && cause != nil:
			// The answer was lost, but the migration happened.
			ev.Message += fmt.Sprintf(" (the request saw: %v)", cause)
		}
		if err := m.store.SaveWorkspace(ctx, w, prev, ev); err != nil {
			*w = prev
			return err
		}
		return nil
	}
}

// moveGone ends a journaled move whose holder the cluster listing puts on
// no node. A migration keeps the VM on exactly one node all along (its
// config moves last), so none can be running: the holder was destroyed
// outside agentd. The source and the target are asked too before the step
// is cleared, since a listing is only pmxcfs's view; the row keeps its
// node, and reconcile reports the holder missing. Leaving the step would
// refuse the workspace's delete for ever.
func (m *Manager) moveGone(ctx context.Context, w *store.Workspace, target string, cause error) error {
	for _, n := range []string{m.nodeOf(w), target} {
		if _, err := m.pve.On(n).Config(ctx, w.HolderVMID); !errors.Is(err, pve.ErrNotFound) {
			if err == nil {
				err = fmt.Errorf("holder VM %d is on node %s, which the cluster listing does not show", w.HolderVMID, n)
			}
			return errors.Join(cause, err)
		}
	}
	prev := *w
	w.Step = ""
	if err := m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.move_failed",
		Message: fmt.Sprintf("holder VM %d is on no node of the cluster (destroyed outside agentd?): the move to %s ended, the workspace stays recorded on node %s; workspace check tells more", w.HolderVMID, target, m.nodeOf(w))}); err != nil {
		*w = prev
		return err
	}
	return nil
}

// locate finds the node a holder is on now (one cluster listing) and reads
// its config there.
func (m *Manager) locate(ctx context.Context, w *store.Workspace) (string, map[string]any, error) {
	inv, err := m.pve.Inventory(ctx)
	if err != nil {
		return "", nil, err
	}
	at := ""
	for _, r := range inv.VMs {
		if r.VMID == w.HolderVMID {
			at = r.Node
		}
	}
	if at == "" {
		return "", nil, fmt.Errorf("holder VM %d of workspace %s is on no node of the cluster: %w", w.HolderVMID, w.Name, pve.ErrNotFound)
	}
	cfg, err := m.pve.On(at).Config(ctx, w.HolderVMID)
	return at, cfg, err
}

// FinishMove settles a move a crash or a lost answer left journaled (the
// startup resume and every reconcile cycle call it). It does not wait for
// a migration still running, nor for the lock of a request on the
// workspace (a move request holds it until its migration ends, which may
// take hours, and settles its own move): the next cycle looks again.
func (m *Manager) FinishMove(ctx context.Context, w *store.Workspace) (*api.ReconcileAction, error) {
	unlock, ok := m.locks.TryLock(w.ID, "settling the move of workspace "+w.Name)
	if !ok {
		return nil, fmt.Errorf("workspace %s is held by a request in flight (a move settles itself when its migration ends): %w", w.Name, pve.ErrLocked)
	}
	defer unlock()
	cur, err := m.store.Workspace(ctx, w.ID)
	if err != nil || !Moving(cur) {
		return nil, err
	}
	from := m.nodeOf(cur)
	if err := m.settleMove(ctx, cur, false, nil); err != nil {
		return nil, err
	}
	*w = *cur
	return &api.ReconcileAction{VMID: cur.HolderVMID, Action: "workspace_move_settled",
		Reason: fmt.Sprintf("the interrupted move of workspace %s settled: its holder is on node %s (was recorded on %s)", cur.Name, m.nodeOf(cur), from)}, nil
}

// Follow records that a holder is on node now, moved outside agentd (an
// operator's qm migrate, or HA): the holder is proven there first, and the
// row then names that node and its volume's storage. dryRun only reports.
func (m *Manager) Follow(ctx context.Context, w *store.Workspace, node string, dryRun bool) (*api.ReconcileAction, error) {
	act := &api.ReconcileAction{VMID: w.HolderVMID, Action: "workspace_node_changed",
		Reason: fmt.Sprintf("holder VM %d of workspace %s is on node %s, not %s (migrated outside agentd)", w.HolderVMID, w.Name, node, m.nodeOf(w))}
	if dryRun {
		return act, nil
	}
	// Not behind a request in flight (a move holds the lock for its whole
	// migration): the next cycle follows.
	unlock, ok := m.locks.TryLock(w.ID, "following the holder of workspace "+w.Name)
	if !ok {
		return nil, fmt.Errorf("workspace %s is held by a request in flight: %w", w.Name, pve.ErrLocked)
	}
	defer unlock()
	cur, err := m.store.Workspace(ctx, w.ID)
	if err != nil || cur.State != store.WorkspaceReady || cur.Step != "" || m.nodeOf(cur) == node {
		return nil, err
	}
	if _, err := m.follow(ctx, cur, node); err != nil {
		return nil, err
	}
	*w = *cur
	return act, nil
}

// follow proves w's holder on node and makes the row name that node and
// its volume's storage (the caller holds w's lock). A VM there that fails
// the proof marks the workspace LOST.
func (m *Manager) follow(ctx context.Context, w *store.Workspace, node string) (*owner.VM, error) {
	p := m.proof(w)
	p.Node = m.rowNode(node)
	v, err := m.guard.Must(ctx, p, true)
	if errors.Is(err, owner.ErrNotOwned) {
		return nil, m.lost(ctx, w, "follow", err)
	}
	if err != nil {
		return nil, err
	}
	reason := fmt.Sprintf("holder VM %d of workspace %s is on node %s, not %s (migrated outside agentd)", w.HolderVMID, w.Name, node, m.nodeOf(w))
	prev := *w
	w.Node = m.rowNode(node)
	if vol := pve.DiskVolume(v.Config, w.DiskKey); vol != "" {
		w.Storage = strings.SplitN(vol, ":", 2)[0]
	}
	if err := m.store.SaveWorkspace(ctx, w, prev, store.Event{Kind: "workspace.node_changed", Message: reason + fmt.Sprintf("; the row follows it (storage %s)", w.Storage)}); err != nil {
		*w = prev
		return nil, err
	}
	return v, nil
}

// holderFollowing is holder for an operation that needs the holder where
// it really is: when the row's node no longer has it (migrated outside
// agentd, not yet followed by reconcile), it is looked up in the cluster,
// proven and followed there first. Only a holder on no node is "gone".
func (m *Manager) holderFollowing(ctx context.Context, w *store.Workspace, op string) (*owner.VM, error) {
	v, err := m.holder(ctx, w, op)
	if !api.IsCode(err, api.CodeInvalidState) || w.State != store.WorkspaceReady {
		return v, err
	}
	at, _, lerr := m.locate(ctx, w)
	if lerr != nil || at == m.nodeOf(w) {
		return nil, err
	}
	if _, ferr := m.follow(ctx, w, at); ferr != nil {
		return nil, proxmoxErr(op, w, ferr)
	}
	return m.holder(ctx, w, op)
}
