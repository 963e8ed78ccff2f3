package pvesim

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// vmFor loads the VM addressed by the request, failing like load_config does.
func (s *Sim) vmFor(req *request) (*vm, error) {
	nodeName := req.vars["node"]
	if err := s.checkNode(nodeName); err != nil {
		return nil, err
	}
	id, _ := strconv.Atoi(req.vars["vmid"])
	v, ok := s.vms[id]
	if !ok || v.node != nodeName {
		return nil, errf("Configuration file 'nodes/%s/qemu-server/%d.conf' does not exist", nodeName, id)
	}
	return v, nil
}

func checkLock(v *vm) error {
	if l := v.lock(); l != "" {
		return errf("VM is locked (%s)", l)
	}
	return nil
}

func checkSkiplock(req *request) error {
	if req.has("skiplock") && (req.user != "root@pam" || req.tokenID != "") {
		return paramErr(map[string]string{"skiplock": "Only root may use this option."})
	}
	return nil
}

func (s *Sim) listVMs(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkNode(req.vars["node"]); err != nil {
		return nil, err
	}
	out := []map[string]any{}
	ids := []int{}
	for id, v := range s.vms {
		if v.node == req.vars["node"] {
			ids = append(ids, id)
		}
	}
	sort.Ints(ids)
	for _, id := range ids {
		st := s.vmStatusLocked(s.vms[id])
		delete(st, "ha")
		out = append(out, st)
	}
	return out, nil
}

// vmStatusLocked renders status/current with PVE's field set and types; template
// is present only for templates (go-proxmox reads any value as true).
func (s *Sim) vmStatusLocked(v *vm) map[string]any {
	st := map[string]any{
		"vmid": v.id, "name": v.name(), "status": "stopped", "qmpstatus": "stopped",
		"cpus": v.cpus(), "maxmem": v.memoryMB() << 20, "maxdisk": s.bootDiskSize(v), "disk": 0,
		"cpu": 0, "mem": 0, "netin": 0, "netout": 0, "uptime": 0, "ha": map[string]any{"managed": 0},
	}
	if a, ok := v.conf.get("agent"); ok && agentEnabled(a) {
		st["agent"] = 1
	}
	if l := v.lock(); l != "" {
		st["lock"] = l
	}
	if t, ok := v.conf.get("tags"); ok {
		st["tags"] = t
	}
	if v.isTemplate() {
		st["template"] = 1
	}
	if v.running {
		up := int64(s.now().Sub(v.started).Seconds())
		st["status"], st["qmpstatus"] = "running", "running"
		if v.paused {
			st["qmpstatus"] = "paused"
		}
		st["pid"] = v.pid
		st["uptime"] = up
		cpu := v.cpuBusy
		if up < 1 {
			cpu = 0 // the first sample for a new pid is 0
		}
		st["cpu"] = cpu
		st["mem"] = v.memoryMB() << 20 / 3
		st["netin"] = v.netin + up*1500
		st["netout"] = up * 700
		st["running-machine"] = "pc-i440fx-10.0+pve0"
		st["running-qemu"] = qemuVersion
	}
	return st
}

// qemuVersion is the simulated pve-qemu-kvm version (kvm_user_version).
const qemuVersion = "10.0.2"

func agentEnabled(a string) bool {
	first := strings.SplitN(a, ",", 2)[0]
	return first == "1" || first == "enabled=1"
}

func (s *Sim) bootDiskSize(v *vm) int64 {
	var size int64
	v.disks(v.conf, func(k, sid, vn string) {
		if size == 0 && !strings.HasPrefix(k, "unused") && !strings.Contains(vn, "cloudinit") {
			if b, ok := parseSize(driveOpt(v.conf.vals[k], "size")); ok {
				size = b
			}
		}
	})
	return size
}

func (s *Sim) vmStatus(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	return s.vmStatusLocked(v), nil
}

var sizeArgRE = regexp.MustCompile(`^(\+?)(\d+(?:\.\d+)?)([KMGT]?)$`)

// resize is a worker task since PVE 8.0; all checks run inside it.
func (s *Sim) resize(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	if err := checkSkiplock(req); err != nil {
		return nil, err
	}
	disk, size := req.str("disk"), req.str("size")
	return s.startTask(req, v.node, "resize", strconv.Itoa(v.id), func(w *worker) error {
		if err := w.lockVM(v, configLockTimeout); err != nil {
			return err
		}
		if d := req.str("digest"); d != "" && d != v.digest() {
			return fmt.Errorf("checksum missmatch (file change by other user?)")
		}
		if err := checkLock(v); err != nil {
			return err
		}
		val, ok := v.conf.get(disk)
		if !ok {
			return fmt.Errorf("disk '%s' does not exist", disk)
		}
		sid, vn, ok := driveVolume(val)
		if !ok {
			return fmt.Errorf("you can't resize a cdrom")
		}
		st, _ := s.storageOn(v.node, sid)
		vol := st.volumes[vn]
		m := sizeArgRE.FindStringSubmatch(size)
		n, _ := parseSize(m[2] + m[3])
		newsize := n
		if m[1] == "+" {
			newsize = vol.size + n
		}
		if newsize < vol.size {
			return fmt.Errorf("shrinking disks is not supported")
		}
		if newsize == vol.size {
			return nil
		}
		if err := w.wait(); err != nil {
			return err
		}
		if st.full || !st.thin() && st.used()+newsize-vol.size > st.total {
			return fmt.Errorf("unable to resize volume '%s': not enough free space", st.volid(vn))
		}
		vol.size = newsize
		w.logf("Size of logical volume %s changed to %s", vn, formatSize(newsize))
		v.conf.set(disk, setDriveOpt(disk, val, "size", strconv.FormatInt(newsize, 10)))
		return nil
	}), nil
}

func (s *Sim) feature(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	feat, snap := req.str("feature"), req.str("snapname")
	c := v.conf
	if snap != "" {
		sn, ok := v.snapshots[snap]
		if !ok {
			return nil, errf("snapshot '%s' does not exist", snap)
		}
		c = sn.conf
	}
	has := 1
	v.disks(c, func(k, sid, vn string) {
		if strings.HasPrefix(k, "unused") || strings.Contains(vn, "cloudinit") {
			return
		}
		st, _ := s.storageOn(v.node, sid)
		if st == nil || st.volumes[vn] == nil || !st.feature(feat, st.volumes[vn], snap != "") {
			has = 0
		}
	})
	return map[string]any{"hasFeature": has, "nodes": []string{v.node}}, nil
}

// rrddata serves synthetic one-minute points from the scripted CPU profile.
func (s *Sim) rrddata(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	now := s.now().Unix() / 60 * 60
	out := []map[string]any{}
	for i := 59; i >= 0; i-- {
		p := map[string]any{"time": now - int64(i*60), "maxcpu": v.cpus(), "maxmem": v.memoryMB() << 20}
		if v.running {
			p["cpu"] = v.cpuBusy
			p["mem"] = float64(v.memoryMB()<<20) / 3
		}
		out = append(out, p)
	}
	return out, nil
}

// createVM is create_vm without archive restore: the config is written with
// lock=create, disks given as storage:SIZE are allocated, then the lock is cleared.
func (s *Sim) createVM(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkNode(req.vars["node"]); err != nil {
		return nil, err
	}
	id := req.intv("vmid")
	if _, exists := s.vms[id]; exists {
		return nil, errf("unable to create VM %d: config file already exists", id)
	}
	for _, k := range []string{"archive", "import-working-storage", "live-restore"} {
		if req.has(k) {
			return nil, errf("parameter '%s' is not simulated", k)
		}
	}
	poolName := req.str("pool")
	if _, ok := s.pools[poolName]; poolName != "" && !ok {
		return nil, errf("pool '%s' does not exist", poolName) // PVE::Pool::assert_pool_exists
	}
	v := &vm{id: id, node: req.vars["node"], conf: newConfig(), snapshots: map[string]*snapshot{}, agent: AgentRunning}
	v.conf.set("lock", "create")
	s.vms[id] = v
	return s.startTask(req, v.node, "qmcreate", strconv.Itoa(id), func(w *worker) error {
		if err := w.flock(id, configLockTimeout); err != nil {
			return err
		}
		create := &request{params: map[string]any{}, user: req.user, tokenID: req.tokenID}
		for k, val := range req.params {
			if k != "start" && k != "unique" && k != "pool" && k != "storage" && k != "force" {
				create.params[k] = val
			}
		}
		if err := s.applyConfig(create, v, w); err != nil {
			for _, c := range []*config{v.conf} {
				v.disks(c, func(k, sid, vn string) {
					if st, _ := s.storageOn(v.node, sid); st != nil && ownerOf(vn) == id {
						delete(st.volumes, vn)
					}
				})
			}
			delete(s.vms, id)
			return fmt.Errorf("unable to create VM %d - %v", id, err)
		}
		if err := w.wait(); err != nil {
			delete(s.vms, id)
			return err
		}
		v.conf.del("lock")
		if p := s.pools[poolName]; p != nil {
			p.vms[id] = true // add_vm_to_pool
		}
		// create_vm: meta (new_meta_info_string), smbios1 with a uuid, and a
		// vmgenid unless one is given ("1" also asks for a generated one).
		v.conf.set("meta", fmt.Sprintf("creation-qemu=%s,ctime=%d", qemuVersion, s.now().Unix()))
		if _, ok := v.conf.get("smbios1"); !ok {
			v.conf.set("smbios1", "uuid="+s.uuid())
		}
		if g, ok := v.conf.get("vmgenid"); !ok || g == "1" {
			v.conf.set("vmgenid", s.uuid())
		}
		return nil
	}), nil
}
