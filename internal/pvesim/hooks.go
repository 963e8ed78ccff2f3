package pvesim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Test hooks: fault injection, guest behaviour and a state dump. They are Go
// methods for in-process tests and, for other processes (agentd dev, scripts),
// POST /_sim/<hook> with a JSON body (GET /_sim/state for the dump). PVE has
// nothing like them; they are never under /api2/json.

// FailEndpoint makes requests whose decoded path matches pathRE (and method, if
// not empty) fail with "<code> <msg>"; codes ≥ 590 get PVE's empty proxy body.
func (s *Sim) FailEndpoint(method, pathRE string, code int, msg string) error {
	return s.addEndpointFault(method, pathRE, endpointFault{code: code, msg: msg})
}

// HangEndpoint makes matching requests never answer (until the client gives up).
func (s *Sim) HangEndpoint(method, pathRE string) error {
	return s.addEndpointFault(method, pathRE, endpointFault{hang: true})
}

// Unavailable makes every API call answer "595 Connection refused", as pveproxy
// does when pvedaemon is down.
func (s *Sim) Unavailable() { _ = s.FailEndpoint("", ".*", 595, "Connection refused") }

// FailTask makes tasks of type typ (and id, if not empty) end with TASK ERROR: msg.
func (s *Sim) FailTask(typ, id, msg string) { s.addTaskFault(taskFault{typ: typ, id: id, msg: msg}) }

// HangTask makes matching tasks run until stopped through DELETE /tasks/{upid}.
func (s *Sim) HangTask(typ, id string) { s.addTaskFault(taskFault{typ: typ, id: id, hang: true}) }

// WarnTask makes matching tasks succeed with "WARNINGS: n".
func (s *Sim) WarnTask(typ, id string, n int) {
	s.addTaskFault(taskFault{typ: typ, id: id, warnings: n})
}

// ClearFaults removes every injected endpoint and task fault.
func (s *Sim) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = faults{}
}

// RaceNextID makes the next /cluster/nextid answer an id that another client takes
// right away, so the clone that follows fails with "config file already exists".
func (s *Sim) RaceNextID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := 100
	for s.vms[id] != nil {
		id++
	}
	c := newConfig()
	c.set("name", "racer")
	c.set("memory", "512")
	s.faults.nextIDs = append(s.faults.nextIDs, id)
	// The racer's config appears at once: PVE has no reservation either.
	s.vms[id] = &vm{id: id, node: s.Node(), conf: c, snapshots: map[string]*snapshot{}, agent: AgentRunning}
	return id
}

func (s *Sim) withVM(vmid int, fn func(v *vm)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.vms[vmid]
	if !ok {
		return fmt.Errorf("pvesim: no VM %d", vmid)
	}
	fn(v)
	return nil
}

// SetLock sets (or with "" clears) a VM's config lock, e.g. "backup" for a vzdump.
func (s *Sim) SetLock(vmid int, lock string) error {
	return s.withVM(vmid, func(v *vm) {
		if lock == "" {
			v.conf.del("lock")
		} else {
			v.conf.set("lock", lock)
		}
	})
}

// SetAgent switches a VM's guest agent between running, not-running and hung.
func (s *Sim) SetAgent(vmid int, state string) error {
	switch state {
	case AgentRunning, AgentNotRunning, AgentHung:
	default:
		return fmt.Errorf("pvesim: unknown agent state %q", state)
	}
	return s.withVM(vmid, func(v *vm) { v.agent = state })
}

// SetCPU scripts the CPU usage fraction a running VM reports.
func (s *Sim) SetCPU(vmid int, frac float64) error {
	return s.withVM(vmid, func(v *vm) { v.cpuBusy = frac })
}

// IgnoreShutdown makes the guest ignore ACPI shutdown requests.
func (s *Sim) IgnoreShutdown(vmid int, ignore bool) error {
	return s.withVM(vmid, func(v *vm) { v.noACPI = ignore })
}

func (s *Sim) withStorage(nodeName, sid string, fn func(st *storage)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.storageOn(nodeName, sid)
	if err != nil {
		return err
	}
	fn(st)
	return nil
}

// FillStorage makes every allocation on a storage fail for lack of space.
func (s *Sim) FillStorage(nodeName, sid string, full bool) error {
	return s.withStorage(nodeName, sid, func(st *storage) { st.full = full })
}

// DisableSnapshots switches the snapshot feature of a storage off (or back on).
func (s *Sim) DisableSnapshots(nodeName, sid string, off bool) error {
	return s.withStorage(nodeName, sid, func(st *storage) { st.noSnap = off })
}

// PutSnippet stores a snippet file (PVE has no upload API for snippets).
func (s *Sim) PutSnippet(nodeName, sid, name string, data []byte) error {
	var err error
	if werr := s.withStorage(nodeName, sid, func(st *storage) { err = st.putSnippet(name, data) }); werr != nil {
		return werr
	}
	return err
}

// RemoveSnippet deletes a snippet file.
func (s *Sim) RemoveSnippet(nodeName, sid, name string) error {
	var err error
	if werr := s.withStorage(nodeName, sid, func(st *storage) { err = st.removeSnippet(name) }); werr != nil {
		return werr
	}
	return err
}

// Snippet reads a snippet file back.
func (s *Sim) Snippet(nodeName, sid, name string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.storageOn(nodeName, sid)
	if err != nil {
		return nil, false
	}
	return st.snippet(name)
}

func (s *Sim) volumeByID(volid string) (*volume, error) {
	sid, vn, ok := strings.Cut(volid, ":")
	if !ok {
		return nil, fmt.Errorf("pvesim: bad volid %q", volid)
	}
	for _, n := range s.nodes {
		if st, ok := n.storages[sid]; ok {
			if vol, ok := st.volumes[vn]; ok {
				return vol, nil
			}
		}
	}
	return nil, fmt.Errorf("pvesim: no volume %s", volid)
}

// WriteFile writes test content into a volume, standing in for a guest writing to its disk.
func (s *Sim) WriteFile(volid, path, content string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	vol, err := s.volumeByID(volid)
	if err != nil {
		return err
	}
	vol.files[path] = content
	return nil
}

// ReadFile reads test content from a volume.
func (s *Sim) ReadFile(volid, path string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	vol, err := s.volumeByID(volid)
	if err != nil {
		return "", false, err
	}
	c, ok := vol.files[path]
	return c, ok, nil
}

// AddVM creates a VM from config lines (key → value); disks given as
// "storage:SIZE_GB" are allocated. With template set it is converted afterwards.
func (s *Sim) AddVM(nodeName string, vmid int, cfg map[string]string, template bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.nodes[nodeName]; !ok {
		return fmt.Errorf("pvesim: no node %q", nodeName)
	}
	if _, ok := s.vms[vmid]; ok {
		return fmt.Errorf("pvesim: VM %d exists", vmid)
	}
	v := &vm{id: vmid, node: nodeName, conf: newConfig(), snapshots: map[string]*snapshot{}, agent: AgentRunning}
	s.vms[vmid] = v
	keys := make([]string, 0, len(cfg))
	for k := range cfg {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		val := cfg[k]
		switch {
		case isDiskKey(k):
			nv, err := s.prepareDrive(v, k, val)
			if err != nil {
				delete(s.vms, vmid)
				return err
			}
			v.conf.set(k, nv)
		case regexp.MustCompile(`^net\d+$`).MatchString(k):
			v.conf.set(k, s.withMAC(val))
		default:
			v.conf.set(k, val)
		}
	}
	if template {
		s.makeTemplate(v)
	}
	return nil
}

// FixtureTemplateID is the cloud-init template Fixtures adds.
const FixtureTemplateID = 9000

// addFixtures adds template 9000 on the first node; in a cluster, with
// TemplatePerNode, a copy 9000+i on every further node, and with
// SharedTemplate, 9000's disks on the shared storage.
func (s *Sim) addFixtures() error {
	tmpl := func(sid string) map[string]string {
		return map[string]string{
			"name": "ubuntu-2404-agent", "memory": "2048", "cores": "2", "sockets": "1", "cpu": "x86-64-v2-AES",
			"scsihw": "virtio-scsi-single", "scsi0": sid + ":8", "ide2": sid + ":cloudinit",
			"net0": "virtio,bridge=vmbr1", "agent": "1", "ostype": "l26", "boot": "order=scsi0",
			"serial0": "socket", "vga": "serial0", "ciuser": "agent", "ipconfig0": "ip=dhcp",
		}
	}
	first := "local-lvm"
	if s.opts.SharedTemplate && len(s.opts.Nodes) > 1 {
		first = SharedStorageID
	}
	if err := s.AddVM(s.Node(), FixtureTemplateID, tmpl(first), true); err != nil {
		return err
	}
	if s.opts.TemplatePerNode {
		for i, n := range s.opts.Nodes[1:] {
			if err := s.AddVM(n, FixtureTemplateID+i+1, tmpl("local-lvm"), true); err != nil {
				return err
			}
		}
	}
	return nil
}

// State is the dump tests assert on.
type State struct {
	VMs      map[int]VMState        `json:"vms"`
	Volumes  map[string]VolumeState `json:"volumes"`
	Tasks    []TaskState            `json:"tasks"`
	Requests int64                  `json:"requests"`
	// Offline are the nodes SetNodeOnline has taken offline, sorted.
	Offline []string `json:"offline,omitempty"`
}

// VMState is one VM in the dump.
type VMState struct {
	Node      string            `json:"node"`
	Config    map[string]string `json:"config"`
	Running   bool              `json:"running"`
	Snapshots []string          `json:"snapshots"`
	Agent     string            `json:"agent"`
}

// VolumeState is one volume in the dump.
type VolumeState struct {
	Owner     int      `json:"owner"`
	Size      int64    `json:"size"`
	Format    string   `json:"format"`
	Base      bool     `json:"base"`
	Parent    string   `json:"parent,omitempty"`
	Snapshots []string `json:"snapshots,omitempty"`
}

// TaskState is one task in the dump.
type TaskState struct {
	UPID       string `json:"upid"`
	Type       string `json:"type"`
	ID         string `json:"id"`
	Running    bool   `json:"running"`
	ExitStatus string `json:"exitstatus"`
}

// Dump returns a snapshot of the whole simulated cluster.
func (s *Sim) Dump() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := State{VMs: map[int]VMState{}, Volumes: map[string]VolumeState{}, Requests: s.stats.Requests}
	for id, v := range s.vms {
		c := map[string]string{}
		for k, val := range v.conf.vals {
			c[k] = val
		}
		st.VMs[id] = VMState{Node: v.node, Config: c, Running: v.running, Snapshots: append([]string(nil), v.snapOrder...), Agent: v.agent}
	}
	for _, n := range s.nodes {
		for _, sto := range n.storages {
			for name, vol := range sto.volumes {
				st.Volumes[sto.volid(name)] = VolumeState{Owner: vol.owner, Size: vol.size, Format: vol.format,
					Base: vol.isBase, Parent: vol.parent, Snapshots: volumeSnapshots(vol)}
			}
		}
	}
	for _, t := range s.taskList {
		st.Tasks = append(st.Tasks, TaskState{UPID: t.upid, Type: t.typ, ID: t.id, Running: t.running, ExitStatus: t.exitstatus})
	}
	for name, n := range s.nodes {
		if n.offline {
			st.Offline = append(st.Offline, name)
		}
	}
	sort.Strings(st.Offline)
	return st
}

// RequestCount returns how many API requests were served, per "METHOD pattern".
// StorageLockTimeouts is how many storage lock waits gave up so far
// (storagelock.go): failed clones and disks a destroy left behind.
func (s *Sim) StorageLockTimeouts() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats.StorageLockTimeouts
}

func (s *Sim) RequestCount() (total int64, byPath map[string]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	byPath = map[string]int64{}
	for k, v := range s.stats.ByPath {
		byPath[k] = v
	}
	return s.stats.Requests, byPath
}

// hookRequest is the JSON body of POST /_sim/<hook>.
type hookRequest struct {
	Method   string            `json:"method"`
	Path     string            `json:"path"`
	Code     int               `json:"code"`
	Message  string            `json:"message"`
	Type     string            `json:"type"`
	ID       string            `json:"id"`
	Count    int               `json:"count"`
	VMID     int               `json:"vmid"`
	Lock     string            `json:"lock"`
	State    string            `json:"state"`
	CPU      float64           `json:"cpu"`
	Node     string            `json:"node"`
	Storage  string            `json:"storage"`
	Name     string            `json:"name"`
	Data     string            `json:"data"`
	On       bool              `json:"on"`
	Volid    string            `json:"volid"`
	File     string            `json:"file"`
	Config   map[string]string `json:"config"`
	Template bool              `json:"template"`
	// Times limits a fault to its next n matches (0: until cleared).
	Times int  `json:"times"`
	Hang  bool `json:"hang"`
}

func (s *Sim) serveHooks(w http.ResponseWriter, r *http.Request) {
	req := &request{}
	if e := s.authenticate(r, req); e != nil {
		writeError(w, e)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, "/_sim/")
	if r.Method == http.MethodGet && name == "state" {
		writeData(w, s.Dump())
		return
	}
	var h hookRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		writeError(w, &Error{Code: 400, Msg: "bad hook request: " + err.Error()})
		return
	}
	if h.Node == "" {
		h.Node = s.Node()
	}
	var err error
	var data any
	switch name {
	case "fail-endpoint":
		err = s.addEndpointFault(h.Method, h.Path, endpointFault{code: h.Code, msg: h.Message, left: h.Times})
	case "hang-endpoint":
		err = s.addEndpointFault(h.Method, h.Path, endpointFault{hang: true, left: h.Times})
	case "lose-reply":
		err = s.LoseReply(h.Method, h.Path, h.Times, h.Hang)
	case "release-hung-tasks":
		data = s.ReleaseHungTasks()
	case "list-files":
		data, err = s.Files(h.Volid)
	case "unavailable":
		s.Unavailable()
	case "fail-task":
		s.addTaskFault(taskFault{typ: h.Type, id: h.ID, msg: h.Message, left: h.Times})
	case "hang-task":
		s.addTaskFault(taskFault{typ: h.Type, id: h.ID, hang: true, left: h.Times})
	case "warn-task":
		s.WarnTask(h.Type, h.ID, h.Count)
	case "clear-faults":
		s.ClearFaults()
	case "race-nextid":
		data = strconv.Itoa(s.RaceNextID())
	case "lock":
		err = s.SetLock(h.VMID, h.Lock)
	case "agent":
		err = s.SetAgent(h.VMID, h.State)
	case "cpu":
		err = s.SetCPU(h.VMID, h.CPU)
	case "fill-storage":
		err = s.FillStorage(h.Node, h.Storage, h.On)
	case "disable-snapshots":
		err = s.DisableSnapshots(h.Node, h.Storage, h.On)
	case "put-snippet":
		err = s.PutSnippet(h.Node, h.Storage, h.Name, []byte(h.Data))
	case "remove-snippet":
		err = s.RemoveSnippet(h.Node, h.Storage, h.Name)
	case "write-file":
		err = s.WriteFile(h.Volid, h.File, h.Data)
	case "read-file":
		var ok bool
		var c string
		c, ok, err = s.ReadFile(h.Volid, h.File)
		if err == nil && !ok {
			err = fmt.Errorf("pvesim: no file %s on %s", h.File, h.Volid)
		}
		data = c
	case "node-online":
		err = s.SetNodeOnline(h.Node, h.On)
	case "add-vm":
		err = s.AddVM(h.Node, h.VMID, h.Config, h.Template)
	default:
		writeError(w, &Error{Code: 501, Msg: fmt.Sprintf("no such hook '%s'", name)})
		return
	}
	if err != nil {
		writeError(w, &Error{Code: 400, Msg: err.Error()})
		return
	}
	writeData(w, data)
}
