package soak

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// Injector applies planned faults through the simulator's hooks and undoes
// the lasting ones. It also keeps the set of VMs agentd did not create.
type Injector struct {
	sim *SimClient

	mu      sync.Mutex
	foreign map[int]pvesim.VMState
	counts  map[string]int // injected, by kind
	skipped map[string]int // could not be injected (no VM to aim at)
	undo    map[int]func(context.Context) error
	next    int
	lockAt  map[string]bool // description keys a locked VM must carry; empty: any
	// nodes of the cluster; down is the one offline now ("": none).
	nodes []string
	down  string
	// probe, when set, runs right before an offline node comes back, with
	// the simulator's state from the moment it went offline (I10).
	probe func(ctx context.Context, node string, before *pvesim.State, wsBefore []api.Workspace)
	// workspaces lists agentd's workspaces as an outage starts.
	workspaces func(ctx context.Context) ([]api.Workspace, error)
}

// NewInjector starts with the VMs that exist before agentd does anything.
// lockAt is Config.LockAt.
func NewInjector(sim *SimClient, foreign map[int]pvesim.VMState, lockAt string) *Injector {
	in := &Injector{sim: sim, foreign: foreign, counts: map[string]int{}, skipped: map[string]int{}, undo: map[int]func(context.Context) error{},
		lockAt: map[string]bool{}}
	for _, k := range strings.Split(lockAt, ",") {
		switch strings.TrimSpace(k) {
		case "sandbox":
			in.lockAt["agentlab-sandbox-id:"] = true
		case "holder":
			in.lockAt["agentlab-workspace-id:"] = true
		}
	}
	return in
}

// lockable reports whether a vm-lock fault may aim at a VM with desc.
func (in *Injector) lockable(desc string) bool {
	if len(in.lockAt) == 0 {
		return true
	}
	for k := range in.lockAt {
		if strings.Contains(desc, k) {
			return true
		}
	}
	return false
}

// Foreign returns a copy of the foreign VM set.
func (in *Injector) Foreign() map[int]pvesim.VMState {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make(map[int]pvesim.VMState, len(in.foreign))
	for k, v := range in.foreign {
		out[k] = v
	}
	return out
}

// Counts returns injected and skipped faults by kind.
func (in *Injector) Counts() (injected, skipped map[string]int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	injected, skipped = map[string]int{}, map[string]int{}
	for k, v := range in.counts {
		injected[k] = v
	}
	for k, v := range in.skipped {
		skipped[k] = v
	}
	return injected, skipped
}

// Inject applies f and reports whether it could (a VM fault needs a VM to
// aim at). For a lasting fault it returns a token for Revert (0: none).
func (in *Injector) Inject(ctx context.Context, f Fault) (token int, injected bool, err error) {
	var undo func(context.Context) error
	switch f.Kind {
	case FaultHTTP500, FaultHTTP595:
		ep := endpoints[f.Endpoint]
		code, msg := 500, "injected: "+f.Endpoint+" failed"
		if f.Kind == FaultHTTP595 {
			code, msg = 595, "Connection refused"
		}
		err = in.sim.Do(ctx, "fail-endpoint", Hook{Method: ep.method, Path: ep.path, Code: code, Message: msg, Times: 1}, nil)
	case FaultLostReply:
		ep := endpoints[f.Endpoint]
		err = in.sim.Do(ctx, "lose-reply", Hook{Method: ep.method, Path: ep.path, Times: 1, Hang: f.Hang}, nil)
	case FaultTaskFail:
		err = in.sim.Do(ctx, "fail-task", Hook{Type: f.TaskType, Message: "injected: " + f.TaskType + " failed", Times: 1}, nil)
	case FaultTaskHang:
		err = in.sim.Do(ctx, "hang-task", Hook{Type: f.TaskType, Times: 1}, nil)
		undo = func(ctx context.Context) error { return in.sim.Do(ctx, "release-hung-tasks", Hook{}, nil) }
	case FaultFull:
		err = in.sim.Do(ctx, "fill-storage", Hook{Storage: "local-lvm", On: true}, nil)
		undo = func(ctx context.Context) error {
			return in.sim.Do(ctx, "fill-storage", Hook{Storage: "local-lvm"}, nil)
		}
	case FaultRaceNextID:
		var id string
		if err = in.sim.Do(ctx, "race-nextid", Hook{}, &id); err == nil {
			err = in.addForeign(ctx, id)
		}
	case FaultNodeOffline:
		undo, err = in.nodeOffline(ctx, f.Node)
		if err == nil && undo == nil {
			in.mu.Lock()
			in.skipped[f.Kind]++
			in.mu.Unlock()
			return 0, false, nil // another node is offline
		}
	case FaultLock, FaultAgentDown, FaultAgentHung:
		undo, err = in.aimAtVM(ctx, f)
		if err == nil && undo == nil {
			return 0, false, nil // nothing to aim at yet
		}
	default:
		return 0, false, fmt.Errorf("unknown fault kind %q", f.Kind)
	}
	if err != nil {
		return 0, false, fmt.Errorf("inject %s: %w", f, err)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.counts[f.Kind]++
	if undo == nil {
		return 0, true, nil
	}
	in.next++
	in.undo[in.next] = undo
	return in.next, true, nil
}

func (in *Injector) addForeign(ctx context.Context, id string) error {
	vmid, err := strconv.Atoi(id)
	if err != nil {
		return fmt.Errorf("race-nextid answered %q", id)
	}
	st, err := in.sim.State(ctx)
	if err != nil {
		return err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if v, ok := st.VMs[vmid]; ok {
		in.foreign[vmid] = foreignState(v)
	}
	return nil
}

// aimAtVM picks one of agentd's VMs (sandboxes for guest-agent faults, any
// for locks) with the fault's Pick, so a seed aims at the same rank.
func (in *Injector) aimAtVM(ctx context.Context, f Fault) (func(context.Context) error, error) {
	st, err := in.sim.State(ctx)
	if err != nil {
		return nil, err
	}
	in.mu.Lock()
	var ids []int
	for id, v := range st.VMs {
		if _, foreign := in.foreign[id]; foreign {
			continue
		}
		if f.Kind != FaultLock && !strings.Contains(v.Config["description"], "agentlab-sandbox-id:") {
			continue
		}
		if f.Kind == FaultLock && !in.lockable(v.Config["description"]) {
			continue
		}
		ids = append(ids, id)
	}
	in.mu.Unlock()
	if len(ids) == 0 {
		in.mu.Lock()
		in.skipped[f.Kind]++
		in.mu.Unlock()
		return nil, nil
	}
	sort.Ints(ids)
	vmid := ids[f.Pick%uint64(len(ids))]
	switch f.Kind {
	case FaultLock:
		if st.VMs[vmid].Config["lock"] != "" {
			in.mu.Lock()
			in.skipped[f.Kind]++
			in.mu.Unlock()
			return nil, nil // Proxmox's own lock: leave it alone
		}
		if err := in.sim.Do(ctx, "lock", Hook{VMID: vmid, Lock: "backup"}, nil); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error {
			st, err := in.sim.State(ctx)
			if err != nil {
				return err
			}
			if v, ok := st.VMs[vmid]; ok && v.Config["lock"] == "backup" {
				return in.sim.Do(ctx, "lock", Hook{VMID: vmid}, nil)
			}
			return nil
		}, nil
	default:
		state := pvesim.AgentNotRunning
		if f.Kind == FaultAgentHung {
			state = pvesim.AgentHung
		}
		if err := in.sim.Do(ctx, "agent", Hook{VMID: vmid, State: state}, nil); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error {
			err := in.sim.Do(ctx, "agent", Hook{VMID: vmid, State: pvesim.AgentRunning}, nil)
			if err != nil && strings.Contains(err.Error(), "400") {
				return nil // the VM is gone: nothing to undo
			}
			return err
		}, nil
	}
}

// nodeOffline takes node offline unless another node already is (a second
// outage would cost a three-node cluster its quorum, which is a different
// experiment). The undo probes, then brings the node back.
func (in *Injector) nodeOffline(ctx context.Context, node string) (func(context.Context) error, error) {
	in.mu.Lock()
	if in.down != "" {
		in.mu.Unlock()
		return nil, nil
	}
	in.down = node
	in.mu.Unlock()
	// The rows first, then the simulator: a workspace READY in the list
	// has its holder in the state read after it.
	var wsBefore []api.Workspace
	if in.workspaces != nil {
		wsBefore, _ = in.workspaces(ctx) // unreadable (agentd restarting): that check is skipped
	}
	before, err := in.sim.State(ctx)
	if err == nil {
		err = in.sim.Do(ctx, "node-online", Hook{Node: node, On: false}, nil)
	}
	if err != nil {
		in.mu.Lock()
		in.down = ""
		in.mu.Unlock()
		return nil, err
	}
	return func(ctx context.Context) error {
		if in.probe != nil {
			in.probe(ctx, node, before, wsBefore)
		}
		err := in.sim.Do(ctx, "node-online", Hook{Node: node, On: true}, nil)
		in.mu.Lock()
		in.down = ""
		in.mu.Unlock()
		return err
	}, nil
}

// Revert undoes one lasting fault.
func (in *Injector) Revert(ctx context.Context, token int) error {
	in.mu.Lock()
	undo := in.undo[token]
	delete(in.undo, token)
	in.mu.Unlock()
	if undo == nil {
		return nil
	}
	return undo(ctx)
}

// Clear removes every request and task fault, releases hung tasks and undoes
// every lasting fault still in place: the start of the settle phase.
func (in *Injector) Clear(ctx context.Context) error {
	in.mu.Lock()
	tokens := make([]int, 0, len(in.undo))
	for t := range in.undo {
		tokens = append(tokens, t)
	}
	in.mu.Unlock()
	sort.Ints(tokens)
	var errs []string
	for _, t := range tokens {
		if err := in.Revert(ctx, t); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for _, h := range []string{"clear-faults", "release-hung-tasks"} {
		if err := in.sim.Do(ctx, h, Hook{}, nil); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if err := in.sim.Do(ctx, "fill-storage", Hook{Storage: "local-lvm"}, nil); err != nil {
		errs = append(errs, err.Error())
	}
	if len(in.nodes) > 1 {
		for _, n := range in.nodes {
			if err := in.sim.Do(ctx, "node-online", Hook{Node: n, On: true}, nil); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("clear faults: %s", strings.Join(errs, "; "))
	}
	return nil
}

// Plant adds VMs agentd must never touch: an unrelated VM, one tagged like
// another agent's sandbox (tag and marker, but no row of ours) and one tagged
// like another agent's workspace holder. It returns the foreign set,
// template included.
func Plant(ctx context.Context, sim *SimClient) (map[int]pvesim.VMState, error) {
	vms := []struct {
		id  int
		cfg map[string]string
	}{
		{8001, map[string]string{"name": "someone-elses", "memory": "1024", "cores": "1", "scsi0": "local-lvm:2", "net0": "virtio,bridge=vmbr0"}},
		{8002, map[string]string{"name": "sb0", "memory": "1024", "cores": "2", "scsi0": "local-lvm:2", "tags": "agentlab",
			"description": "Managed by AgentLab agentd; do not edit or remove these lines.\nagentlab-sandbox-id: sb-0therag3nt00\nagentlab-sandbox-name: sb0\n"}},
		{8003, map[string]string{"name": "ws-w0", "memory": "64", "cores": "1", "scsi0": "local-lvm:1", "tags": "agentlab-workspace",
			"description": "AgentLab workspace holder: owns the volume of workspace w0. Never start or delete it by hand.\nagentlab-workspace-id: ws-0therag3nt0\nagentlab-workspace-name: w0\n"}},
	}
	for _, v := range vms {
		if err := sim.Do(ctx, "add-vm", Hook{VMID: v.id, Config: v.cfg}, nil); err != nil {
			return nil, fmt.Errorf("plant VM %d: %w", v.id, err)
		}
	}
	st, err := sim.State(ctx)
	if err != nil {
		return nil, err
	}
	out := map[int]pvesim.VMState{}
	for _, id := range []int{pvesim.FixtureTemplateID, 8001, 8002, 8003} {
		out[id] = foreignState(st.VMs[id])
	}
	// In a cluster, the template's copies on the other nodes (9001..).
	for id := pvesim.FixtureTemplateID + 1; ; id++ {
		v, ok := st.VMs[id]
		if !ok {
			break
		}
		out[id] = foreignState(v)
	}
	return out, nil
}
