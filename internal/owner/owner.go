// Package owner is the one ownership proof agentd checks before it writes to
// a VM. agentd's Proxmox token can change any VM on the cluster, so every write
// goes through a VM handle that this package hands out only after the VM's
// current config proved it is the object the database row describes: the
// object's tag, the object's id and this installation's instance id in the
// description, at the VMID the row recorded. Writes to a raw VMID are not
// offered, so a new operation cannot forget the check.
package owner

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
)

// Kind is what agentd made the VM for.
type Kind string

// Object kinds, each with its tag and description key.
const (
	Sandbox Kind = "sandbox"
	Holder  Kind = "workspace"
)

// Tag is the Proxmox tag of VMs of kind k.
func (k Kind) Tag() string {
	if k == Holder {
		return "agentlab-workspace"
	}
	return "agentlab"
}

// idKey is the description line that names the object id.
func (k Kind) idKey() string { return "agentlab-" + string(k) + "-id" }

func (k Kind) nameKey() string { return "agentlab-" + string(k) + "-name" }

// instanceKey names the installation that created the VM.
const instanceKey = "agentlab-instance"

// poolKey marks a warm-pool member with its profile. A claim rewrites the
// description without it, so a VM that still carries it was never handed
// to a user.
const poolKey = "agentlab-pool"

// PoolTag is the extra Proxmox tag of a warm-pool member (operators filter
// on it; the proof reads the description).
const PoolTag = "agentlab-pool"

// ErrNotOwned: the VM at the VMID is not provably the object's.
var ErrNotOwned = errors.New("not owned")

// Proof is what a VM must show to be acted on as one of our objects.
type Proof struct {
	Kind Kind
	ID   string // sbx-… or ws-…
	Name string // written into the description for operators; not checked
	// Team owns the object; like Name it is for operators (the Proxmox UI
	// tells teams apart by it), not checked. "" and "default" write nothing,
	// so VMs made before teams keep their names and descriptions.
	Team     string
	Instance string
	VMID     int
	// Node is the cluster node the VM lives on ("" is the agent's own node).
	Node string
	// Pool is the profile of a warm-pool member ("" for a sandbox handed to
	// a user). A proof with Pool set requires the marker, so a VM planted
	// at a pooled VMID without it is refused.
	Pool string
}

// Description is the VM description that carries the proof. It is written by
// the request that creates the VM (clone or create), so a VM interrupted at
// any later point is still provably ours.
func (p Proof) Description() string {
	head := "Managed by AgentLab agentd; do not edit or remove these lines."
	if p.Kind == Holder {
		head = "AgentLab workspace holder: owns the volume of workspace " + p.Name + ". Never start or delete it by hand."
	}
	d := fmt.Sprintf("%s\n%s: %s\n%s: %s\n%s: %s\n", head, p.Kind.idKey(), p.ID, p.Kind.nameKey(), p.Name, instanceKey, p.Instance)
	if p.shownTeam() != "" {
		d += fmt.Sprintf("%s: %s\n", teamKey, p.Team)
	}
	if p.Pool != "" {
		d += fmt.Sprintf("%s: %s\n", poolKey, p.Pool)
	}
	return d
}

// teamKey names the owning team in the description.
const teamKey = "agentlab-team"

func (p Proof) shownTeam() string {
	if p.Team == "default" {
		return ""
	}
	return p.Team
}

// Marker is what a description says about its VM.
type Marker struct {
	Kind     Kind
	ID       string
	Name     string
	Instance string // "" for VMs written before instance ids existed
	Pool     string // profile of a warm-pool member
}

// Parse reads the proof lines of a description; ok is false when it names no
// object. A description naming two objects is not a proof of either.
func Parse(desc string) (m Marker, ok bool) {
	found := 0
	for _, line := range strings.Split(desc, "\n") {
		k, v, cut := strings.Cut(strings.TrimSpace(line), ":")
		if !cut {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case Sandbox.idKey(), Holder.idKey():
			found++
			m.Kind, m.ID = Kind(strings.TrimSuffix(strings.TrimPrefix(k, "agentlab-"), "-id")), v
		case Sandbox.nameKey(), Holder.nameKey():
			m.Name = v
		case instanceKey:
			m.Instance = v
		case poolKey:
			m.Pool = v
		}
	}
	return m, found == 1 && m.ID != ""
}

// HasTag reports whether a config carries tag.
func HasTag(cfg map[string]any, tag string) bool {
	tags, _ := cfg["tags"].(string)
	for _, t := range strings.FieldsFunc(tags, func(r rune) bool { return r == ';' || r == ',' || r == ' ' }) {
		if t == tag {
			return true
		}
	}
	return false
}

// NotOwnedError says why a VM failed the proof.
type NotOwnedError struct {
	VMID   int
	Reason string
}

func (e *NotOwnedError) Error() string {
	return fmt.Sprintf("VM %d is not provably ours: %s", e.VMID, e.Reason)
}

// Unwrap makes errors.Is(err, ErrNotOwned) hold.
func (e *NotOwnedError) Unwrap() error { return ErrNotOwned }

// Verify checks a config against the proof. withTag is false only for a VM
// agentd is still creating: the clone request cannot set tags, so between
// the clone and the first config write the description alone proves it.
func (p Proof) Verify(cfg map[string]any, withTag bool) error {
	desc, _ := cfg["description"].(string)
	m, ok := Parse(desc)
	fail := func(format string, args ...any) error {
		return &NotOwnedError{VMID: p.VMID, Reason: fmt.Sprintf(format, args...)}
	}
	if lock, busy := placeholder(cfg, ok); busy {
		return &CreatingError{VMID: p.VMID, Lock: lock}
	}
	switch {
	case !ok:
		return fail("its description names no AgentLab object")
	case m.Kind != p.Kind || m.ID != p.ID:
		return fail("its description names %s %s, not %s %s", m.Kind, m.ID, p.Kind, p.ID)
	case m.Instance != "" && m.Instance != p.Instance:
		return fail("it was created by another agentd installation (instance %s, this is %s)", m.Instance, p.Instance)
	case withTag && !HasTag(cfg, p.Kind.Tag()):
		return fail("it lacks the %q tag", p.Kind.Tag())
	case p.Pool != "" && m.Pool != p.Pool:
		return fail("it is not a warm-pool member of profile %s (its description lacks %q)", p.Pool, poolKey+": "+p.Pool)
	}
	return nil
}

// placeholder reports whether cfg is the stand-in config Proxmox writes
// before a clone's or create's real one (clone_vm writes "# qmclone
// temporary file" with lock clone and the real config only after the first
// disk is copied; create_and_lock_config writes lock create): a VM that
// names no object yet but is still being made says nothing about its owner.
func placeholder(cfg map[string]any, marked bool) (string, bool) {
	lock, _ := cfg["lock"].(string)
	return lock, !marked && (lock == "clone" || lock == "create")
}

// Creating reports a config that is still Proxmox's placeholder (names no
// object, lock clone or create) as a *CreatingError; nil otherwise.
func Creating(cfg map[string]any, vmid int) error {
	desc, _ := cfg["description"].(string)
	_, marked := Parse(desc)
	if lock, busy := placeholder(cfg, marked); busy {
		return &CreatingError{VMID: vmid, Lock: lock}
	}
	return nil
}

// CreatingError: the VM's config is still Proxmox's placeholder, so whose
// it is cannot be told yet. It is a lock, never a failed proof: marking a
// row LOST (or retiring it) on it would disown our own clone in progress.
type CreatingError struct {
	VMID int
	Lock string
}

func (e *CreatingError) Error() string {
	return fmt.Sprintf("VM %d is still being created (lock %s): its config does not name its owner yet; retry once the task ends", e.VMID, e.Lock)
}

// Unwrap makes errors.Is(err, pve.ErrLocked) hold.
func (e *CreatingError) Unwrap() error { return pve.ErrLocked }

// placeholderWait bounds how long Prove waits for a placeholder config to
// become the real one (a fork's full clone copies a whole volume).
const placeholderWait = 2 * time.Minute

// Guard hands out proven VM handles.
type Guard struct {
	pve      *pve.Client
	instance string
}

// NewGuard builds a guard for this installation's instance id.
func NewGuard(pc *pve.Client, instance string) *Guard { return &Guard{pve: pc, instance: instance} }

// Instance is this installation's id.
func (g *Guard) Instance() string { return g.instance }

// Proof builds the proof for one of our objects.
func (g *Guard) Proof(kind Kind, id, name string, vmid int) Proof {
	return Proof{Kind: kind, ID: id, Name: name, Instance: g.instance, VMID: vmid}
}

// VM is a VM that proved its ownership when it was handed out.
type VM struct {
	pve   *pve.Client
	proof Proof
	// Config is the config read for the proof.
	Config map[string]any
}

// VMID of the proven VM.
func (v *VM) VMID() int { return v.proof.VMID }

// Prove reads the VM's config and checks it. A VM that does not exist returns
// (nil, nil): callers decide whether gone is success.
func (g *Guard) Prove(ctx context.Context, p Proof, withTag bool) (*VM, error) {
	if p.VMID == 0 {
		return nil, nil
	}
	wctx, cancel := context.WithTimeout(ctx, placeholderWait)
	defer cancel()
	for {
		cfg, err := g.pve.On(p.Node).Config(ctx, p.VMID)
		if errors.Is(err, pve.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		err = p.Verify(cfg, withTag)
		var ce *CreatingError
		if !errors.As(err, &ce) {
			if err != nil {
				return nil, err
			}
			return &VM{pve: g.pve.On(p.Node), proof: p, Config: cfg}, nil
		}
		// The task that writes the real config is running: the answer is
		// whatever that config says, so wait for it rather than guess.
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return nil, fmt.Errorf("prove VM %d: %w: %w", p.VMID, err, ctx.Err())
			}
			return nil, fmt.Errorf("prove VM %d: %w (waited %s)", p.VMID, err, placeholderWait)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Must is Prove for operations that need the VM to exist.
func (g *Guard) Must(ctx context.Context, p Proof, withTag bool) (*VM, error) {
	v, err := g.Prove(ctx, p, withTag)
	if err == nil && v == nil {
		err = &pve.Error{Op: fmt.Sprintf("find VM %d", p.VMID), Msg: fmt.Sprintf("VM %d does not exist", p.VMID), Kind: pve.ErrNotFound}
	}
	return v, err
}

// Clone creates the object's VM from a template on srcNode (or a proven
// source when src is a holder being forked) on the proof's node, writing
// the proof into the clone request.
func (g *Guard) Clone(ctx context.Context, src int, srcNode string, p Proof, o pve.CloneOptions) error {
	o.Name = vmName(p)
	o.Description = p.Description()
	o.Target = p.Node
	return g.pve.On(srcNode).Clone(ctx, src, p.VMID, o)
}

// CreateHolder creates a never-started holder VM owning one disk, proof and
// tag in the create request itself.
func (g *Guard) CreateHolder(ctx context.Context, p Proof, storage string, sizeGB int) error {
	return g.pve.On(p.Node).CreateVM(ctx, p.VMID, map[string]any{"name": vmName(p), "scsi0": fmt.Sprintf("%s:%d", storage, sizeGB),
		"memory": 64, "cores": 1, "tags": p.Kind.Tag(), "description": p.Description(), "onboot": 0})
}

// VMName is the name the VM of p carries ("<team>-<name>" outside the
// default team; holders "ws-…"), for a VM renamed after its creation (a
// claimed warm-pool member).
func (p Proof) VMName() string { return vmName(p) }

func vmName(p Proof) string {
	name := p.Name
	if t := p.shownTeam(); t != "" {
		name = t + "-" + name
	}
	if p.Kind == Holder {
		return "ws-" + name
	}
	return name
}

// Writes on a proven VM. Each forwards to internal/pve with the proven VMID.

// Configure sets config keys.
func (v *VM) Configure(ctx context.Context, opts ...pve.Option) error {
	return v.pve.Configure(ctx, v.proof.VMID, opts...)
}

// ConfigureProven sets config keys only on the config read for the proof:
// the write carries that read's digest, so Proxmox refuses it if anything
// changed the VM in between (a VM replaced at the VMID has another digest).
// It is synchronous (no task). On success Config holds what was written
// and no digest (the file's new digest is not known without a read).
func (v *VM) ConfigureProven(ctx context.Context, opts ...pve.Option) error {
	digest, _ := v.Config["digest"].(string)
	if digest == "" {
		return fmt.Errorf("configure VM %d: its config was read without a digest, so the write cannot be made conditional on it", v.proof.VMID)
	}
	if err := v.pve.ConfigureIfUnchanged(ctx, v.proof.VMID, digest, opts...); err != nil {
		return err
	}
	cfg := make(map[string]any, len(v.Config)+len(opts))
	for k, val := range v.Config {
		cfg[k] = val
	}
	delete(cfg, "digest")
	for _, o := range opts {
		cfg[o.Name] = fmt.Sprint(o.Value)
	}
	v.Config = cfg
	return nil
}

// Resize grows a disk.
func (v *VM) Resize(ctx context.Context, disk, size string) error {
	return v.pve.Resize(ctx, v.proof.VMID, disk, size)
}

// ResizeProven grows a disk only on the config read for the proof (its
// digest), so a VM put at the VMID since that read is refused (ErrModified)
// instead of grown. A handle whose Config has no digest (ConfigureProven
// wrote through it) must be proven again first.
func (v *VM) ResizeProven(ctx context.Context, disk, size string) error {
	digest, _ := v.Config["digest"].(string)
	if digest == "" {
		return fmt.Errorf("resize %s of VM %d: its config was not read since the last write, so the resize cannot be made conditional on it (prove the VM again)", disk, v.proof.VMID)
	}
	return v.pve.ResizeIfUnchanged(ctx, v.proof.VMID, disk, size, digest)
}

// Start starts the VM.
func (v *VM) Start(ctx context.Context) error { return v.pve.Start(ctx, v.proof.VMID) }

// Stop hard-stops the VM.
func (v *VM) Stop(ctx context.Context) error { return v.pve.Stop(ctx, v.proof.VMID) }

// Shutdown shuts the guest down, hard stop after timeout.
func (v *VM) Shutdown(ctx context.Context, timeout time.Duration) error {
	return v.pve.Shutdown(ctx, v.proof.VMID, timeout)
}

// Destroy destroys the VM (volumes it does not own, such as a workspace
// referenced from a holder, are left alone by Proxmox).
func (v *VM) Destroy(ctx context.Context) error { return v.pve.Destroy(ctx, v.proof.VMID) }

// AttachVolume references volid as key.
func (v *VM) AttachVolume(ctx context.Context, key, volid string) error {
	return v.pve.AttachVolume(ctx, v.proof.VMID, key, volid)
}

// DetachVolume drops the reference key.
func (v *VM) DetachVolume(ctx context.Context, key string) error {
	return v.pve.DetachVolume(ctx, v.proof.VMID, key)
}

// Firewall enables the VM firewall with the security group, bound to addr
// (ipfilter, macfilter) when addr is valid.
func (v *VM) Firewall(ctx context.Context, group string, addr netip.Addr) error {
	return v.pve.VMFirewall(ctx, v.proof.VMID, group, addr)
}

// CreateSnapshot snapshots the VM's disks.
func (v *VM) CreateSnapshot(ctx context.Context, name, description string) error {
	return v.pve.CreateSnapshot(ctx, v.proof.VMID, name, description)
}

// SnapshotVM snapshots the VM's disks and, with vmstate, its RAM.
func (v *VM) SnapshotVM(ctx context.Context, name, description string, vmstate bool) error {
	return v.pve.CreateVMSnapshot(ctx, v.proof.VMID, name, description, vmstate)
}

// Rollback rolls the VM's disks back to a snapshot.
func (v *VM) Rollback(ctx context.Context, name string) error {
	return v.pve.Rollback(ctx, v.proof.VMID, name)
}

// DeleteSnapshot removes a snapshot.
func (v *VM) DeleteSnapshot(ctx context.Context, name string) error {
	return v.pve.DeleteSnapshot(ctx, v.proof.VMID, name)
}

// CloneTo copies this (proven) VM into a new object's VM.
func (v *VM) CloneTo(ctx context.Context, g *Guard, p Proof, o pve.CloneOptions) error {
	return g.Clone(ctx, v.proof.VMID, v.proof.Node, p, o)
}

// Exec starts argv in the guest through the QEMU guest agent: a write, since
// it runs code in the VM.
func (v *VM) Exec(ctx context.Context, argv []string, stdin string) (int, error) {
	return v.pve.AgentExec(ctx, v.proof.VMID, argv, stdin)
}

// ExecStatus reads a process Exec started.
func (v *VM) ExecStatus(ctx context.Context, pid int) (*pve.ExecStatus, error) {
	return v.pve.AgentExecStatus(ctx, v.proof.VMID, pid)
}

// WriteFile writes content to file in the guest through its agent.
func (v *VM) WriteFile(ctx context.Context, file string, content []byte) error {
	return v.pve.AgentFileWrite(ctx, v.proof.VMID, file, content)
}

// ReadFile reads a file in the guest through the QEMU guest agent (at most
// max bytes; the bool reports a cut).
func (v *VM) ReadFile(ctx context.Context, file string, max int) ([]byte, bool, error) {
	return v.pve.AgentFileRead(ctx, v.proof.VMID, file, max)
}

// Migrate moves the (stopped) VM and its local volumes to node target,
// onto targetStorage there ("" keeps each volume's storage id).
func (v *VM) Migrate(ctx context.Context, target, targetStorage string) error {
	return v.pve.Migrate(ctx, v.proof.VMID, target, targetStorage)
}

// Hibernate suspends the VM to disk, its vmstate on statestorage.
func (v *VM) Hibernate(ctx context.Context, statestorage string) error {
	return v.pve.Hibernate(ctx, v.proof.VMID, statestorage)
}
