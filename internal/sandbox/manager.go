// Package sandbox is the sandbox lifecycle: asynchronous, resumable
// provisioning on Proxmox, power operations, leases and destruction, with every
// change a compare-and-set in the store and an event.
package sandbox

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/conntrack"
	"github.com/agentlab/terraform-provider-agentlab/internal/keylock"
	"github.com/agentlab/terraform-provider-agentlab/internal/metrics"
	"github.com/agentlab/terraform-provider-agentlab/internal/netpolicy"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/placement"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
	"github.com/agentlab/terraform-provider-agentlab/internal/vmid"
	"github.com/agentlab/terraform-provider-agentlab/internal/workspace"
)

// OwnerTag marks every VM agentd creates.
const OwnerTag = "agentlab"

// Options configures a Manager.
type Options struct {
	Node            string
	SnippetsDir     string
	SnippetsStorage string
	SSHPublicKeys   []string
	// SSHJumpHost is the USER@HOST remote CLIs hop through (ssh -J).
	SSHJumpHost         string
	ProvisioningTimeout time.Duration
	ShutdownTimeout     time.Duration
	// IPPoll is how often the guest agent is asked for an address.
	IPPoll time.Duration
	Now    func() time.Time

	// LeaseCountsWhilePaused lets the lease of a hibernated sandbox run on.
	LeaseCountsWhilePaused bool

	// Idle auto-stop.
	IdleStopEnabled bool
	// IdleStopOff, when set, switches idle stop off and is what IdleStatus
	// says (agentd dev: SSH activity to simulated sandboxes cannot be seen).
	IdleStopOff            string
	IdleStopMinutesDefault int
	IdleStopCPUThreshold   float64
	Conntrack              conntrack.Lister

	Metrics *metrics.Metrics
	Log     *slog.Logger
	// FirewallGroup names the Proxmox security group of a profile's
	// sandboxes; nil leaves the VM firewall alone.
	FirewallGroup func(*profile.Profile) string
	// Addresses, when set, is told when a sandbox's binding (address, MAC,
	// bridge ports, mode) goes live or ends (the host's nftables sets);
	// errors are logged, never fatal.
	Addresses AddressSets
	// Subnet and HostAddr are agent_subnet and agent_host_address: agentd
	// assigns every sandbox an address of Subnet (static, through cloud-init,
	// gateway HostAddr). A zero Subnet leaves the guest on DHCP (tests of
	// other packages that build a Manager by hand).
	Subnet   netip.Prefix
	HostAddr netip.Addr
	// GuestURL is where guests fetch their bootstrap ("" leaves it out).
	GuestURL     string
	BootstrapTTL time.Duration
	Limits       Limits
	Expose       ExposeOptions
	// AuditPerCycle is how many unchanged rows a reconcile cycle re-proves
	// (round-robin); 0: only rows whose listing changed.
	AuditPerCycle int
	// PoolCloneConcurrency bounds the warm-pool clones running at once on
	// a node (0: 2).
	PoolCloneConcurrency int
	// Nodes limits agentd to these cluster nodes (empty: every node).
	Nodes []string
	// Placement bounds what agentd puts on each node.
	Placement placement.Caps
}

// AddressSets keeps the host's binding and mode sets (netpolicy.Sets).
type AddressSets interface {
	Add(ctx context.Context, b netpolicy.Binding) error
	Remove(ctx context.Context, b netpolicy.Binding) error
}

// Manager runs sandbox lifecycles.
type Manager struct {
	store    *store.Store
	pve      *pve.Client
	profiles profile.Set
	opts     Options
	now      func() time.Time

	ctx    context.Context // lifecycle: cancelled on shutdown
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// waitsEnd is closed when the agent shuts down: long-polls answer at once
	// instead of holding the server's graceful shutdown.
	waitsEnd     chan struct{}
	waitsEndOnce sync.Once

	mu      sync.Mutex
	locks   keylock.Set        // one per sandbox id
	workers map[string]*worker // running provisioning/start goroutines by sandbox id
	alloc   *vmid.Allocator
	ws      *workspace.Manager
	guard   *owner.Guard

	proofMu     sync.Mutex
	proofCursor int            // round-robin position of reconcile's proofs
	lastSig     map[int]string // VMID → listing signature at the last cycle

	addrMu     sync.Mutex
	addrs      map[string]netpolicy.Binding // sandbox id → binding in the sets
	addrFailed map[string]bool              // sandbox id → its last Add failed (ensureBound retries)
	started    time.Time
	idleMu     sync.Mutex
	lastActive map[string]time.Time
	idleErr    string // why idle stop is not acting (conntrack missing, …)

	pool poolState

	// replacing holds the admitted replacements (Replace), by the name the
	// replacement takes; read and written only under the admission lock.
	replacing map[replacementKey]replacement

	cluster      *placement.Cluster
	invMu        sync.Mutex
	invRefresh   sync.Mutex      // held by the one freshInventory reading it
	invAt        time.Time       // when the ledger's inventory was read
	templateNode map[int]string  // template VMID → its node, from that inventory
	shared       map[string]bool // storages every node reads, from that inventory
	// starts bounds the starts running at once per node apart from the
	// clone slots: a start takes no storage lock, so a node's clones need
	// not wait for its starts.
	starts        nodeSlots
	templateNamed map[string][]pve.Resource // template name → the templates of that name

	reportMu sync.Mutex
	reports  map[string]nodeReport // node agents' last reports by node
}

type worker struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// New builds a manager; call Resume to pick up in-flight work and Close to stop.
func New(st *store.Store, pc *pve.Client, guard *owner.Guard, alloc *vmid.Allocator, ws *workspace.Manager, profiles profile.Set, o Options) *Manager {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.IPPoll == 0 {
		o.IPPoll = 250 * time.Millisecond
	}
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Conntrack == nil {
		o.Conntrack = conntrack.Command
	}
	if o.BootstrapTTL == 0 {
		o.BootstrapTTL = 10 * time.Minute
	}
	if o.ProvisioningTimeout == 0 {
		o.ProvisioningTimeout = 10 * time.Minute
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{store: st, pve: pc, profiles: profiles, opts: o, now: o.Now, ctx: ctx, cancel: cancel, waitsEnd: make(chan struct{}),
		workers: map[string]*worker{}, alloc: alloc, ws: ws, guard: guard,
		started: o.Now(), lastActive: map[string]time.Time{}, addrs: map[string]netpolicy.Binding{}, addrFailed: map[string]bool{},
		cluster: placement.NewCluster(o.Placement, uint64(o.Now().UnixNano()))}
	if ws != nil {
		ws.SetNodeCheck(m.nodeDown)
		ws.SetNodes(m.Nodes)
	}
	return m
}

// Instance is this installation's agent instance id.
func (m *Manager) Instance() string {
	if m.guard == nil {
		return ""
	}
	return m.guard.Instance()
}

// Profiles returns the loaded profiles.
func (m *Manager) Profiles() profile.Set { return m.profiles }

// Store returns the store.
func (m *Manager) Store() *store.Store { return m.store }

// Workspaces returns the workspace manager.
func (m *Manager) Workspaces() *workspace.Manager { return m.ws }

// Proxmox returns the Proxmox client.
func (m *Manager) Proxmox() *pve.Client { return m.pve }

// Close cancels in-flight work and waits for it. Interrupted provisioning stays
// in its persisted step and is resumed by the next Resume.
func (m *Manager) Close() {
	m.cancel()
	m.wg.Wait()
}

func newID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "sbx-" + hex.EncodeToString(b)
}

// canonical is the create request after defaults, as stored for idempotency.
type canonical struct {
	Name       string   `json:"name"`
	Profile    string   `json:"profile"`
	TTLSeconds int64    `json:"ttl_seconds"`
	Keepalive  bool     `json:"keepalive"`
	Workspace  string   `json:"workspace"`
	Tags       []string `json:"tags"`
	// Overrides only: a request without them stores what it stored before.
	Cores    int `json:"cores,omitempty"`
	MemoryMB int `json:"memory_mb,omitempty"`
	// Node pins the sandbox to one cluster node ("": placement decides).
	Node string `json:"node,omitempty"`
}

// canonicalize checks and normalises a create request. jobID is set only for
// the sandbox of that job, which is named after it.
// ProfileNames lists the profiles team may use (every profile for "": a
// global caller acting across teams). Refusals list these, never the names
// of profiles limited to other teams.
func (m *Manager) ProfileNames(team string) []string {
	var out []string
	for _, n := range m.profiles.Names() {
		if team == "" || m.profiles[n].Allows(team) {
			out = append(out, n)
		}
	}
	return out
}

func (m *Manager) canonicalize(req api.CreateSandboxRequest, jobID, team string) (canonical, *profile.Profile, error) {
	var c canonical
	if req.Name != jobID || !validate.IsJobID(jobID) {
		if err := validate.SandboxName("name", req.Name); err != nil {
			return c, nil, api.Invalid(err)
		}
	}
	if req.Profile == "" {
		return c, nil, api.FieldError("profile", "is required (one of: %s)", strings.Join(m.ProfileNames(team), ", "))
	}
	p, ok := m.profiles[req.Profile]
	if !ok {
		return c, nil, m.profileNotFound(req.Profile, team)
	}
	c = canonical{Name: req.Name, Profile: req.Profile, Keepalive: p.Behavior.Keepalive, Workspace: req.Workspace,
		TTLSeconds: int64(p.Behavior.TTLDefault / time.Second), Tags: []string{}}
	if req.TTL != "" {
		d, err := validate.TTL("ttl", req.TTL)
		if err != nil {
			return c, nil, api.Invalid(err)
		}
		c.TTLSeconds = int64(d / time.Second)
	}
	if req.Keepalive != nil {
		c.Keepalive = *req.Keepalive
	}
	seen := map[string]bool{}
	for _, t := range req.Tags {
		if err := validate.Tag("tags", t); err != nil {
			return c, nil, api.Invalid(err)
		}
		if !seen[t] {
			seen[t] = true
			c.Tags = append(c.Tags, t)
		}
	}
	sort.Strings(c.Tags)
	if p.Behavior.RequireWorkspace && c.Workspace == "" {
		return c, nil, api.FieldError("workspace", "profile %s requires a workspace", p.Name)
	}
	if err := checkResources(req.Cores, req.MemoryMB); err != nil {
		return c, nil, err
	}
	// A value equal to the profile's is no override: the same sandbox either way.
	if req.Cores != p.Resources.Cores {
		c.Cores = req.Cores
	}
	if req.MemoryMB != p.Resources.MemoryMB {
		c.MemoryMB = req.MemoryMB
	}
	if req.Node != "" {
		if !m.usesNode(req.Node) {
			return c, nil, api.FieldError("node", "%q is not one of the nodes agentd uses (config nodes: %s)", req.Node, strings.Join(m.opts.Nodes, ", "))
		}
		c.Node = req.Node
	}
	return c, p, nil
}

// ParseTTL accepts a Go duration ("90m", "2h") or "0" for no lease (the rule
// is validate.TTL's; the error reads without a field name).
func ParseTTL(s string) (time.Duration, error) {
	d, err := validate.TTL("ttl", s)
	var ve *validate.Error
	if errors.As(err, &ve) {
		return 0, errors.New(ve.Reason)
	}
	return d, err
}

// Create records a sandbox and starts provisioning it in the background. A
// retry of the same request returns the existing sandbox (created=false); a
// different request for a live name is a conflict.
func (m *Manager) Create(ctx context.Context, req api.CreateSandboxRequest) (sb *store.Sandbox, created bool, err error) {
	return m.create(ctx, req, "", "")
}

// CreateForJob is Create for the sandbox of job jobID, named after the job:
// the one sandbox name with an id prefix, which only agentd can choose.
func (m *Manager) CreateForJob(ctx context.Context, req api.CreateSandboxRequest, jobID string) (sb *store.Sandbox, created bool, err error) {
	return m.create(ctx, req, "", jobID)
}

// CreateFor is Create on behalf of a session, which may use the workspace it
// reserved.
func (m *Manager) CreateFor(ctx context.Context, req api.CreateSandboxRequest, sessionID string) (sb *store.Sandbox, created bool, err error) {
	return m.create(ctx, req, sessionID, "")
}

func (m *Manager) create(ctx context.Context, req api.CreateSandboxRequest, sessionID, jobID string) (sb *store.Sandbox, created bool, err error) {
	// Everything a create finds (an earlier row of its name, its workspace)
	// and makes belongs to one team: the caller's, or default for a global
	// caller that named none.
	team := auth.Team(ctx)
	ctx = auth.For(ctx, team)
	var c canonical
	if req.Profile != "" {
		err = m.MayUseProfile(ctx, req.Profile, team)
	}
	if err == nil {
		c, _, err = m.canonicalize(req, jobID, team)
	}
	defer m.admit(ctx, c, &err)()
	if err != nil {
		return nil, false, err
	}
	var claims []store.Claim
	var w *store.Workspace
	if c.Workspace != "" {
		if w, err = m.ws.Get(ctx, c.Workspace); err != nil {
			return nil, false, err
		}
		// Within the API's wait: a move holds the workspace for as long as
		// its migration runs, and a create must answer busy, not hang.
		unlockWS, lerr := m.ws.LockAPI(ctx, w)
		if lerr != nil {
			return nil, false, lerr
		}
		defer unlockWS()
		if w, err = m.store.Workspace(ctx, w.ID); err != nil {
			return nil, false, err
		}
		claims = append(claims, store.Claim{WorkspaceID: w.ID, SessionID: sessionID, Key: workspace.AttachKey})
	}
	reqJSON, _ := json.Marshal(c)
	p := m.profiles[c.Profile]
	node := m.opts.Node
	switch {
	case m.multiNode():
		node = "" // the worker's place step chooses (and checks a pin)
	case c.Node != "" && c.Node != m.opts.Node:
		return nil, false, api.FieldError("node", "%q is not a node of this cluster: agentd sees only node %s", c.Node, m.opts.Node)
	}
	sb = &store.Sandbox{Sandbox: api.Sandbox{ID: newID(), Name: c.Name, Team: team, Profile: c.Profile, State: api.StateRequested,
		Node: node, Keepalive: c.Keepalive, TTLSeconds: c.TTLSeconds, Tags: c.Tags, Workspace: c.Workspace,
		Step: stepAllocate, Cores: cmp.Or(c.Cores, p.Resources.Cores), MemoryMB: cmp.Or(c.MemoryMB, p.Resources.MemoryMB)},
		Request: string(reqJSON)}
	msg := fmt.Sprintf("requested with profile %s", c.Profile)
	if w != nil {
		msg += ", workspace " + w.Name
	}
	claimed, err := m.insert(ctx, sb, c, store.Event{Kind: "sandbox.requested", Message: msg}, claims)
	if errors.Is(err, store.ErrWorkspaceBusy) {
		if cerr := m.ws.Busy(ctx, w, "", sessionID); cerr != nil {
			return nil, false, cerr
		}
		return nil, false, api.Errorf(http.StatusConflict, api.CodeAttached, "workspace %s changed concurrently; retry", w.Name)
	}
	if errors.Is(err, store.ErrConflict) {
		existing, lerr := m.store.Sandboxes(ctx, store.Filter{Name: c.Name})
		if lerr != nil || len(existing) == 0 {
			return nil, false, api.Errorf(http.StatusConflict, api.CodeConflict, "sandbox %q already exists", c.Name)
		}
		ex := existing[0]
		if ex.Request == string(reqJSON) {
			return ex, false, nil
		}
		return nil, false, api.Errorf(http.StatusConflict, api.CodeConflict,
			"sandbox %q already exists with different settings (%s); destroy it first or choose another name", c.Name, diff(ex.Request, c))
	}
	if err != nil {
		return nil, false, err
	}
	if claimed {
		// The member's own worker may still be exiting after it saved POOLED.
		m.afterWorker(sb.ID)
		m.KickPool()
		return sb, true, nil
	}
	m.startWorker(sb.ID)
	return sb, true, nil
}

func diff(stored string, c canonical) string {
	var old canonical
	_ = json.Unmarshal([]byte(stored), &old)
	var d []string
	if old.Profile != c.Profile {
		d = append(d, fmt.Sprintf("profile %s, not %s", old.Profile, c.Profile))
	}
	if old.TTLSeconds != c.TTLSeconds {
		d = append(d, fmt.Sprintf("ttl %s, not %s", time.Duration(old.TTLSeconds)*time.Second, time.Duration(c.TTLSeconds)*time.Second))
	}
	if old.Keepalive != c.Keepalive {
		d = append(d, fmt.Sprintf("keepalive %t, not %t", old.Keepalive, c.Keepalive))
	}
	if old.Workspace != c.Workspace {
		d = append(d, fmt.Sprintf("workspace %q, not %q", old.Workspace, c.Workspace))
	}
	if old.Cores != c.Cores || old.MemoryMB != c.MemoryMB {
		d = append(d, fmt.Sprintf("cores/memory_mb overrides %d/%d, not %d/%d (0: the profile's)", old.Cores, old.MemoryMB, c.Cores, c.MemoryMB))
	}
	if strings.Join(old.Tags, ",") != strings.Join(c.Tags, ",") {
		d = append(d, fmt.Sprintf("tags [%s], not [%s]", strings.Join(old.Tags, " "), strings.Join(c.Tags, " ")))
	}
	return strings.Join(d, "; ")
}

// startWorker runs provisioning, a start or a journaled destroy of one
// sandbox in the background. The worker holds the sandbox's lock only while
// it saves, so API calls on the sandbox answer at once.
func (m *Manager) startWorker(id string) {
	ctx, cancel := context.WithCancelCause(m.ctx)
	w := &worker{cancel: cancel, done: make(chan struct{})}
	m.mu.Lock()
	if _, busy := m.workers[id]; busy {
		m.mu.Unlock()
		cancel(nil)
		return
	}
	m.workers[id] = w
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(w.done)
		defer cancel(nil)
		m.run(ctx, id)
		m.mu.Lock()
		delete(m.workers, id)
		m.mu.Unlock()
	}()
}

// cancelWorker asks a running worker to stop, with the reason it will
// report; it does not wait.
func (m *Manager) cancelWorker(id string, cause error) bool {
	m.mu.Lock()
	w := m.workers[id]
	m.mu.Unlock()
	if w == nil {
		return false
	}
	w.cancel(cause)
	return true
}

// afterWorker starts a fresh worker for id once the current one has exited
// (a journaled destroy taking over from cancelled provisioning).
func (m *Manager) afterWorker(id string) {
	m.mu.Lock()
	w := m.workers[id]
	m.mu.Unlock()
	if w == nil {
		m.startWorker(id)
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		select {
		case <-w.done:
		case <-m.ctx.Done():
			return
		}
		m.startWorker(id)
	}()
}

// Wait blocks until no worker runs for id (tests, benchmarks).
func (m *Manager) Wait(id string) {
	m.mu.Lock()
	w := m.workers[id]
	m.mu.Unlock()
	if w != nil {
		<-w.done
	}
}

// Resume restarts every sandbox whose provisioning or start was interrupted
// (agentd stopped or crashed): each step checks Proxmox before acting, so a
// step that already happened is not repeated.
func (m *Manager) Resume(ctx context.Context) (int, error) {
	// The placement ledger first: workers resumed below may place.
	if inv, err := m.pve.Inventory(ctx); err == nil {
		if err := m.refreshCluster(ctx, inv); err != nil {
			return 0, err
		}
	}
	rows, err := m.store.Sandboxes(ctx, store.Filter{States: []api.State{api.StateRequested, api.StateProvisioning,
		api.StateBooting, api.StateReady, api.StateDestroying}})
	if err != nil {
		return 0, err
	}
	// The nft sets outlive agentd, its record of what it put there (addrs)
	// does not: re-learn the bindings of sandboxes whose VM may run (the Add
	// is idempotent), so one that RUNs across a restart is still unbound
	// when it stops or is destroyed. Left behind, (tap<vmid>i0, MAC,
	// address) would let the next VM given that VMID send as the old address.
	// A claim in progress (PROVISIONING, step claim) runs its member's VM.
	live, err := m.store.Sandboxes(ctx, store.Filter{States: []api.State{api.StateBooting, api.StateReady, api.StateRunning, api.StatePooled, api.StateProvisioning}})
	if err != nil {
		return 0, err
	}
	for _, sb := range live {
		if vmMayRun(sb) {
			m.syncAddress(sb)
		}
	}
	// Exposed ports: republished for live sandboxes, withdrawn for others.
	if ports, err := m.store.Ports(ctx, ""); err == nil {
		seen := map[string]bool{}
		for _, p := range ports {
			if !seen[p.SandboxID] {
				seen[p.SandboxID] = true
				if sb, err := m.store.Sandbox(ctx, p.SandboxID); err == nil {
					m.syncPorts(sb)
				}
			}
		}
	}
	for _, sb := range rows {
		msg := fmt.Sprintf("agentd restarted: resuming at step %s", sb.Step)
		if sb.State == api.StateDestroying {
			msg = "agentd restarted: finishing the destroy"
		}
		_ = m.store.AddEvent(ctx, sb, store.Event{Kind: "sandbox.resumed", Message: msg})
		m.startWorker(sb.ID)
	}
	return len(rows), nil
}

// Get returns a sandbox by id, VMID or name (store.Lookup's rule).
func (m *Manager) Get(ctx context.Context, ref string) (*store.Sandbox, error) {
	sb, err := m.store.Lookup(ctx, ref)
	if err == nil && IsPoolMember(sb) && auth.Scope(ctx) != "" {
		// An unclaimed warm-pool member is no team's: a team that could
		// reach it by id (rows from before teams say default) could exec
		// into the VM another team's create is handed next.
		err = store.ErrNotFound
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, api.Errorf(http.StatusNotFound, api.CodeSandboxNotFound,
			"sandbox %q not found (a name or VMID reaches live sandboxes only; a destroyed one answers to its id, see list --all)", ref)
	}
	return sb, err
}

// List lists sandboxes; warm-pool members are not sandboxes of anyone's
// yet (GET /v1/pools counts them).
func (m *Manager) List(ctx context.Context, f store.Filter) ([]*store.Sandbox, error) {
	rows, err := m.store.Sandboxes(ctx, f)
	if err != nil {
		return nil, err
	}
	out := rows[:0]
	for _, sb := range rows {
		if !IsPoolMember(sb) {
			out = append(out, sb)
		}
	}
	return out, nil
}

func invalidState(sb *store.Sandbox, op string, allowed ...api.State) error {
	names := make([]string, len(allowed))
	for i, s := range allowed {
		names[i] = string(s)
	}
	return api.Errorf(http.StatusConflict, api.CodeInvalidState, "cannot %s sandbox %s in state %s (allowed in: %s)",
		op, sb.Name, sb.State, strings.Join(names, ", "))
}
