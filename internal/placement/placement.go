// Package placement chooses the cluster node a new sandbox runs on. Proxmox
// VE has no initial-placement scheduler (the caller of clone names the
// node), so agentd decides: best of K sampled eligible nodes, scored on
// free memory first, as PVE's static CRS weighs it, then on CPU
// commitment. Hard caps (memory, CPU overcommit, sandboxes per node) and
// drained or offline nodes exclude a node; a node already running its
// limit of clones is busy, which the caller waits out rather
// than piling on (Proxmox answers `can't lock file … got timeout` above two
// or three parallel clones per node).
package placement

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
)

// Node is what placement knows of one node: its capacity from
// /cluster/resources and what is committed on it.
type Node struct {
	Name    string
	Online  bool
	Drained bool // agentd node drain: no new sandboxes
	// MemoryMB and CPUs are the node's (maxmem, maxcpu).
	MemoryMB int64
	CPUs     int
	// CommittedMB and CommittedCores sum the configured memory and cores
	// of the VMs that run, or are being made, on the node.
	CommittedMB    int64
	CommittedCores int
	Sandboxes      int // agentd's live sandboxes on the node
	InFlight       int // clones running now
}

// Caps bound every node; zero values take the defaults in Defaults.
type Caps struct {
	// ReserveMB is memory kept free on every node for the host itself.
	ReserveMB int64
	// CPUOvercommit is the most cores committed per physical CPU.
	CPUOvercommit float64
	// MaxSandboxes per node (0: no limit).
	MaxSandboxes int
	// MaxInFlight is the concurrent clones per node (and, counted apart,
	// the concurrent starts).
	MaxInFlight int
	// K is how many eligible nodes a decision samples.
	K int
}

// Defaults fills zero fields.
func (c Caps) Defaults() Caps {
	if c.CPUOvercommit <= 0 {
		c.CPUOvercommit = 4
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 2
	}
	if c.K <= 0 {
		c.K = 3
	}
	return c
}

// Request is what the new sandbox needs.
type Request struct {
	MemoryMB int64
	Cores    int
	// Pin names the only node allowed ("" any): a sandbox pinned by the
	// user, or one whose workspace lives on a node-local storage.
	Pin string
	// PinReason says why Pin is set, for the decision's reason.
	PinReason string
	// Eligible, when set, excludes nodes that lack what the sandbox needs
	// (its template, its storage); it returns why a node is excluded.
	Eligible func(node string) (ok bool, why string)
}

// Decision is the chosen node and why, for the sandbox's event.
type Decision struct {
	Node   string
	Reason string
}

// ErrBusy: eligible nodes exist but every one runs its limit of clones and
// starts; the caller retries when one ends. ErrNoCapacity: no node can take
// the sandbox at all.
var (
	ErrBusy       = errors.New("every eligible node is busy")
	ErrNoCapacity = errors.New("no node can take the sandbox")
)

// Error lists why each node was passed over.
type Error struct {
	Kind    error // ErrBusy or ErrNoCapacity
	Reasons []string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%v: %s", e.Kind, strings.Join(e.Reasons, "; "))
}

func (e *Error) Unwrap() error { return e.Kind }

// freeAfter is the memory the node keeps free once the sandbox runs.
func freeAfter(n *Node, req Request, caps Caps) int64 {
	return n.MemoryMB - caps.ReserveMB - n.CommittedMB - req.MemoryMB
}

// cpuRatio is the node's core commitment per CPU once the sandbox runs.
func cpuRatio(n *Node, req Request) float64 {
	if n.CPUs <= 0 {
		return 1e9
	}
	return float64(n.CommittedCores+req.Cores) / float64(n.CPUs)
}

// exclude says why n cannot take req ("" if it can), and whether the
// reason is only that it is busy now.
func exclude(n *Node, req Request, caps Caps) (why string, busy bool) {
	switch {
	case !n.Online:
		return "offline", false
	case n.Drained:
		return "drained (agentd node undrain " + n.Name + ")", false
	}
	if req.Eligible != nil {
		if ok, why := req.Eligible(n.Name); !ok {
			return why, false
		}
	}
	if f := freeAfter(n, req, caps); f < 0 {
		return fmt.Sprintf("memory: %d MiB committed of %d (reserve %d), needs %d more", n.CommittedMB, n.MemoryMB, caps.ReserveMB, req.MemoryMB), false
	}
	if r := cpuRatio(n, req); r > caps.CPUOvercommit {
		return fmt.Sprintf("cpu: %d cores committed on %d CPUs, %d more exceeds overcommit %.1f", n.CommittedCores, n.CPUs, req.Cores, caps.CPUOvercommit), false
	}
	if caps.MaxSandboxes > 0 && n.Sandboxes >= caps.MaxSandboxes {
		return fmt.Sprintf("sandboxes: %d of max %d", n.Sandboxes, caps.MaxSandboxes), false
	}
	if n.InFlight >= caps.MaxInFlight {
		return fmt.Sprintf("busy: %d clones running (max %d)", n.InFlight, caps.MaxInFlight), true
	}
	return "", false
}

// better reports whether a is a better home than b: more memory left free,
// then less CPU commitment, then fewer operations in flight, then name
// (a total order, so a decision never depends on map order).
func better(a, b *Node, req Request, caps Caps) bool {
	fa, fb := freeAfter(a, req, caps), freeAfter(b, req, caps)
	if fa != fb {
		return fa > fb
	}
	ra, rb := cpuRatio(a, req), cpuRatio(b, req)
	if ra != rb {
		return ra < rb
	}
	if a.InFlight != b.InFlight {
		return a.InFlight < b.InFlight
	}
	return a.Name < b.Name
}

// Choose picks the node for req among nodes: K eligible nodes sampled at
// random (all of them when there are at most K), the best of those. Random
// sampling keeps concurrent decisions made on the same view from all
// landing on the one best node; K > 1 keeps each decision good.
func Choose(nodes []Node, req Request, caps Caps, rnd *rand.Rand) (Decision, error) {
	caps = caps.Defaults()
	var ok []*Node
	var reasons []string
	busy := 0
	for i := range nodes {
		n := &nodes[i]
		if req.Pin != "" && n.Name != req.Pin {
			continue
		}
		why, isBusy := exclude(n, req, caps)
		if why == "" {
			ok = append(ok, n)
			continue
		}
		if isBusy {
			busy++
		}
		reasons = append(reasons, n.Name+": "+why)
	}
	if len(ok) == 0 {
		if req.Pin != "" && len(reasons) == 0 {
			return Decision{}, &Error{Kind: ErrNoCapacity, Reasons: []string{fmt.Sprintf("node %s is not in the cluster (or not one agentd uses)", req.Pin)}}
		}
		sort.Strings(reasons)
		kind := ErrNoCapacity
		if busy > 0 {
			kind = ErrBusy // at least one node could take it once a clone ends
		}
		return Decision{}, &Error{Kind: kind, Reasons: reasons}
	}
	sample := ok
	if len(ok) > caps.K {
		sample = make([]*Node, 0, caps.K)
		for _, i := range rnd.Perm(len(ok))[:caps.K] {
			sample = append(sample, ok[i])
		}
	}
	best := sample[0]
	for _, n := range sample[1:] {
		if better(n, best, req, caps) {
			best = n
		}
	}
	names := make([]string, len(sample))
	for i, n := range sample {
		names[i] = n.Name
	}
	sort.Strings(names)
	why := fmt.Sprintf("%s: %d MiB free after it of %d, %d+%d cores on %d CPUs; best of %s", best.Name,
		freeAfter(best, req, caps), best.MemoryMB, best.CommittedCores, req.Cores, best.CPUs, strings.Join(names, ", "))
	if len(ok) > len(sample) {
		why += fmt.Sprintf(" (sampled from %d eligible)", len(ok))
	}
	if req.Pin != "" {
		why = "pinned to " + req.Pin
		if req.PinReason != "" {
			why += " (" + req.PinReason + ")"
		}
		why += "; " + fmt.Sprintf("%d MiB free after it", freeAfter(best, req, caps))
	}
	return Decision{Node: best.Name, Reason: why}, nil
}
