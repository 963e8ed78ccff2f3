package pvesim

import (
	"crypto/sha1"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

type node struct {
	name     string
	storages map[string]*storage
	started  time.Time
	// offline: the node is unreachable (SetNodeOnline); pveproxy on the
	// other nodes cannot proxy to it and its workers make no progress.
	offline bool
	// back is closed when an offline node comes back (workers wait on it).
	back chan struct{}
}

// Storage types and their feature matrix (pve-storage volume_has_feature, pveapi.md §2.13).
const (
	typeLVMThin = "lvmthin"
	typeZFS     = "zfspool"
	typeDir     = "dir"
)

type storage struct {
	id       string
	typ      string // behaviour family: lvmthin, zfspool or dir
	plugin   string // the storage.cfg type reported when it differs from typ (nfs)
	shared   bool   // one storage seen from every node (storage.cfg "shared 1")
	format   string // default image format (dir: qcow2 or raw)
	content  []string
	total    int64
	volumes  map[string]*volume // volname → volume
	snippets map[string][]byte
	dir      string // when set, snippets are real files in dir/snippets (Options.LocalDir)
	full     bool   // fault: allocation fails
	noSnap   bool   // fault: snapshot feature switched off
}

type volume struct {
	storage  string
	name     string // volname as PVE names it
	owner    int
	size     int64
	format   string
	isBase   bool
	parent   string            // linked clone base volname
	files    map[string]string // test-visible content
	snaps    []string          // snapshot names, oldest first
	snapData map[string]map[string]string
	ctime    int64
}

func newNode(name string) *node {
	n := &node{name: name, storages: map[string]*storage{}, started: time.Now().Add(-72 * time.Hour)}
	n.storages["local"] = &storage{id: "local", typ: typeDir, format: "qcow2",
		content: []string{"backup", "images", "iso", "snippets", "vztmpl"}, total: 100 << 30}
	n.storages["local-lvm"] = &storage{id: "local-lvm", typ: typeLVMThin, format: "raw",
		content: []string{"images", "rootdir"}, total: 500 << 30}
	n.storages["local-zfs"] = &storage{id: "local-zfs", typ: typeZFS, format: "raw",
		content: []string{"images", "rootdir"}, total: 500 << 30}
	n.storages["local-raw"] = &storage{id: "local-raw", typ: typeDir, format: "raw",
		content: []string{"images"}, total: 100 << 30}
	for _, st := range n.storages {
		st.volumes = map[string]*volume{}
		st.snippets = map[string][]byte{}
	}
	return n
}

// pluginType is the type /storage and /nodes/{n}/storage report.
func (st *storage) pluginType() string {
	if st.plugin != "" {
		return st.plugin
	}
	return st.typ
}

func (st *storage) sharedFlag() int {
	if st.shared {
		return 1
	}
	return 0
}

// SharedStorageID is the storage every node of a cluster (several Nodes)
// shares: an NFS export holding qcow2 images, the same volumes seen from
// every node.
const SharedStorageID = "shared"

// newSharedStorage is an "nfs" storage: PVE's NFSPlugin is a DirPlugin on a
// mount (same volume names and feature matrix as dir), and parse_config
// marks every type in PVE::Storage::Plugin's @SHARED_STORAGE (nfs among
// them) "shared 1".
func newSharedStorage() *storage {
	return &storage{id: SharedStorageID, typ: typeDir, plugin: "nfs", shared: true, format: "qcow2",
		content: []string{"images", "snippets"}, total: 2 << 40,
		volumes: map[string]*volume{}, snippets: map[string][]byte{}}
}

// NodeNames is the node list of an n-node simulated cluster: "pve" for one
// node (a standalone host), pve1..pveN otherwise.
func NodeNames(n int) []string {
	if n <= 1 {
		return []string{"pve"}
	}
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("pve%d", i+1)
	}
	return out
}

func (st *storage) used() int64 {
	var u int64
	for _, v := range st.volumes {
		u += v.size
	}
	return u
}

// thin reports whether volumes are thin-provisioned: LVM-thin pools and sparse
// files on dir storage overcommit (lvcreate only warns), while a zfspool
// without "sparse 1" reserves each zvol's full size, so only ZFS refuses an
// allocation beyond its capacity.
func (st *storage) thin() bool { return st.typ != typeZFS }

func (st *storage) volid(name string) string { return st.id + ":" + name }

// feature answers volume_has_feature for snapshot/clone/copy/rename on a volume in
// state "current", "base" or "snap".
func (st *storage) feature(feature string, v *volume, snap bool) bool {
	state := "current"
	if v.isBase {
		state = "base"
	}
	if snap {
		state = "snap"
	}
	qcow := v.format == "qcow2"
	switch st.typ {
	case typeLVMThin:
		switch feature {
		case "snapshot":
			return state == "current" && !st.noSnap
		case "clone":
			return state == "base" || state == "snap"
		case "copy":
			return true
		case "rename":
			return state == "current"
		}
	case typeZFS:
		switch feature {
		case "snapshot":
			return state == "current" && !st.noSnap
		case "clone":
			return state == "base"
		case "copy":
			return state == "base" || state == "current"
		case "rename":
			return state == "current"
		}
	case typeDir:
		switch feature {
		case "snapshot":
			return qcow && state == "current" && !st.noSnap
		case "clone":
			return state == "base"
		case "copy":
			return state != "snap" || qcow
		case "rename":
			return state == "current" && v.parent == ""
		}
	}
	return false
}

var volOwnerRE = regexp.MustCompile(`(?:^|/)(?:vm|base)-(\d+)-`)

// allocName returns the next free vm-<vmid>-disk-N name, like find_free_diskname.
func (st *storage) allocName(vmid int, format string) string {
	for i := 0; ; i++ {
		name := st.diskName(vmid, fmt.Sprintf("disk-%d", i), format, false)
		taken := false
		for existing := range st.volumes {
			if baseName(existing) == baseName(name) || strings.HasSuffix(existing, "/"+baseName(name)) ||
				strings.HasSuffix(baseName(existing), fmt.Sprintf("-%d-disk-%d", vmid, i)) {
				taken = true
				break
			}
		}
		if !taken {
			return name
		}
	}
}

// diskName builds a volname for vmid on this storage type.
func (st *storage) diskName(vmid int, suffix, format string, base bool) string {
	prefix := "vm"
	if base {
		prefix = "base"
	}
	n := fmt.Sprintf("%s-%d-%s", prefix, vmid, suffix)
	if st.typ == typeDir {
		return fmt.Sprintf("%d/%s.%s", vmid, n, format)
	}
	return n
}

func baseName(volname string) string {
	if i := strings.LastIndex(volname, "/"); i >= 0 {
		return volname[i+1:]
	}
	return volname
}

func ownerOf(volname string) int {
	m := volOwnerRE.FindAllStringSubmatch(volname, -1)
	if len(m) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(m[len(m)-1][1])
	return n
}

func copyFiles(in map[string]string) map[string]string {
	out := make(map[string]string, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}

// config is a VM config: ordered keys with string values, as in a .conf file.
type config struct {
	keys []string
	vals map[string]string
}

func newConfig() *config { return &config{vals: map[string]string{}} }

func (c *config) get(k string) (string, bool) { v, ok := c.vals[k]; return v, ok }

func (c *config) set(k, v string) {
	if _, ok := c.vals[k]; !ok {
		c.keys = append(c.keys, k)
	}
	c.vals[k] = v
}

func (c *config) del(k string) {
	if _, ok := c.vals[k]; !ok {
		return
	}
	delete(c.vals, k)
	for i, kk := range c.keys {
		if kk == k {
			c.keys = append(c.keys[:i], c.keys[i+1:]...)
			break
		}
	}
}

func (c *config) clone() *config {
	n := newConfig()
	for _, k := range c.keys {
		n.set(k, c.vals[k])
	}
	return n
}

// digest is the SHA-1 of the rendered config file, as PVE computes it.
func (c *config) digest() string {
	var b strings.Builder
	keys := append([]string(nil), c.keys...)
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s\n", k, c.vals[k])
	}
	return fmt.Sprintf("%x", sha1.Sum([]byte(b.String())))
}

// digest is the SHA-1 of the whole config file, as parse_vm_config takes it
// over the raw text: the current section with its parent, then every
// snapshot section (write_vm_config sorts them by name). A snapshot taken,
// changed or deleted therefore changes the digest as on PVE, and a write
// carrying the digest read before it is refused. (pvesim has no pending
// section: changes on a stopped VM apply at once, as they do there.)
func (v *vm) digest() string {
	var b strings.Builder
	section := func(c *config, extra map[string]string) {
		keys := append([]string(nil), c.keys...)
		for k := range extra {
			if _, ok := c.vals[k]; !ok {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			val, ok := extra[k]
			if !ok {
				val = c.vals[k]
			}
			fmt.Fprintf(&b, "%s: %s\n", k, val)
		}
	}
	cur := map[string]string{}
	if v.parent != "" {
		cur["parent"] = v.parent
	}
	section(v.conf, cur)
	names := make([]string, 0, len(v.snapshots))
	for n := range v.snapshots {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		sn := v.snapshots[n]
		extra := map[string]string{"snaptime": strconv.FormatInt(sn.snaptime, 10)}
		if sn.parent != "" {
			extra["parent"] = sn.parent
		}
		if sn.description != "" {
			extra["description"] = sn.description
		}
		if sn.snapstate != "" {
			extra["snapstate"] = sn.snapstate
		}
		if sn.vmstate {
			extra["vmstate"] = "1"
		}
		fmt.Fprintf(&b, "\n[%s]\n", n)
		section(sn.conf, extra)
	}
	return fmt.Sprintf("%x", sha1.Sum([]byte(b.String())))
}

var diskKeyRE = regexp.MustCompile(`^(ide|sata|scsi|virtio|efidisk|tpmstate|unused)\d+$`)

func isDiskKey(k string) bool { return diskKeyRE.MatchString(k) }

// Agent states a simulated guest can be in.
const (
	AgentRunning    = "running"     // answers after AgentBootDelay
	AgentNotRunning = "not-running" // qemu-guest-agent never starts
	AgentHung       = "hung"        // QMP commands time out
)

type vm struct {
	id        int
	node      string
	conf      *config
	snapshots map[string]*snapshot
	snapOrder []string
	parent    string // current snapshot parent
	running   bool
	paused    bool // suspended in RAM (qmpstatus "paused")
	started   time.Time
	// awake: this run began by loading saved RAM (a hibernated VM started, a
	// memory snapshot rolled back), so the guest did not boot: its agent and
	// its address answer at once instead of after the boot delays.
	awake   bool
	pid     int
	agent   string
	cpuBusy float64 // scripted CPU fraction while running
	netin   int64
	flock   *task          // holder of the config flock
	shared  map[*task]bool // holders of the flock in shared mode
	noACPI  bool           // guest ignores shutdown requests
	fw      vmFirewall     // /etc/pve/firewall/<vmid>.fw
	// guestFiles are the files written into the guest (agentfile.go).
	guestFiles map[string][]byte
}

type snapshot struct {
	name        string
	conf        *config
	snaptime    int64
	description string
	parent      string
	snapstate   string
	vmstate     bool
}

func (v *vm) lock() string { l, _ := v.conf.get("lock"); return l }

func (v *vm) isTemplate() bool { t, _ := v.conf.get("template"); return t == "1" }

func (v *vm) name() string {
	if n, ok := v.conf.get("name"); ok {
		return n
	}
	return fmt.Sprintf("VM %d", v.id)
}

func (v *vm) confPath() string {
	return fmt.Sprintf("nodes/%s/qemu-server/%d.conf", v.node, v.id)
}

// disks iterates drive keys holding a volume, in config order.
func (v *vm) disks(c *config, fn func(key, storageID, volname string)) {
	for _, k := range append([]string(nil), c.keys...) {
		if !isDiskKey(k) {
			continue
		}
		if sid, vn, ok := driveVolume(c.vals[k]); ok {
			fn(k, sid, vn)
		}
	}
}

func (v *vm) memoryMB() int64 {
	m, ok := v.conf.get("memory")
	if !ok {
		return 512
	}
	m = strings.TrimPrefix(m, "current=")
	n, _ := strconv.ParseInt(strings.SplitN(m, ",", 2)[0], 10, 64)
	return n
}

func (v *vm) cpus() int {
	c, s := 1, 1
	if x, ok := v.conf.get("cores"); ok {
		c, _ = strconv.Atoi(x)
	}
	if x, ok := v.conf.get("sockets"); ok {
		s, _ = strconv.Atoi(x)
	}
	if x, ok := v.conf.get("vcpus"); ok {
		n, _ := strconv.Atoi(x)
		return n
	}
	return c * s
}

// sharedByOthers reports whether a task other than t holds the flock shared.
func (v *vm) sharedByOthers(t *task) bool {
	for h := range v.shared {
		if h != t {
			return true
		}
	}
	return false
}

// snippet reads a snippet from the real directory when the storage has one.
func (st *storage) snippet(name string) ([]byte, bool) {
	if st.dir != "" {
		b, err := os.ReadFile(filepath.Join(st.dir, "snippets", filepath.Base(name)))
		return b, err == nil
	}
	b, ok := st.snippets[name]
	return b, ok
}

func (st *storage) putSnippet(name string, data []byte) error {
	if st.dir != "" {
		dir := filepath.Join(st.dir, "snippets")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, filepath.Base(name)), data, 0o644)
	}
	st.snippets[name] = append([]byte(nil), data...)
	return nil
}

func (st *storage) removeSnippet(name string) error {
	if st.dir != "" {
		err := os.Remove(filepath.Join(st.dir, "snippets", filepath.Base(name)))
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	delete(st.snippets, name)
	return nil
}

func (st *storage) snippetNames() []string {
	var names []string
	if st.dir != "" {
		ents, _ := os.ReadDir(filepath.Join(st.dir, "snippets"))
		for _, e := range ents {
			if e.Type().IsRegular() {
				names = append(names, e.Name())
			}
		}
	} else {
		for n := range st.snippets {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}
