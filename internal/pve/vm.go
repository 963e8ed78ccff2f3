package pve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"
)

// Version returns the Proxmox version string (e.g. 9.1.2).
func (c *Client) Version(ctx context.Context) (string, error) {
	v, err := c.api.Version(ctx)
	if err != nil {
		return "", wrap("get version", err)
	}
	return v.Version, nil
}

// NextID asks the cluster for a free VMID. It is only a hint: callers must retry
// a clone that fails with ErrExists.
// It is one request (go-proxmox's Cluster() would first read /cluster/status).
func (c *Client) NextID(ctx context.Context) (int, error) {
	var s string
	if err := c.api.Get(ctx, "/cluster/nextid", &s); err != nil {
		return 0, wrap("get next VMID", err)
	}
	id, err := strconv.Atoi(s)
	if err != nil {
		return 0, &Error{Op: "get next VMID", Msg: fmt.Sprintf("unexpected answer %q", s)}
	}
	return id, nil
}

// CloneOptions describes a clone. Full=false on a template makes a linked clone.
type CloneOptions struct {
	Name        string
	Description string
	Full        bool
	Snapshot    string // clone from this snapshot of the source
	Storage     string // full clones only
	// Target is the node the clone is made on ("": the source's node). A
	// linked clone can only go to another node from shared storage.
	Target string
}

// Clone clones src into newid and waits for the task. Linked clones from a
// snapshot need an explicit full=0, which go-proxmox cannot send, so the request
// body is built here.
func (c *Client) Clone(ctx context.Context, src, newid int, o CloneOptions) error {
	op := fmt.Sprintf("clone VM %d to %d", src, newid)
	body := map[string]any{"newid": newid}
	if o.Name != "" {
		body["name"] = o.Name
	}
	if o.Description != "" {
		body["description"] = o.Description
	}
	if o.Snapshot != "" {
		body["snapname"] = o.Snapshot
	}
	if o.Storage != "" {
		body["storage"] = o.Storage
	}
	if o.Target != "" && o.Target != c.node {
		body["target"] = o.Target
	}
	if o.Full {
		body["full"] = 1
	} else {
		body["full"] = 0
	}
	return c.postTask(ctx, op, c.vmPath(src, "/clone"), body)
}

// Option is one config key and value.
type Option = proxmox.VirtualMachineOption

// Configure sets config keys (POST, asynchronous) and waits for the task.
func (c *Client) Configure(ctx context.Context, vmid int, opts ...Option) error {
	op := fmt.Sprintf("configure VM %d", vmid)
	return c.run(ctx, op, func() (*proxmox.Task, error) { return c.vm(vmid).Config(ctx, opts...) })
}

// ConfigureIfUnchanged sets config keys with the synchronous PUT (PVE's
// update_vm: the same options as the POST, written before it answers, so no
// task to poll) and only if the config still has digest, the one read with
// it: update_vm_api refuses the write when the file changed since, so the
// write lands on exactly the config the caller proved. An empty digest makes
// the write unconditional. PUT is meant for changes without storage
// allocation or hotplug; callers pass options that reference, never allocate.
func (c *Client) ConfigureIfUnchanged(ctx context.Context, vmid int, digest string, opts ...Option) error {
	body := make(map[string]any, len(opts)+1)
	for _, o := range opts {
		body[o.Name] = o.Value
	}
	if digest != "" {
		body["digest"] = digest
	}
	if err := c.api.Put(ctx, c.vmPath(vmid, "/config"), body, nil); err != nil {
		return wrap(fmt.Sprintf("configure VM %d", vmid), err)
	}
	return nil
}

// Config reads a VM's current config.
func (c *Client) Config(ctx context.Context, vmid int) (map[string]any, error) {
	var cfg map[string]any
	if err := c.api.Get(ctx, c.vmPath(vmid, "/config"), &cfg); err != nil {
		return nil, wrap(fmt.Sprintf("get config of VM %d", vmid), err)
	}
	return cfg, nil
}

// Resize grows a disk to size ("20G") or by "+10G". PVE ≤ 7 answers null.
func (c *Client) Resize(ctx context.Context, vmid int, disk, size string) error {
	op := fmt.Sprintf("resize %s of VM %d to %s", disk, vmid, size)
	return c.run(ctx, op, func() (*proxmox.Task, error) { return c.vm(vmid).ResizeDisk(ctx, disk, size) })
}

// ResizeIfUnchanged grows a disk only if the VM's config still has digest,
// the one the caller read: resize_vm checks it under the config lock inside
// its task (PVE 8), so the resize lands on exactly the VM the caller proved.
// go-proxmox's ResizeDisk has no digest, hence the raw PUT.
func (c *Client) ResizeIfUnchanged(ctx context.Context, vmid int, disk, size, digest string) error {
	op := fmt.Sprintf("resize %s of VM %d to %s", disk, vmid, size)
	body := map[string]any{"disk": disk, "size": size}
	if digest != "" {
		body["digest"] = digest
	}
	var upid proxmox.UPID
	if err := c.api.Put(ctx, c.vmPath(vmid, "/resize"), body, &upid); err != nil {
		return wrap(op, err)
	}
	if upid == "" {
		return nil // a PVE before 8.0 resizes synchronously
	}
	return c.wait(ctx, op, proxmox.NewTask(upid, c.api))
}

// Start starts a VM and waits until QEMU runs (not until the guest booted).
func (c *Client) Start(ctx context.Context, vmid int) error {
	op := fmt.Sprintf("start VM %d", vmid)
	return c.run(ctx, op, func() (*proxmox.Task, error) { return c.vm(vmid).Start(ctx) })
}

// Stop hard-stops a VM; stopping a stopped VM succeeds.
func (c *Client) Stop(ctx context.Context, vmid int) error {
	op := fmt.Sprintf("stop VM %d", vmid)
	return c.run(ctx, op, func() (*proxmox.Task, error) { return c.vm(vmid).Stop(ctx) })
}

// Shutdown asks the guest to power off within timeout, then pulls the plug.
// go-proxmox's Shutdown has no timeout option, so the request is built here.
func (c *Client) Shutdown(ctx context.Context, vmid int, timeout time.Duration) error {
	op := fmt.Sprintf("shut down VM %d", vmid)
	secs := int(timeout.Seconds())
	if secs < 1 {
		secs = 1
	}
	err := c.postTask(ctx, op, c.vmPath(vmid, "/status/shutdown"), map[string]any{"timeout": secs})
	if err == nil || errors.Is(err, ErrNotFound) {
		return err
	}
	if serr := c.Stop(ctx, vmid); serr != nil {
		return fmt.Errorf("%v; then: %w", err, serr)
	}
	return nil
}

// Status is what agentd reads of a VM.
type Status struct {
	VMID     int
	Name     string
	Status   string // running | stopped
	Lock     string
	Tags     []string
	Template bool
	Uptime   uint64
	CPU      float64
	Agent    bool
}

// Status reads status/current in one request.
func (c *Client) Status(ctx context.Context, vmid int) (*Status, error) {
	var v proxmox.VirtualMachine
	if err := c.api.Get(ctx, c.vmPath(vmid, "/status/current"), &v); err != nil {
		return nil, wrap(fmt.Sprintf("get status of VM %d", vmid), err)
	}
	return &Status{VMID: int(v.VMID), Name: v.Name, Status: v.Status, Lock: v.Lock, Tags: splitTags(v.Tags),
		Template: bool(v.Template), Uptime: v.Uptime, CPU: v.CPU, Agent: bool(v.Agent)}, nil
}

func splitTags(s string) []string {
	if s == "" {
		return nil
	}
	return strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == ',' || r == ' ' })
}

// Resource is one VM in the cluster inventory.
type Resource struct {
	VMID     int
	Node     string
	Name     string
	Status   string
	Template bool
	Tags     []string
	CPU      float64
	MaxCPU   uint64
	MaxMem   uint64 // bytes, as configured
	Uptime   uint64
}

// NodeResource is one node in the cluster inventory.
type NodeResource struct {
	Node   string
	Online bool   // status "online"
	MaxMem uint64 // bytes
	Mem    uint64
	MaxCPU uint64
	CPU    float64
}

// Inventory is the cluster as one /cluster/resources answer shows it.
type Inventory struct {
	VMs   []Resource
	Nodes []NodeResource
	// Shared names the storages every node reads: flagged shared (the
	// storage's own flag, listed once per node with the same value) and
	// listed for every node.
	Shared map[string]bool
}

// Inventory lists every VM and node of the cluster in exactly one
// request, however many there are (reconcile, idle stop and placement rely
// on that).
func (c *Client) Inventory(ctx context.Context) (*Inventory, error) {
	var rs proxmox.ClusterResources
	if err := c.api.Get(ctx, "/cluster/resources", &rs); err != nil {
		return nil, wrap("list cluster resources", err)
	}
	inv := &Inventory{VMs: make([]Resource, 0, len(rs)), Shared: map[string]bool{}}
	sharedOn := map[string]int{} // storage → nodes listing it as shared
	for _, r := range rs {
		switch r.Type {
		case "qemu":
			inv.VMs = append(inv.VMs, Resource{VMID: int(r.VMID), Node: r.Node, Name: r.Name, Status: r.Status,
				Template: r.Template == 1, Tags: splitTags(r.Tags), CPU: r.CPU, MaxCPU: r.MaxCPU, MaxMem: r.MaxMem, Uptime: r.Uptime})
		case "node":
			inv.Nodes = append(inv.Nodes, NodeResource{Node: r.Node, Online: r.Status == "online", MaxMem: r.MaxMem, Mem: r.Mem,
				MaxCPU: r.MaxCPU, CPU: r.CPU})
		case "storage":
			if r.Shared == 1 {
				sharedOn[r.Storage]++
			}
		}
	}
	// PVE::API2::Cluster's resources lists a storage once for each node of
	// the cluster (offline ones too) that PVE::Storage::storage_check_enabled
	// allows (storage.cfg's "nodes"), so a shared storage limited to some
	// nodes is not read by every node: a workspace there still pins its
	// sandbox.
	for sid, n := range sharedOn {
		if n == len(inv.Nodes) {
			inv.Shared[sid] = true
		}
	}
	sort.Slice(inv.VMs, func(i, j int) bool { return inv.VMs[i].VMID < inv.VMs[j].VMID })
	sort.Slice(inv.Nodes, func(i, j int) bool { return inv.Nodes[i].Node < inv.Nodes[j].Node })
	return inv, nil
}

// Resources lists every VM of the cluster (Inventory's VMs).
func (c *Client) Resources(ctx context.Context) ([]Resource, error) {
	inv, err := c.Inventory(ctx)
	if err != nil {
		return nil, err
	}
	return inv.VMs, nil
}

// AgentPing checks that the guest agent answers.
func (c *Client) AgentPing(ctx context.Context, vmid int) error {
	return wrap(fmt.Sprintf("ping guest agent of VM %d", vmid), c.vm(vmid).AgentPing(ctx))
}

// GuestIPv4 returns the first non-loopback, non-link-local IPv4 address on the NIC
// whose MAC matches mac (any NIC when mac is empty), or "" when there is none yet.
func (c *Client) GuestIPv4(ctx context.Context, vmid int, mac string) (string, error) {
	ifaces, err := c.vm(vmid).AgentGetNetworkIFaces(ctx)
	if err != nil {
		return "", wrap(fmt.Sprintf("get guest interfaces of VM %d", vmid), err)
	}
	for _, ifc := range ifaces {
		if mac != "" && !strings.EqualFold(ifc.HardwareAddress, mac) {
			continue
		}
		for _, a := range ifc.IPAddresses {
			ip := net.ParseIP(a.IPAddress)
			if a.IPAddressType == "ipv4" && ip != nil && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
				return a.IPAddress, nil
			}
		}
	}
	return "", nil
}

// WaitGuestIP polls the guest agent until the VM reports an IPv4 address. Agent
// not (yet) running is expected while the guest boots; other errors end the wait.
func (c *Client) WaitGuestIP(ctx context.Context, vmid int, mac string, every time.Duration) (string, error) {
	for {
		ip, err := c.GuestIPv4(ctx, vmid, mac)
		if err == nil && ip != "" {
			return ip, nil
		}
		if err != nil && !errors.Is(err, ErrAgentNotRunning) && !errors.Is(err, ErrAgentTimeout) {
			return "", err
		}
		select {
		case <-ctx.Done():
			return "", &Error{Op: fmt.Sprintf("wait for IP of VM %d", vmid), Msg: ctx.Err().Error(), Kind: ErrTimeout}
		case <-time.After(every):
		}
	}
}

// Destroy removes a VM with purge. Volumes owned by other VMIDs (workspace
// holders' disks attached by reference) are not freed by Proxmox.
func (c *Client) Destroy(ctx context.Context, vmid int) error {
	op := fmt.Sprintf("destroy VM %d", vmid)
	return c.deleteTask(ctx, op, c.vmPath(vmid, ""), map[string]any{"purge": 1})
}

// CreateVM creates a VM from config keys (disks as "storage:GB") and waits.
func (c *Client) CreateVM(ctx context.Context, vmid int, opts map[string]any) error {
	body := map[string]any{"vmid": vmid}
	for k, v := range opts {
		body[k] = v
	}
	return c.postTask(ctx, fmt.Sprintf("create VM %d", vmid), fmt.Sprintf("/nodes/%s/qemu", c.node), body)
}

// Volume is a disk image on a storage.
type Volume struct {
	Volid  string `json:"volid"`
	VMID   int    `json:"vmid"`
	Size   int64  `json:"size"`
	Format string `json:"format"`
	Parent string `json:"parent,omitempty"`
}

// Volumes lists the disk images owned by vmid on a storage (go-proxmox's
// GetContent has no filters, so the query is built here).
func (c *Client) Volumes(ctx context.Context, storage string, vmid int) ([]Volume, error) {
	var vols []Volume
	path := fmt.Sprintf("/nodes/%s/storage/%s/content?content=images&vmid=%d", c.node, storage, vmid)
	if err := c.api.Get(ctx, path, &vols); err != nil {
		return nil, wrap(fmt.Sprintf("list volumes of VM %d on %s", vmid, storage), err)
	}
	return vols, nil
}

// DiskVolume returns the volid referenced by a drive key in a config, or "".
func DiskVolume(cfg map[string]any, key string) string {
	s, _ := cfg[key].(string)
	return strings.SplitN(s, ",", 2)[0]
}

// HolderVolume creates a never-started holder VM that owns one disk of sizeGB on
// storage and returns that disk's volid. The holder is what keeps a workspace
// volume alive whatever happens to the sandboxes that reference it.
func (c *Client) HolderVolume(ctx context.Context, vmid int, name, storage string, sizeGB int, tags []string, description string) (string, error) {
	opts := map[string]any{"name": name, "scsi0": fmt.Sprintf("%s:%d", storage, sizeGB), "memory": 64,
		"cores": 1, "tags": strings.Join(tags, ";"), "description": description, "onboot": 0}
	if err := c.CreateVM(ctx, vmid, opts); err != nil {
		return "", err
	}
	cfg, err := c.Config(ctx, vmid)
	if err != nil {
		return "", err
	}
	return DiskVolume(cfg, "scsi0"), nil
}

// AttachVolume references volid as key (e.g. scsi1) on vmid.
func (c *Client) AttachVolume(ctx context.Context, vmid int, key, volid string) error {
	return c.Configure(ctx, vmid, Option{Name: key, Value: volid})
}

// DetachVolume removes key from vmid. For a volume owned by another VM (a holder)
// Proxmox only drops the reference; it neither frees it nor leaves an unusedN.
func (c *Client) DetachVolume(ctx context.Context, vmid int, key string) error {
	return c.Configure(ctx, vmid, Option{Name: "delete", Value: key})
}

// Snapshot is one VM snapshot.
type Snapshot struct {
	Name        string
	Description string
	Time        time.Time
	Parent      string
	// VMState: the snapshot holds the RAM too (a rollback resumes the VM).
	VMState bool
}

// CreateSnapshot snapshots every disk of vmid. The description needs a raw request.
func (c *Client) CreateSnapshot(ctx context.Context, vmid int, name, description string) error {
	return c.CreateVMSnapshot(ctx, vmid, name, description, false)
}

// CreateVMSnapshot is CreateSnapshot that, with vmstate, also saves the RAM
// of a running VM (PVE ignores vmstate for a stopped one).
func (c *Client) CreateVMSnapshot(ctx context.Context, vmid int, name, description string, vmstate bool) error {
	body := map[string]any{"snapname": name}
	if description != "" {
		body["description"] = description
	}
	if vmstate {
		body["vmstate"] = 1
	}
	return c.postTask(ctx, fmt.Sprintf("snapshot VM %d as %s", vmid, name), c.vmPath(vmid, "/snapshot"), body)
}

// Snapshots lists snapshots oldest first, without the "current" pseudo-entry.
func (c *Client) Snapshots(ctx context.Context, vmid int) ([]Snapshot, error) {
	snaps, err := c.vm(vmid).Snapshots(ctx)
	if err != nil {
		return nil, wrap(fmt.Sprintf("list snapshots of VM %d", vmid), err)
	}
	var out []Snapshot
	for _, s := range snaps {
		if s.Name == "current" {
			continue
		}
		out = append(out, Snapshot{Name: s.Name, Description: s.Description, Time: time.Unix(int64(s.Snaptime), 0), Parent: s.Parent, VMState: s.Vmstate == 1})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, nil
}

// SnapshotConfig is the VM config a snapshot recorded: the disks a rollback
// to it restores and plugs in again.
func (c *Client) SnapshotConfig(ctx context.Context, vmid int, name string) (map[string]any, error) {
	var cfg map[string]any
	if err := c.api.Get(ctx, c.vmPath(vmid, "/snapshot/"+name+"/config"), &cfg); err != nil {
		return nil, wrap(fmt.Sprintf("get config of snapshot %s of VM %d", name, vmid), err)
	}
	return cfg, nil
}

// Rollback restores vmid to a snapshot (destructive for the disks' current data).
func (c *Client) Rollback(ctx context.Context, vmid int, name string) error {
	op := fmt.Sprintf("roll back VM %d to %s", vmid, name)
	return c.postTask(ctx, op, c.vmPath(vmid, "/snapshot/"+name+"/rollback"), nil)
}

// DeleteSnapshot removes a snapshot.
func (c *Client) DeleteSnapshot(ctx context.Context, vmid int, name string) error {
	op := fmt.Sprintf("delete snapshot %s of VM %d", name, vmid)
	return c.deleteTask(ctx, op, c.vmPath(vmid, "/snapshot/"+name), nil)
}

// ConvertToTemplate turns a VM into a template (used to build fixtures).
func (c *Client) ConvertToTemplate(ctx context.Context, vmid int) error {
	op := fmt.Sprintf("convert VM %d to template", vmid)
	return c.run(ctx, op, func() (*proxmox.Task, error) { return c.vm(vmid).ConvertToTemplate(ctx) })
}

// IDFree reports whether vmid is unused in the cluster (GET /cluster/nextid?vmid=N
// answers the id when free and "VM N already exists" when not).
func (c *Client) IDFree(ctx context.Context, vmid int) (bool, error) {
	var v any
	err := c.api.Get(ctx, fmt.Sprintf("/cluster/nextid?vmid=%d", vmid), &v)
	if err == nil {
		return true, nil
	}
	err = wrap(fmt.Sprintf("check VMID %d", vmid), err)
	if errors.Is(err, ErrExists) {
		return false, nil
	}
	return false, err
}

// AgentFileWrite writes content to file in the guest through the QEMU guest
// agent (agent/file-write; PVE base64-encodes it for the agent). The bytes
// travel over the VM's virtio-serial channel and never touch host storage.
func (c *Client) AgentFileWrite(ctx context.Context, vmid int, file string, content []byte) error {
	err := c.api.Post(ctx, c.vmPath(vmid, "/agent/file-write"), map[string]any{"file": file, "content": string(content)}, nil)
	return wrap(fmt.Sprintf("write %s in the guest of VM %d", file, vmid), err)
}

// AgentFileRead reads file in the guest through the QEMU guest agent
// (agent/file-read, at most max bytes). A missing file is ErrNotFound; a
// longer file is cut, which the second result reports.
func (c *Client) AgentFileRead(ctx context.Context, vmid int, file string, max int) ([]byte, bool, error) {
	var out struct {
		Content   string `json:"content"`
		Truncated flag   `json:"truncated"`
	}
	q := url.Values{"file": {file}, "count": {strconv.Itoa(max)}}
	err := c.api.Get(ctx, c.vmPath(vmid, "/agent/file-read?"+q.Encode()), &out)
	if err != nil {
		return nil, false, wrap(fmt.Sprintf("read %s in the guest of VM %d", file, vmid), err)
	}
	return []byte(out.Content), bool(out.Truncated), nil
}

// Hibernate suspends a running VM to disk (status/suspend with todisk): QEMU
// writes the RAM to a vmstate volume on statestorage ("" lets PVE pick:
// vmstatestorage, else the first disk's storage), the config gets
// "lock: suspended" and the VM stops, freeing its memory. A start (or
// status/resume) loads the state and frees the volume.
func (c *Client) Hibernate(ctx context.Context, vmid int, statestorage string) error {
	body := map[string]any{"todisk": 1}
	if statestorage != "" {
		body["statestorage"] = statestorage
	}
	return c.postTask(ctx, fmt.Sprintf("hibernate VM %d", vmid), c.vmPath(vmid, "/status/suspend"), body)
}
