package pvesim

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Persistence (Options.StateDir, `agentd sim|dev --state-dir`): the simulated
// cluster outlives the process, as /etc/pve (pmxcfs), the storages and the
// task archive outlive a restart of PVE's API daemons.
//
// What is kept: nodes' start time and whether they are offline, every VM (config, snapshots, power state,
// guest agent state, firewall, guest files), volumes with their content and
// snapshots (a shared storage's once), snippets, pools, security groups, the
// datacenter firewall, the SDN config (edited and applied), the task history, the API token, the login password, tickets, the PID counter
// and the TLS certificate. What is not: faults (test hooks), request counters
// and config flocks (a flock belongs to a process, and processes are gone).
//
// A restart is modelled as pveproxy/pvedaemon restarting on a host that did
// not reboot: VMs keep running (their QEMU processes are not children of the
// API daemons), uptimes continue. Tasks running when the simulator stopped
// (its workers die with it, unlike PVE's forked workers) come back stopped
// with "unexpected status", which is what PVE::Tools::upid_read_status
// reports for a worker that ended without writing its final line; a config
// lock the worker had set (lock: clone, snapshot …) stays, as on PVE after a
// killed worker, until `qm unlock` (the `lock` hook, or a config delete=lock).
//
// Writes are atomic: the whole state is marshalled while the state lock is
// held, just before it is released (simMutex.Unlock), so whatever any client
// observed is on disk; it is written to a temporary file in the same
// directory, fsynced, renamed over the state file and the directory fsynced.
// The file starts with a header line carrying the body's length and SHA-256,
// so a file damaged any other way is refused at load (New fails) instead of
// starting from a partial cluster. A write is skipped when nothing changed.

const (
	stateFile     = "pvesim-state.json"
	stateFormat   = "pvesim-state"
	stateVersion  = 1
	certFile      = "pve-ssl.pem"
	certKeyFile   = "pve-ssl.key"
	tempPrefix    = ".tmp-"
	generationMul = 7919 // reseeds MACs, pids and UUIDs after each load
)

type stateHeader struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	Length  int    `json:"length"`
	SHA256  string `json:"sha256"`
}

type pState struct {
	Generation int64               `json:"generation"`
	TokenID    string              `json:"token_id"`
	Secret     string              `json:"secret"`
	User       string              `json:"user"`
	Password   string              `json:"password"`
	NextPID    int                 `json:"next_pid"`
	Nodes      []pNode             `json:"nodes"`
	VMs        []pVM               `json:"vms"`
	FwGroups   map[string]pFwGroup `json:"fw_groups"`
	ClusterFw  map[string]string   `json:"cluster_fw,omitempty"`
	Pools      map[string]pPool    `json:"pools"`
	Tasks      []pTask             `json:"tasks"`
	Tickets    map[string]string   `json:"tickets,omitempty"`
	CSRF       map[string]string   `json:"csrf,omitempty"`
	SDN        *pSDN               `json:"sdn,omitempty"`
}

// pSDN is /etc/pve/sdn: the edited config and the committed one.
type pSDN struct {
	Config  map[string]sdnObjects `json:"config,omitempty"`
	Running map[string]sdnObjects `json:"running,omitempty"`
	Version int64                 `json:"version,omitempty"`
}

type pNode struct {
	Name     string     `json:"name"`
	Started  time.Time  `json:"started"`
	Offline  bool       `json:"offline,omitempty"`
	Storages []pStorage `json:"storages"`
}

type pStorage struct {
	ID       string            `json:"id"`
	Volumes  []pVolume         `json:"volumes"`
	Snippets map[string][]byte `json:"snippets,omitempty"`
}

type pVolume struct {
	Name     string                       `json:"name"`
	Owner    int                          `json:"owner"`
	Size     int64                        `json:"size"`
	Format   string                       `json:"format"`
	IsBase   bool                         `json:"is_base,omitempty"`
	Parent   string                       `json:"parent,omitempty"`
	Files    map[string]string            `json:"files,omitempty"`
	Snaps    []string                     `json:"snaps,omitempty"`
	SnapData map[string]map[string]string `json:"snap_data,omitempty"`
	Ctime    int64                        `json:"ctime"`
}

// pConfig keeps the key order of a .conf file.
type pConfig [][2]string

type pSnapshot struct {
	Name        string  `json:"name"`
	Conf        pConfig `json:"conf"`
	Snaptime    int64   `json:"snaptime"`
	Description string  `json:"description,omitempty"`
	Parent      string  `json:"parent,omitempty"`
	Snapstate   string  `json:"snapstate,omitempty"`
	VMState     bool    `json:"vmstate,omitempty"`
}

type pVM struct {
	ID         int               `json:"id"`
	Node       string            `json:"node"`
	Conf       pConfig           `json:"conf"`
	Snapshots  []pSnapshot       `json:"snapshots,omitempty"` // oldest first
	Parent     string            `json:"parent,omitempty"`
	Running    bool              `json:"running,omitempty"`
	Paused     bool              `json:"paused,omitempty"`
	Started    time.Time         `json:"started"`
	PID        int               `json:"pid,omitempty"`
	Agent      string            `json:"agent"`
	CPUBusy    float64           `json:"cpu_busy,omitempty"`
	Awake      bool              `json:"awake,omitempty"`
	NetIn      int64             `json:"netin,omitempty"`
	NoACPI     bool              `json:"no_acpi,omitempty"`
	FwOptions  map[string]string `json:"fw_options,omitempty"`
	FwRules    []fwRule          `json:"fw_rules,omitempty"`
	FwIPSets   map[string]pIPSet `json:"fw_ipsets,omitempty"`
	GuestFiles map[string][]byte `json:"guest_files,omitempty"`
}

type pFwGroup struct {
	Comment string   `json:"comment,omitempty"`
	Rules   []fwRule `json:"rules"`
}

type pIPSet struct {
	Comment string        `json:"comment,omitempty"`
	Entries []pIPSetEntry `json:"entries"`
}

type pIPSetEntry struct {
	CIDR    string `json:"cidr"`
	Comment string `json:"comment,omitempty"`
	NoMatch bool   `json:"nomatch,omitempty"`
}

type pPool struct {
	Comment  *string  `json:"comment,omitempty"`
	VMs      []int    `json:"vms"`
	Storages []string `json:"storages"`
}

type pTask struct {
	UPID       string    `json:"upid"`
	Node       string    `json:"node"`
	Type       string    `json:"type"`
	ID         string    `json:"id"`
	User       string    `json:"user"`
	TokenID    string    `json:"token_id,omitempty"`
	PID        int       `json:"pid"`
	PStart     int64     `json:"pstart"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
	Running    bool      `json:"running,omitempty"`
	ExitStatus string    `json:"exitstatus,omitempty"`
	Log        []string  `json:"log"`
	Warnings   int       `json:"warnings,omitempty"`
}

func toPConfig(c *config) pConfig {
	out := make(pConfig, 0, len(c.keys))
	for _, k := range c.keys {
		out = append(out, [2]string{k, c.vals[k]})
	}
	return out
}

func (p pConfig) config() *config {
	c := newConfig()
	for _, kv := range p {
		c.set(kv[0], kv[1])
	}
	return c
}

// snapshotState builds the persisted form; called with s.mu held.
func (s *Sim) snapshotState() *pState {
	ps := &pState{Generation: s.generation, TokenID: s.opts.TokenID, Secret: s.opts.Secret,
		User: s.opts.User, Password: s.opts.Password, NextPID: s.nextPID,
		FwGroups: map[string]pFwGroup{}, ClusterFw: s.clusterFw, Pools: map[string]pPool{},
		Tickets: s.tickets, CSRF: s.csrf}
	seen := map[*storage]bool{} // a shared storage is written once, with its first node
	for _, name := range sortedKeys(s.nodes) {
		n := s.nodes[name]
		pn := pNode{Name: name, Started: n.started, Offline: n.offline}
		for _, sid := range sortedKeys(n.storages) {
			st := n.storages[sid]
			if seen[st] {
				continue
			}
			seen[st] = true
			pst := pStorage{ID: sid}
			if st.dir == "" && len(st.snippets) > 0 {
				pst.Snippets = st.snippets
			}
			for _, vn := range sortedKeys(st.volumes) {
				v := st.volumes[vn]
				pst.Volumes = append(pst.Volumes, pVolume{Name: vn, Owner: v.owner, Size: v.size, Format: v.format,
					IsBase: v.isBase, Parent: v.parent, Files: v.files, Snaps: v.snaps, SnapData: v.snapData, Ctime: v.ctime})
			}
			pn.Storages = append(pn.Storages, pst)
		}
		ps.Nodes = append(ps.Nodes, pn)
	}
	ids := make([]int, 0, len(s.vms))
	for id := range s.vms {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		v := s.vms[id]
		pv := pVM{ID: id, Node: v.node, Conf: toPConfig(v.conf), Parent: v.parent, Running: v.running,
			Paused: v.paused, Started: v.started, PID: v.pid, Agent: v.agent, CPUBusy: v.cpuBusy, Awake: v.awake, NetIn: v.netin,
			NoACPI: v.noACPI, FwOptions: v.fw.options, FwRules: v.fw.rules, GuestFiles: v.guestFiles}
		for _, name := range v.snapOrder {
			sn := v.snapshots[name]
			pv.Snapshots = append(pv.Snapshots, pSnapshot{Name: name, Conf: toPConfig(sn.conf), Snaptime: sn.snaptime,
				Description: sn.description, Parent: sn.parent, Snapstate: sn.snapstate, VMState: sn.vmstate})
		}
		if len(v.fw.ipsets) > 0 {
			pv.FwIPSets = map[string]pIPSet{}
			for name, set := range v.fw.ipsets {
				pset := pIPSet{Comment: set.comment, Entries: []pIPSetEntry{}}
				for _, e := range set.entries {
					pset.Entries = append(pset.Entries, pIPSetEntry{CIDR: e.cidr, Comment: e.comment, NoMatch: e.nomatch})
				}
				pv.FwIPSets[name] = pset
			}
		}
		ps.VMs = append(ps.VMs, pv)
	}
	for name, g := range s.fwGroups {
		ps.FwGroups[name] = pFwGroup{Comment: g.comment, Rules: g.rules}
	}
	for name, p := range s.pools {
		pp := pPool{Comment: p.comment, VMs: []int{}, Storages: []string{}}
		for id := range p.vms {
			pp.VMs = append(pp.VMs, id)
		}
		sort.Ints(pp.VMs)
		pp.Storages = append(pp.Storages, sortedKeys(p.storages)...)
		ps.Pools[name] = pp
	}
	if s.sdn.config != nil || s.sdn.running != nil {
		ps.SDN = &pSDN{Config: s.sdn.config, Running: s.sdn.running, Version: s.sdn.version}
	}
	for _, t := range s.taskList {
		ps.Tasks = append(ps.Tasks, pTask{UPID: t.upid, Node: t.node, Type: t.typ, ID: t.id, User: t.user,
			TokenID: t.tokenID, PID: t.pid, PStart: t.pstart, Start: t.start, End: t.end, Running: t.running,
			ExitStatus: t.exitstatus, Log: t.log, Warnings: t.warnings})
	}
	return ps
}

// persistLocked writes the state if it changed since the last write; called
// by simMutex.Unlock with s.mu held. A failed write is remembered and
// answered as a 500 by the API (serveAPI) until a later write succeeds.
func (s *Sim) persistLocked() {
	if s.opts.StateDir == "" || s.persistOff {
		return
	}
	body, err := json.Marshal(s.snapshotState())
	if err != nil {
		s.persistErr = err
		return
	}
	sum := sha256.Sum256(body)
	if s.persistErr == nil && bytes.Equal(sum[:], s.persistSum[:]) {
		return
	}
	hdr, _ := json.Marshal(stateHeader{Format: stateFormat, Version: stateVersion, Length: len(body), SHA256: hex.EncodeToString(sum[:])})
	data := append(append(hdr, '\n'), body...)
	if err := writeFileAtomic(s.opts.StateDir, stateFile, data, 0o600); err != nil {
		s.persistErr = fmt.Errorf("unable to save simulator state: %w", err)
		return
	}
	s.persistErr, s.persistSum = nil, sum
}

// writeFileAtomic replaces dir/name with data so that a crash at any point
// leaves either the old or the new file: temp file, fsync, rename, fsync dir.
func writeFileAtomic(dir, name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(dir, tempPrefix+name+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// readState reads and verifies the state file; (nil, nil) when there is none.
func readState(dir string) (*pState, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	bad := func(why string) error {
		return fmt.Errorf("pvesim: state file %s is damaged (%s); refusing to start from a partial cluster", filepath.Join(dir, stateFile), why)
	}
	line, body, found := bytes.Cut(data, []byte("\n"))
	if !found {
		return nil, bad("no header")
	}
	var h stateHeader
	if err := json.Unmarshal(line, &h); err != nil || h.Format != stateFormat {
		return nil, bad("bad header")
	}
	if h.Version != stateVersion {
		return nil, fmt.Errorf("pvesim: state file version %d, this simulator reads %d", h.Version, stateVersion)
	}
	sum := sha256.Sum256(body)
	if len(body) != h.Length || hex.EncodeToString(sum[:]) != h.SHA256 {
		return nil, bad("length or checksum mismatch")
	}
	var ps pState
	if err := json.Unmarshal(body, &ps); err != nil {
		return nil, bad(err.Error())
	}
	return &ps, nil
}

// loadState restores the cluster from opts.StateDir; called from New after
// the nodes and their storages exist. It reports whether a state was found.
func (s *Sim) loadState() (bool, error) {
	dir := s.opts.StateDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), tempPrefix) { // a write cut short
				_ = os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	ps, err := readState(dir)
	if err != nil || ps == nil {
		return false, err
	}
	s.generation = ps.Generation + 1
	s.rnd = rand.New(rand.NewSource(s.opts.Seed + s.generation*generationMul))
	if s.opts.TokenID == "" || s.opts.TokenID == ps.TokenID {
		s.opts.TokenID = ps.TokenID
		if s.opts.Secret == "" {
			s.opts.Secret = ps.Secret
		}
	}
	if s.opts.User == "" || s.opts.User == ps.User {
		s.opts.User = ps.User
		if s.opts.Password == "" {
			s.opts.Password = ps.Password
		}
	}
	s.nextPID = ps.NextPID
	for _, pn := range ps.Nodes {
		n, ok := s.nodes[pn.Name]
		if !ok {
			return false, fmt.Errorf("pvesim: the state in %s has node %q, which is not configured", dir, pn.Name)
		}
		n.started = pn.Started
		if pn.Offline {
			n.offline, n.back = true, make(chan struct{})
		}
		for _, pst := range pn.Storages {
			st, ok := n.storages[pst.ID]
			if !ok {
				return false, fmt.Errorf("pvesim: the state in %s has storage %q on %s, which does not exist", dir, pst.ID, pn.Name)
			}
			if st.dir == "" {
				for k, v := range pst.Snippets {
					st.snippets[k] = v
				}
			}
			for _, pv := range pst.Volumes {
				st.volumes[pv.Name] = &volume{storage: pst.ID, name: pv.Name, owner: pv.Owner, size: pv.Size,
					format: pv.Format, isBase: pv.IsBase, parent: pv.Parent, files: nonNil(pv.Files), snaps: pv.Snaps,
					snapData: pv.SnapData, ctime: pv.Ctime}
			}
		}
	}
	for _, pv := range ps.VMs {
		if _, ok := s.nodes[pv.Node]; !ok {
			return false, fmt.Errorf("pvesim: the state in %s has VM %d on node %q, which is not configured", dir, pv.ID, pv.Node)
		}
		v := &vm{id: pv.ID, node: pv.Node, conf: pv.Conf.config(), snapshots: map[string]*snapshot{}, parent: pv.Parent,
			running: pv.Running, paused: pv.Paused, started: pv.Started, pid: pv.PID, agent: pv.Agent, cpuBusy: pv.CPUBusy, awake: pv.Awake,
			netin: pv.NetIn, noACPI: pv.NoACPI, guestFiles: pv.GuestFiles,
			fw: vmFirewall{options: pv.FwOptions, rules: pv.FwRules}}
		for _, sn := range pv.Snapshots {
			v.snapshots[sn.Name] = &snapshot{name: sn.Name, conf: sn.Conf.config(), snaptime: sn.Snaptime,
				description: sn.Description, parent: sn.Parent, snapstate: sn.Snapstate, vmstate: sn.VMState}
			v.snapOrder = append(v.snapOrder, sn.Name)
		}
		if len(pv.FwIPSets) > 0 {
			v.fw.ipsets = map[string]*fwIPSet{}
			for name, ps := range pv.FwIPSets {
				set := &fwIPSet{comment: ps.Comment}
				for _, e := range ps.Entries {
					set.entries = append(set.entries, fwIPSetEntry{cidr: e.CIDR, comment: e.Comment, nomatch: e.NoMatch})
				}
				v.fw.ipsets[name] = set
			}
		}
		s.vms[pv.ID] = v
	}
	for name, g := range ps.FwGroups {
		s.fwGroups[name] = &fwGroup{comment: g.Comment, rules: g.Rules}
	}
	s.clusterFw = ps.ClusterFw
	for name, pp := range ps.Pools {
		p := &pool{comment: pp.Comment, vms: map[int]bool{}, storages: map[string]bool{}}
		for _, id := range pp.VMs {
			p.vms[id] = true
		}
		for _, sid := range pp.Storages {
			p.storages[sid] = true
		}
		s.pools[name] = p
	}
	for _, pt := range ps.Tasks {
		t := &task{upid: pt.UPID, node: pt.Node, typ: pt.Type, id: pt.ID, user: pt.User, tokenID: pt.TokenID,
			pid: pt.PID, pstart: pt.PStart, start: pt.Start, end: pt.End, running: pt.Running,
			exitstatus: pt.ExitStatus, log: pt.Log, warnings: pt.Warnings, abort: make(chan struct{})}
		if t.running { // its worker died with the previous process
			t.running, t.end, t.exitstatus = false, s.now(), "unexpected status"
		}
		s.tasks[t.upid] = t
		s.taskList = append(s.taskList, t)
	}
	if ps.SDN != nil {
		s.sdn = sdnState{config: ps.SDN.Config, running: ps.SDN.Running, version: ps.SDN.Version}
	}
	for k, v := range ps.Tickets {
		s.tickets[k] = v
	}
	for k, v := range ps.CSRF {
		s.csrf[k] = v
	}
	return true, nil
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// stateCert returns the TLS certificate and key kept in the state dir
// (pve-ssl.pem/pve-ssl.key, as /etc/pve/local keeps them), creating them on
// first use, so clients that pinned it keep trusting a restarted simulator.
func stateCert(dir string) (certPEM, keyPEM []byte, err error) {
	certPEM, err1 := os.ReadFile(filepath.Join(dir, certFile))
	keyPEM, err2 := os.ReadFile(filepath.Join(dir, certKeyFile))
	if err1 == nil && err2 == nil {
		return certPEM, keyPEM, nil
	}
	certPEM, keyPEM, err = selfSignedPEM()
	if err != nil {
		return nil, nil, err
	}
	if err := writeFileAtomic(dir, certKeyFile, keyPEM, 0o600); err != nil {
		return nil, nil, err
	}
	if err := writeFileAtomic(dir, certFile, certPEM, 0o644); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}
