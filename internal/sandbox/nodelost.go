package sandbox

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// A node that goes offline takes its sandboxes out of reach, not out of
// existence: a partitioned node's VMs may run on. Its sandboxes become LOST
// (step node_offline) and agentd acts on none of them while the node is
// unreachable; when it is back, reconcile proves each VM again and settles
// the row on what Proxmox has. A profile with on_node_lost: recreate gets a
// replacement of the same name on another node at once; the old VM is
// destroyed, with the ownership proof, when its node is back.
const (
	stepNodeLost         = "node_offline"
	stepNodeLostReplaced = "node_offline_replaced"
	// A sandbox lost before its provisioning finished (FAILED, TIMEOUT,
	// or before its first config write) keeps the step it stopped at after
	// this prefix ("node_offline:resize_disk"): its VM may carry no tag
	// yet, so the proof and the destroy depend on that step, and when the
	// node is back it is FAILED again, not a STOPPED sandbox whose VM was
	// never fully configured.
	stepNodeLostAt = "node_offline:"
)

// nodeLost reports whether sb is LOST only because its node went offline.
func nodeLost(sb *store.Sandbox) bool {
	return sb.State == api.StateLost && (sb.Step == stepNodeLost || sb.Step == stepNodeLostReplaced || strings.HasPrefix(sb.Step, stepNodeLostAt))
}

// unfinished reports whether sb's provisioning never finished: it failed
// or timed out, or its VM has not been configured yet.
func unfinished(sb *store.Sandbox) bool {
	return sb.State == api.StateFailed || sb.State == api.StateTimeout || untagged(sb)
}

// provisionStep is the provisioning step a row stopped at: its step, or for
// a row lost before its first config write, the step kept after the prefix.
func provisionStep(sb *store.Sandbox) string { return strings.TrimPrefix(sb.Step, stepNodeLostAt) }

// offline lists the nodes the inventory shows offline.
func offline(inv *pve.Inventory) map[string]bool {
	down := map[string]bool{}
	for _, n := range inv.Nodes {
		if !n.Online {
			down[n.Node] = true
		}
	}
	return down
}

// settleNodes is reconcile's node pass: sandboxes on offline nodes become
// LOST, node-lost sandboxes whose node is back are settled. It returns the
// ids it handled, which the drift pass leaves alone this cycle.
func (m *Manager) settleNodes(ctx context.Context, inv *pve.Inventory, byID map[int]pve.Resource, rows []*store.Sandbox,
	dryRun bool, rep *api.ReconcileReport) map[string]bool {
	down := offline(inv)
	handled := map[string]bool{}
	for _, sb := range rows {
		node := cmp.Or(sb.Node, m.opts.Node)
		if sb.VMID == 0 || m.busy(sb.ID) {
			continue
		}
		var act *api.ReconcileAction
		switch {
		case down[node] && !nodeLost(sb) && sb.State != api.StateLost && sb.State != api.StateDestroying:
			act = &api.ReconcileAction{Action: "node_lost", Reason: fmt.Sprintf("node %s is offline", node)}
		case down[node]:
			handled[sb.ID] = true // waits for its node
			continue
		case nodeLost(sb):
			act = &api.ReconcileAction{Action: "node_back", Reason: fmt.Sprintf("node %s is back online", node)}
		default:
			continue
		}
		handled[sb.ID] = true
		act.Sandbox, act.VMID = sb.Name, sb.VMID
		if !dryRun {
			var err error
			if act.Action == "node_lost" {
				err = m.markNodeLost(ctx, sb, node)
			} else {
				act.Reason, err = m.nodeBack(ctx, sb, byID, node)
			}
			if err != nil {
				act.Reason += "; not applied: " + err.Error()
			}
		}
		rep.Actions = append(rep.Actions, *act)
	}
	return handled
}

// markNodeLost makes sb LOST while its node is offline, then replaces it
// elsewhere when its profile asks for that.
func (m *Manager) markNodeLost(ctx context.Context, sb *store.Sandbox, node string) error {
	cur, unlock, ok := m.relock(ctx, sb)
	if !ok {
		return errors.New("state changed meanwhile")
	}
	if !api.CanTransition(cur.State, api.StateLost) {
		unlock()
		return fmt.Errorf("a %s sandbox cannot become LOST", cur.State)
	}
	if unfinished(cur) {
		// Without the step the proof would ask for the tag such a VM may
		// not have, and settled on its VM's power state the row would
		// become a STOPPED sandbox with a half-built VM (soak -nodes 3).
		cur.Step = stepNodeLostAt + cur.Step
	} else {
		cur.Step = stepNodeLost
	}
	cur.Error = fmt.Sprintf("node %s is offline: agentd does not act on this sandbox until the node is back", node)
	err := m.save(ctx, cur, api.StateLost, "sandbox.node_lost", cur.Error)
	unlock()
	if err != nil {
		return err
	}
	if p := m.profiles[cur.Profile]; p != nil && p.Behavior.OnNodeLost == profile.NodeLostRecreate {
		return m.recreate(ctx, cur, p)
	}
	return nil
}

// recreate hands sb's name to a replacement placed on another node. Only a
// plain sandbox is recreated: one with a workspace (whose volume is on the
// lost node), a pin to that node, a session or a job stays LOST.
func (m *Manager) recreate(ctx context.Context, sb *store.Sandbox, p *profile.Profile) error {
	var c canonical
	_ = json.Unmarshal([]byte(sb.Request), &c)
	why := ""
	switch {
	case IsPoolMember(sb):
		why = "a warm-pool member (the pool builds another)"
	case strings.HasPrefix(sb.Step, stepNodeLostAt):
		why = "it never finished provisioning (it stopped at step " + provisionStep(sb) + ")"
	case sb.Workspace != "":
		why = "its workspace " + sb.Workspace + " is on the offline node"
	case c.Node != "":
		why = "it is pinned to node " + c.Node
	}
	if why == "" {
		if x, err := m.store.SessionOfSandbox(ctx, sb.ID); err == nil {
			why = "it is the sandbox of session " + x.Name
		} else if j, err := m.store.JobOfSandbox(ctx, sb.ID); err == nil {
			why = "it runs job " + j.ID
		}
	}
	if why != "" {
		return m.store.AddEvent(ctx, sb, store.Event{Kind: "sandbox.not_recreated", Message: "profile " + p.Name + " asks on_node_lost: recreate, but " + why})
	}
	name := sb.Name
	keep := c.Keepalive
	req := api.CreateSandboxRequest{Name: name, Profile: c.Profile, TTL: strconv.FormatInt(c.TTLSeconds, 10) + "s", Keepalive: &keep,
		Tags: c.Tags, Cores: c.Cores, MemoryMB: c.MemoryMB}
	// Admitted before the rename, and with the lost sandbox's own slot: a
	// refusal (a limit lowered since) leaves it LOST under its name, with an
	// event saying why.
	tctx := auth.For(ctx, sb.Team)
	release, err := m.Replace(tctx, req, sb.ID)
	if err != nil {
		if aerr := m.store.AddEvent(ctx, sb, store.Event{Kind: "sandbox.not_recreated",
			Message: "profile " + p.Name + " asks on_node_lost: recreate, but the replacement is refused: " + err.Error()}); aerr != nil {
			return aerr
		}
		return fmt.Errorf("recreate %s: %w", name, err)
	}
	defer release()
	unlock := m.locks.Lock(sb.ID)
	err = m.store.RenameSandbox(ctx, sb, name+"~lost-"+sb.ID[len(sb.ID)-8:], "its node is offline and a replacement takes the name "+name)
	if err == nil {
		sb.Step = stepNodeLostReplaced
		err = m.store.Save(ctx, sb, sb.State, store.Event{Kind: "sandbox.replaced",
			Message: fmt.Sprintf("replaced by a new sandbox %s on another node; VM %d is destroyed when node %s is back", name, sb.VMID, cmp.Or(sb.Node, m.opts.Node))})
	}
	unlock()
	if err != nil {
		return err
	}
	nsb, _, err := m.Create(tctx, req)
	if err != nil {
		return fmt.Errorf("recreate %s: %w", name, err)
	}
	return m.store.AddEvent(ctx, nsb, store.Event{Kind: "sandbox.recreated", Message: fmt.Sprintf("replaces sandbox %s (%s), whose node %s is offline", sb.ID, name, cmp.Or(sb.Node, m.opts.Node))})
}

// nodeBack settles a node-lost sandbox whose node answers again: its VM is
// proven again; a replaced sandbox's VM is destroyed, any other goes back to
// what its VM does. A VM that fails the proof leaves the row LOST for good.
func (m *Manager) nodeBack(ctx context.Context, sb *store.Sandbox, byID map[int]pve.Resource, node string) (string, error) {
	cur, unlock, ok := m.relock(ctx, sb)
	if !ok {
		return "", errors.New("state changed meanwhile")
	}
	if !nodeLost(cur) {
		unlock()
		return "", errors.New("no longer node-lost")
	}
	r, exists := byID[cur.VMID]
	v, err := m.vm(ctx, cur)
	switch {
	case errors.Is(err, owner.ErrNotOwned):
		cur.Step, cur.Error = "", err.Error()
		err = m.store.Save(ctx, cur, cur.State, store.Event{Kind: "sandbox.not_owned",
			Message: fmt.Sprintf("node %s is back but VM %d is not provably this sandbox's: %v; agentd will not touch it (destroy --force retires the row)", node, cur.VMID, err)})
		unlock()
		return "node back; the VM failed the proof: LOST for good", err
	case err != nil:
		unlock()
		return "", err // not readable yet: next cycle
	case strings.HasPrefix(cur.Step, stepNodeLostAt):
		// Its provisioning never finished: FAILED again at the step it
		// stopped at, its VM left to the cleanup every failed sandbox gets
		// (prune, destroy), which proves it as that step allows.
		cur.Step = provisionStep(cur)
		cur.Error = fmt.Sprintf("provisioning did not finish (step %s) before node %s went offline; VM %d is left for prune or destroy", cur.Step, node, cur.VMID)
		err = m.save(ctx, cur, api.StateFailed, "sandbox.reconciled", fmt.Sprintf("node %s is back; %s", node, cur.Error))
		unlock()
		return "node back; provisioning had not finished: FAILED", err
	case v == nil || !exists:
		_ = m.store.VMGone(ctx, cur.ID, cur.VMID)
		m.removeSnippet(cur)
		cur.IP, cur.Step = "", ""
		err = m.save(ctx, cur, api.StateDestroyed, "sandbox.reconciled", fmt.Sprintf("node %s is back and VM %d no longer exists", node, cur.VMID))
		unlock()
		return "node back; its VM is gone", err
	case cur.Step == stepNodeLostReplaced:
		cur.Error = ""
		err = m.save(ctx, cur, api.StateDestroying, "sandbox.destroy_requested", fmt.Sprintf("node %s is back: destroying VM %d, replaced while the node was offline", node, cur.VMID))
		unlock()
		if err == nil {
			m.startWorker(cur.ID)
		}
		return "node back; destroying the replaced VM", err
	case IsPoolMember(cur) && r.Status != "running":
		// A member is nobody's sandbox yet, and one that is not running
		// either failed to build (its cleanup cut short by the outage) or
		// stopped: settled on its VM's power state it would become a
		// STOPPED sandbox named after its id that still carries the pool
		// marker. Retired instead, with the proof; the pool builds another.
		// A running member goes through the restart check back to POOLED.
		cur.Error = ""
		err = m.save(ctx, cur, api.StateDestroying, "sandbox.destroy_requested", fmt.Sprintf("node %s is back: retiring warm-pool member VM %d, which is %s", node, cur.VMID, r.Status))
		unlock()
		if err == nil {
			m.startWorker(cur.ID)
		}
		return "node back; retiring the pool member", err
	case r.Status == "running":
		cur.Step, cur.Error = stepRestart, ""
		err = m.save(ctx, cur, api.StateBooting, "sandbox.reconciled", fmt.Sprintf("node %s is back and VM %d runs; confirming its address", node, cur.VMID))
		unlock()
		if err == nil {
			m.startWorker(cur.ID)
		}
		return "node back; the VM runs", err
	default:
		cur.Step, cur.Error, cur.IP = "", "", ""
		err = m.save(ctx, cur, api.StateStopped, "sandbox.reconciled", fmt.Sprintf("node %s is back and VM %d is %s", node, cur.VMID, r.Status))
		unlock()
		return "node back; the VM is stopped", err
	}
}
