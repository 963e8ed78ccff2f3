package soak

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Operation kinds. Each names one API call of agentd (or, for ws.write, one
// guest write to a workspace disk through the simulator).
const (
	OpSandboxCreate  = "sandbox.create"
	OpSandboxStop    = "sandbox.stop"
	OpSandboxStart   = "sandbox.start"
	OpSandboxDestroy = "sandbox.destroy"
	OpSandboxForce   = "sandbox.destroy-force"
	OpSandboxRenew   = "sandbox.renew"
	OpWsCreate       = "workspace.create"
	OpWsAttach       = "workspace.attach"
	OpWsDetach       = "workspace.detach"
	OpWsDelete       = "workspace.delete"
	// OpWsMove migrates a workspace to Node (cluster runs only: a third of
	// the attaches drawn become moves).
	OpWsMove = "workspace.move"
	OpWsFork         = "workspace.fork"
	OpWsWrite        = "workspace.write"
	OpSnapCreate     = "snapshot.create"
	OpSnapRestore    = "snapshot.restore"
	OpSnapDelete     = "snapshot.delete"
	OpSesCreate      = "session.create"
	OpSesResume      = "session.resume"
	OpSesStop        = "session.stop"
	OpSesFork        = "session.fork"
	OpSesDelete      = "session.delete"
	// OpPoolSet resizes the warm pool of yolo-ephemeral (Target "MIN:MAX"),
	// so creates of that profile claim members while the pool refills.
	OpPoolSet = "pool.set"
)

// The pools are small on purpose: operations collide on the same objects.
var (
	sandboxNames   = []string{"sb0", "sb1", "sb2", "sb3"}
	workspaceNames = []string{"w0", "w1", "w2", "w3"}
	sessionNames   = []string{"s0", "s1", "s2"}
	snapshotNames  = []string{"snap0", "snap1", "snap2"}
	fileNames      = []string{"/work/f0", "/work/f1", "/work/f2", "/work/f3"}
)

// Op is one planned operation. Everything about it is fixed by the seed.
type Op struct {
	Seq       int    // global position in the plan
	Kind      string // Op* constant
	Source    string // session fork: the session forked
	Sandbox   string
	Profile   string
	Workspace string // workspace name (for sessions: "new:NAME" creates it)
	Target    string // fork target (workspace or session name)
	Snapshot  string
	File      string
	// Node pins a sandbox create or places a workspace create (cluster
	// runs only; "": agentd places it).
	Node string
}

func (o Op) String() string {
	s := fmt.Sprintf("#%d %s", o.Seq, o.Kind)
	for _, kv := range [][2]string{{"source", o.Source}, {"sandbox", o.Sandbox}, {"profile", o.Profile}, {"workspace", o.Workspace},
		{"target", o.Target}, {"snapshot", o.Snapshot}, {"file", o.File}, {"node", o.Node}} {
		if kv[1] != "" {
			s += " " + kv[0] + "=" + kv[1]
		}
	}
	return s
}

// Fault kinds injected through the simulator's hooks.
const (
	FaultHTTP500    = "http-500"
	FaultHTTP595    = "http-595"
	FaultTaskFail   = "task-fail"
	FaultTaskHang   = "task-hang"
	FaultLostReply  = "lost-reply"
	FaultLock       = "vm-lock"
	FaultAgentDown  = "agent-down"
	FaultAgentHung  = "agent-hung"
	FaultFull       = "storage-full"
	FaultRaceNextID = "race-nextid"
	// FaultNodeOffline takes a cluster node offline (its API answers 595
	// through the others) for RevertAfter operations of the worker, then
	// brings it back; only one node is offline at a time, so the cluster
	// stays quorate.
	FaultNodeOffline = "node-offline"
)

// Fault is one planned injection. Lasting faults (hung tasks, locks, guest
// agent, full storage) are undone RevertAfter operations later by the same
// worker; request and task faults fire once and vanish.
type Fault struct {
	Kind        string
	Endpoint    string // for HTTP and lost-reply faults: a key of endpoints
	TaskType    string // for task faults
	Hang        bool   // lost reply: keep the connection open instead of closing it
	Pick        uint64 // chooses the VM at run time (the VM set is not known in advance)
	Node        string // for node-offline: the node
	RevertAfter int
}

func (f Fault) String() string {
	s := f.Kind
	if f.Endpoint != "" {
		s += " " + f.Endpoint
	}
	if f.TaskType != "" {
		s += " " + f.TaskType
	}
	if f.Hang {
		s += " (hang)"
	}
	if f.Node != "" {
		s += " " + f.Node
	}
	return s
}

// endpoints are the Proxmox calls request faults aim at (decoded paths).
var endpoints = map[string]struct{ method, path string }{
	"clone":  {"POST", `^/nodes/[^/]+/qemu/\d+/clone$`},
	"config": {"POST", `^/nodes/[^/]+/qemu/\d+/config$`},
	// Provisioning's configure writes synchronously (PUT, with the digest).
	"config-sync": {"PUT", `^/nodes/[^/]+/qemu/\d+/config$`},
	"start":       {"POST", `^/nodes/[^/]+/qemu/\d+/status/start$`},
	"stop":        {"POST", `^/nodes/[^/]+/qemu/\d+/status/(stop|shutdown)$`},
	"delete":      {"DELETE", `^/nodes/[^/]+/qemu/\d+$`},
	"create":      {"POST", `^/nodes/[^/]+/qemu$`},
	"snapshot":    {"POST", `^/nodes/[^/]+/qemu/\d+/snapshot$`},
	"rollback":    {"POST", `^/nodes/[^/]+/qemu/\d+/snapshot/[^/]+/rollback$`},
	// The claim of a pool member renames its guest through the agent.
	"exec": {"POST", `^/nodes/[^/]+/qemu/\d+/agent/exec$`},
}

var (
	httpTargets = []string{"clone", "config", "config-sync", "start", "delete", "create", "snapshot", "rollback", "stop", "exec"}
	taskTypes   = []string{"qmclone", "qmconfig", "qmstart", "qmdestroy", "qmsnapshot", "qmrollback", "qmshutdown", "qmstop", "resize"}
)

// Step is what a worker does next: an optional fault, then the operation.
type Step struct {
	Fault *Fault
	Op    Op
	Pause time.Duration // think time before the step
}

// Plan is the whole seeded run: per-worker step lists and the kill points.
type Plan struct {
	Seed    uint64
	Workers [][]Step
	// Kills are global operation counts after which agentd gets SIGKILL, each
	// with a delay so that the kill lands inside operations, not between them.
	Kills []Kill
}

// Kill is one planned kill -9.
type Kill struct {
	AfterOps int
	Delay    time.Duration
}

// PlanOptions sizes a plan.
type PlanOptions struct {
	Seed      uint64
	Ops       int
	Workers   int
	Kills     int     // kill -9 count; default 3 per 1000 operations, at least 1
	FaultRate float64 // share of operations preceded by a fault; default 0.1
	// LockShare, when > 0, is the share of faults that are vm-lock (drawn
	// before the usual mix, so 0 keeps every existing seed's plan).
	LockShare float64
	// Nodes are the cluster's nodes; with more than one the plan also pins
	// creates to nodes and takes nodes offline (drawn after everything
	// else of a step, so a standalone plan is the same as before).
	Nodes []string
	// NodeShare is the share of faults that are node-offline in a
	// cluster; default 0.25.
	NodeShare float64
}

// NewPlan draws the operations, faults and kills from the seed alone: the
// same seed always yields the same plan.
func NewPlan(o PlanOptions) *Plan {
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.FaultRate == 0 {
		o.FaultRate = 0.1
	}
	if o.Kills == 0 {
		o.Kills = max(1, o.Ops*3/1000)
	}
	if o.NodeShare == 0 {
		o.NodeShare = 0.25
	}
	r := rand.New(rand.NewPCG(o.Seed, 0x50a4))
	p := &Plan{Seed: o.Seed, Workers: make([][]Step, o.Workers)}
	// A warm-up of creates first: operations on an empty pool only test 404s.
	warm := min(o.Ops/8, 3*o.Workers)
	for i := 0; i < o.Ops; i++ {
		st := Step{Op: drawOp(r, i, i < warm), Pause: time.Duration(r.IntN(60)) * time.Millisecond}
		if r.Float64() < o.FaultRate {
			f := drawFault(r, o.LockShare)
			st.Fault = &f
		}
		if len(o.Nodes) > 1 {
			clusterStep(r, &st, o)
		}
		p.Workers[i%o.Workers] = append(p.Workers[i%o.Workers], st)
	}
	for k := 0; k < o.Kills && o.Ops > 0; k++ {
		// Spread over the run, away from its very end so the restart is exercised under load.
		at := (k*o.Ops)/o.Kills + r.IntN(max(1, o.Ops/(o.Kills*2)))
		p.Kills = append(p.Kills, Kill{AfterOps: at, Delay: time.Duration(r.IntN(400)) * time.Millisecond})
	}
	return p
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

// weights of the operation kinds: writes are common (I4 needs content), the
// destructive workspace operations rarer.
var opWeights = []struct {
	kind string
	w    int
}{
	{OpSandboxCreate, 9}, {OpSandboxStop, 4}, {OpSandboxStart, 4}, {OpSandboxDestroy, 3}, {OpSandboxForce, 3},
	{OpSandboxRenew, 3}, {OpWsCreate, 6}, {OpWsAttach, 5}, {OpWsDetach, 5}, {OpWsDelete, 2}, {OpWsFork, 3},
	{OpWsWrite, 12}, {OpSnapCreate, 5}, {OpSnapRestore, 4}, {OpSnapDelete, 2}, {OpSesCreate, 5},
	{OpSesResume, 6}, {OpSesStop, 4}, {OpSesFork, 2}, {OpSesDelete, 3}, {OpPoolSet, 3},
}

// poolSizes are the pool sizes pool.set draws from (min_ready:max).
var poolSizes = []string{"0:0", "1:2", "2:2", "2:4", "3:3"}

var creates = map[string]bool{OpSandboxCreate: true, OpWsCreate: true, OpSesCreate: true, OpPoolSet: true}

func drawOp(r *rand.Rand, seq int, warmup bool) Op {
	weight := func(kind string, w int) int {
		if warmup && !creates[kind] {
			return 0
		}
		return w
	}
	total := 0
	for _, w := range opWeights {
		total += weight(w.kind, w.w)
	}
	n := r.IntN(total)
	kind := ""
	for _, w := range opWeights {
		if n < weight(w.kind, w.w) {
			kind = w.kind
			break
		}
		n -= weight(w.kind, w.w)
	}
	op := Op{Seq: seq, Kind: kind}
	switch kind {
	case OpSandboxCreate:
		op.Sandbox, op.Profile = pick(r, sandboxNames), "yolo-ephemeral"
		if r.IntN(3) == 0 {
			op.Profile, op.Workspace = "yolo-workspace", pick(r, workspaceNames)
		}
	case OpSandboxStop, OpSandboxStart, OpSandboxDestroy, OpSandboxForce, OpSandboxRenew:
		op.Sandbox = pick(r, sandboxNames)
	case OpWsCreate, OpWsDetach, OpWsDelete:
		op.Workspace = pick(r, workspaceNames)
	case OpWsAttach:
		op.Workspace, op.Sandbox = pick(r, workspaceNames), pick(r, sandboxNames)
	case OpWsWrite:
		op.Workspace, op.File = pick(r, workspaceNames), pick(r, fileNames)
	case OpWsFork:
		op.Workspace, op.Target = pick(r, workspaceNames), pick(r, workspaceNames)
		if r.IntN(2) == 0 {
			op.Snapshot = pick(r, snapshotNames)
		}
	case OpSnapCreate, OpSnapRestore, OpSnapDelete:
		op.Workspace, op.Snapshot = pick(r, workspaceNames), pick(r, snapshotNames)
	case OpSesCreate:
		op.Target, op.Profile, op.Workspace = pick(r, sessionNames), "yolo-workspace", pick(r, workspaceNames)
		if r.IntN(2) == 0 {
			op.Workspace = "new:" + op.Workspace
		}
	case OpSesResume, OpSesStop, OpSesDelete:
		op.Target = pick(r, sessionNames)
	case OpPoolSet:
		op.Profile, op.Target = "yolo-ephemeral", pick(r, poolSizes)
	case OpSesFork:
		// Target is the new session; Workspace the name of its forked workspace.
		op.Source, op.Target, op.Workspace = pick(r, sessionNames), pick(r, sessionNames), pick(r, workspaceNames)
	}
	return op
}

// clusterStep draws what a cluster adds to a step: a node for a third of
// sandbox creates (a pin) and half of workspace creates, a move in place of
// a third of workspace attaches, and for a share of
// the faults a node outage in place of the drawn fault. The outage lasts 2
// to 7 of the worker's operations, long enough for reconcile cycles (every
// 3s) to see the node offline.
func clusterStep(r *rand.Rand, st *Step, o PlanOptions) {
	switch st.Op.Kind {
	case OpSandboxCreate:
		if r.IntN(3) == 0 {
			st.Op.Node = pick(r, o.Nodes)
		}
	case OpWsCreate:
		if r.IntN(2) == 0 {
			st.Op.Node = pick(r, o.Nodes)
		}
	case OpWsAttach:
		if r.IntN(3) == 0 {
			st.Op.Kind, st.Op.Sandbox, st.Op.Node = OpWsMove, "", pick(r, o.Nodes)
		}
	}
	if st.Fault != nil && r.Float64() < o.NodeShare {
		st.Fault = &Fault{Kind: FaultNodeOffline, Node: pick(r, o.Nodes), RevertAfter: 2 + r.IntN(6)}
	}
}

func drawFault(r *rand.Rand, lockShare float64) Fault {
	f := Fault{Pick: r.Uint64(), RevertAfter: 1 + r.IntN(4)}
	if lockShare > 0 && r.Float64() < lockShare {
		f.Kind = FaultLock
		return f
	}
	switch n := r.IntN(20); {
	case n < 3:
		f.Kind, f.Endpoint = FaultHTTP500, pick(r, httpTargets)
	case n < 5:
		f.Kind, f.Endpoint = FaultHTTP595, pick(r, httpTargets)
	case n < 8:
		f.Kind, f.TaskType = FaultTaskFail, pick(r, taskTypes)
	case n < 9:
		f.Kind, f.TaskType = FaultTaskHang, pick(r, taskTypes)
	case n < 13:
		f.Kind, f.Endpoint, f.Hang = FaultLostReply, pick(r, httpTargets), r.IntN(5) == 0
	case n < 15:
		f.Kind = FaultLock
	case n < 16:
		f.Kind = FaultAgentDown
	case n < 17:
		f.Kind = FaultAgentHung
	case n < 18:
		f.Kind = FaultFull
	default:
		f.Kind = FaultRaceNextID
	}
	return f
}
