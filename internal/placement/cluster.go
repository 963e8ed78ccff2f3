package placement

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
)

// Capacity is one node as the cluster inventory (/cluster/resources) shows
// it, with what VMs agentd does not track commit on it.
type Capacity struct {
	Name         string
	Online       bool
	MemoryMB     int64
	CPUs         int
	ForeignMB    int64 // running VMs that are not agentd's sandboxes
	ForeignCores int
}

// Cluster is the placement ledger: node capacity from the last inventory,
// agentd's own sandboxes per node (tracked as they are placed and
// destroyed, so two concurrent decisions always see each other), and the
// clones and starts in flight. Safe for concurrent use.
type Cluster struct {
	mu       sync.Mutex
	caps     Caps
	rnd      *rand.Rand
	cap      map[string]Capacity
	order    []string // node names, sorted
	drained  map[string]bool
	ours     map[string]placed // sandbox id → its node and size
	perNode  map[string]*usage
	inFlight map[string]int
	// waiters are the sandboxes waiting for a clone slot, oldest
	// first; a slot given back wakes the first one it suits (wakeOne).
	waiters []*Waiter
}

// Waiter is a sandbox queued for a clone slot (Place or Claim
// answered ErrBusy). C is closed when a slot it may use is given back.
type Waiter struct {
	C     <-chan struct{}
	c     chan struct{}
	req   Request
	woken string // the node whose slot woke it
}

type placed struct {
	node     string
	memoryMB int64
	cores    int
	flying   bool
}

type usage struct {
	memoryMB  int64
	cores     int
	sandboxes int
}

// NewCluster makes an empty ledger; seed fixes the sampling (tests,
// benchmarks).
func NewCluster(caps Caps, seed uint64) *Cluster {
	return &Cluster{caps: caps.Defaults(), rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		cap: map[string]Capacity{}, drained: map[string]bool{}, ours: map[string]placed{},
		perNode: map[string]*usage{}, inFlight: map[string]int{}}
}

// queue adds a waiter for req; called with c.mu held by the Place or
// Claim that found no free slot, so no slot freed in between is missed.
func (c *Cluster) queue(req Request) *Waiter {
	ch := make(chan struct{})
	w := &Waiter{C: ch, c: ch, req: req}
	c.waiters = append(c.waiters, w)
	return w
}

// wakeOne wakes the oldest waiter that node's freed slot suits. Waking one
// rather than all keeps a burst of a thousand waiting creates from all
// retrying for every slot given back (each retry a full placement).
func (c *Cluster) wakeOne(node string) {
	for i, w := range c.waiters {
		if w.req.Pin != "" && w.req.Pin != node {
			continue
		}
		if w.req.Eligible != nil {
			if ok, _ := w.req.Eligible(node); !ok {
				continue
			}
		}
		c.waiters = append(c.waiters[:i], c.waiters[i+1:]...)
		w.woken = node
		close(w.c)
		return
	}
}

// Leave takes w out of the queue (it stopped waiting: woken, timed out or
// cancelled). A waiter woken for a slot it will not use now passes the
// wake on, so the slot does not stay idle.
func (c *Cluster) Leave(w *Waiter, retrying bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, x := range c.waiters {
		if x == w {
			c.waiters = append(c.waiters[:i], c.waiters[i+1:]...)
			return
		}
	}
	if w.woken != "" && !retrying {
		c.wakeOne(w.woken)
	}
}

// Caps are the ledger's limits (with defaults filled in).
func (c *Cluster) Caps() Caps { return c.caps }

// SetInventory replaces the nodes' capacity (a fresh /cluster/resources).
func (c *Cluster) SetInventory(nodes []Capacity) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cap = make(map[string]Capacity, len(nodes))
	c.order = c.order[:0]
	for _, n := range nodes {
		c.cap[n.Name] = n
		c.order = append(c.order, n.Name)
	}
	sort.Strings(c.order)
}

// SetDrained marks nodes in maintenance (no new sandboxes).
func (c *Cluster) SetDrained(node string, drained bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if drained {
		c.drained[node] = true
	} else {
		delete(c.drained, node)
	}
}

// Track records a sandbox already on node (startup, reconcile); it
// replaces what was recorded for id.
func (c *Cluster) Track(id, node string, memoryMB int64, cores int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forget(id)
	c.add(id, placed{node: node, memoryMB: memoryMB, cores: cores})
}

// Tracked is one sandbox of agentd's as the database has it.
type Tracked struct {
	Node     string
	MemoryMB int64
	Cores    int
}

// Sync replaces agentd's sandboxes with live (by id): those gone are
// dropped, the clone slot of those still in flight is kept. A
// sandbox in flight but not in live was placed a moment before its row
// recorded the node: it stays.
func (c *Cluster) Sync(live map[string]Tracked) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, p := range c.ours {
		if _, ok := live[id]; !ok && !p.flying {
			c.forget(id)
		}
	}
	for id, t := range live {
		flying := c.ours[id].flying && c.ours[id].node == t.Node
		c.forget(id)
		c.add(id, placed{node: t.Node, memoryMB: t.MemoryMB, cores: t.Cores, flying: flying})
	}
}

// Forget drops a sandbox (destroyed, or its VM moved out of agentd's view).
func (c *Cluster) Forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.ours[id]
	c.forget(id)
	if ok && p.flying {
		c.wakeOne(p.node)
	}
}

func (c *Cluster) add(id string, p placed) {
	c.ours[id] = p
	u := c.perNode[p.node]
	if u == nil {
		u = &usage{}
		c.perNode[p.node] = u
	}
	u.memoryMB += p.memoryMB
	u.cores += p.cores
	u.sandboxes++
	if p.flying {
		c.inFlight[p.node]++
	}
}

func (c *Cluster) forget(id string) {
	p, ok := c.ours[id]
	if !ok {
		return
	}
	delete(c.ours, id)
	u := c.perNode[p.node]
	u.memoryMB -= p.memoryMB
	u.cores -= p.cores
	u.sandboxes--
	if p.flying {
		c.inFlight[p.node]--
	}
}

// Landed ends the sandbox's clone/start: its node has one operation fewer
// in flight; its memory and cores stay committed.
func (c *Cluster) Landed(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.ours[id]; ok && p.flying {
		p.flying = false
		c.ours[id] = p
		c.inFlight[p.node]--
		c.wakeOne(p.node)
	}
}

// Claim takes a clone slot on node for a sandbox whose node is
// decided already (a single-host agentd, a run resumed after a restart,
// a stopped sandbox started again), recording it there as Place does.
// Only the in-flight limit applies: the sandbox is on node whatever the
// other caps say. It answers ErrBusy while node runs its limit; a sandbox
// already holding its slot on node keeps it.
//
// With ErrBusy comes a Waiter, woken when a slot on node is given back;
// the caller retries then (or gives up) and calls Leave either way.
func (c *Cluster) Claim(id, node string, memoryMB int64, cores int) (*Waiter, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.ours[id]; ok && p.flying && p.node == node {
		return nil, nil
	}
	if c.inFlight[node] >= c.caps.MaxInFlight {
		return c.queue(Request{Pin: node}), &Error{Kind: ErrBusy, Reasons: []string{fmt.Sprintf("%s: busy: %d clones running (max %d)", node, c.inFlight[node], c.caps.MaxInFlight)}}
	}
	if p, ok := c.ours[id]; ok && p.node == node && memoryMB == 0 {
		memoryMB, cores = p.memoryMB, p.cores
	}
	c.replace(id, placed{node: node, memoryMB: memoryMB, cores: cores, flying: true})
	return nil, nil
}

// replace records id as p; a slot id held on another node is given back.
func (c *Cluster) replace(id string, p placed) {
	old, ok := c.ours[id]
	c.forget(id)
	c.add(id, p)
	if ok && old.flying && old.node != p.node {
		c.wakeOne(old.node)
	}
}

// Nodes is the ledger's view of every node now.
func (c *Cluster) Nodes() []Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.view()
}

func (c *Cluster) view() []Node {
	out := make([]Node, 0, len(c.order))
	for _, name := range c.order {
		k := c.cap[name]
		n := Node{Name: name, Online: k.Online, Drained: c.drained[name], MemoryMB: k.MemoryMB, CPUs: k.CPUs,
			CommittedMB: k.ForeignMB, CommittedCores: k.ForeignCores, InFlight: c.inFlight[name]}
		if u := c.perNode[name]; u != nil {
			n.CommittedMB += u.memoryMB
			n.CommittedCores += u.cores
			n.Sandboxes = u.sandboxes
		}
		out = append(out, n)
	}
	return out
}

// Place chooses a node for sandbox id and records it there, in flight,
// in one step: the next decision already counts it. With ErrBusy comes a
// Waiter, woken when a slot that suits req is given back; the caller
// retries then and calls Leave either way.
func (c *Cluster) Place(id string, req Request) (Decision, *Waiter, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := Choose(c.view(), req, c.caps, c.rnd)
	if errors.Is(err, ErrBusy) {
		return d, c.queue(req), err
	}
	if err != nil {
		return d, nil, err
	}
	c.replace(id, placed{node: d.Node, memoryMB: req.MemoryMB, cores: req.Cores, flying: true})
	return d, nil, nil
}
