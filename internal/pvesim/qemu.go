package pvesim

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim/apischema"
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
		st["running-qemu"] = "10.0.2"
	}
	return st
}

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

var configSchema = func() apischema.Method {
	m, _ := apischema.Lookup("/nodes/{node}/qemu/{vmid}/config", "POST")
	return m
}()

// renderConfig types each value as PVE's check_type does: integers and booleans as
// JSON numbers, everything else (memory included, PVE ≥ 8.1) as strings.
func renderConfig(c *config) map[string]any {
	out := map[string]any{}
	for _, k := range c.keys {
		val := c.vals[k]
		switch configType(k) {
		case "integer", "boolean":
			if n, err := strconv.ParseInt(val, 10, 64); err == nil {
				out[k] = n
				continue
			}
		}
		if k == "cipassword" {
			val = "**********"
		}
		out[k] = val
	}
	return out
}

func configType(k string) string { return configSchema.Type(k) }

func (s *Sim) getConfig(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	c := v.conf
	if snap := req.str("snapshot"); snap != "" {
		sn, ok := v.snapshots[snap]
		if !ok {
			return nil, errf("snapshot '%s' does not exist", snap)
		}
		c = sn.conf
	}
	out := renderConfig(c)
	if v.parent != "" && c == v.conf {
		out["parent"] = v.parent
	}
	out["digest"] = v.conf.digest()
	return out, nil
}

func (s *Sim) pending(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	out := []map[string]any{}
	for k, val := range renderConfig(v.conf) {
		out = append(out, map[string]any{"key": k, "value": val})
	}
	sort.Slice(out, func(i, j int) bool { return out[i]["key"].(string) < out[j]["key"].(string) })
	return out, nil
}

var controlParams = map[string]bool{"node": true, "vmid": true, "digest": true, "delete": true,
	"revert": true, "force": true, "skiplock": true, "background_delay": true}

// applyConfig is update_vm_api: checks run before the worker, changes apply at once
// on a stopped VM. Hotplug of disks and NICs is assumed to succeed on a running VM.
func (s *Sim) configPrecheck(req *request, v *vm) error {
	if err := checkSkiplock(req); err != nil {
		return err
	}
	if req.has("force") && !req.has("delete") {
		return paramErr(map[string]string{"force": "missing property required by 'force'"})
	}
	n := 0
	for k := range req.params {
		if !controlParams[k] {
			n++
		}
	}
	if n == 0 && req.str("delete") == "" && req.str("revert") == "" {
		return errf("no options specified")
	}
	if d := req.str("digest"); d != "" && d != v.conf.digest() {
		return errf("checksum mismatch (file change by other user?)")
	}
	if !req.has("skiplock") {
		if err := checkLock(v); err != nil {
			return err
		}
	}
	for _, k := range splitConfigList(req.str("delete")) {
		if configSchema.Validate(map[string]any{k: ""})[k] == "property is not defined in schema and the schema does not allow additional properties" {
			return paramErr(map[string]string{"delete": fmt.Sprintf("invalid configuration ID '%s'", k)})
		}
	}
	return nil
}

func splitConfigList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || r == ' ' })
}

var newDiskRE = regexp.MustCompile(`^(?:([^/:\s]+):)?(\d+(?:\.\d+)?)$`)

func (s *Sim) applyConfig(req *request, v *vm, w *worker) error {
	if d := req.str("digest"); d != "" && d != v.conf.digest() {
		return fmt.Errorf("checksum mismatch (file change by other user?)")
	}
	for _, k := range splitConfigList(req.str("delete")) {
		val, ok := v.conf.get(k)
		if !ok {
			continue
		}
		if isDiskKey(k) {
			if err := s.detachDrive(v, k, val, req.boolv("force") || strings.HasPrefix(k, "unused")); err != nil {
				return err
			}
			continue
		}
		v.conf.del(k)
	}
	keys := make([]string, 0, len(req.params))
	for k := range req.params {
		if !controlParams[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		val, _ := apischema.Scalar(req.params[k])
		switch {
		case isDiskKey(k):
			nv, err := s.prepareDrive(v, k, val)
			if err != nil {
				return err
			}
			if old, ok := v.conf.get(k); ok && old != nv {
				if err := s.detachDrive(v, k, old, false); err != nil {
					return err
				}
			}
			v.conf.set(k, nv)
		case strings.HasPrefix(k, "net") && regexp.MustCompile(`^net\d+$`).MatchString(k):
			v.conf.set(k, s.withMAC(val))
		case k == "sshkeys":
			v.conf.set(k, val)
		case k == "cipassword":
			v.conf.set(k, "$5$sim$"+strconv.Itoa(len(val)))
		default:
			if typ := configType(k); typ == "boolean" {
				if b, ok := apischema.ParseBool(val); ok {
					val = b
				}
			}
			v.conf.set(k, val)
		}
	}
	return nil
}

// prepareDrive allocates "storage:SIZE" new disks and checks referenced volumes.
func (s *Sim) prepareDrive(v *vm, key, val string) (string, error) {
	first := strings.SplitN(val, ",", 2)[0]
	if m := newDiskRE.FindStringSubmatch(first); m != nil && !strings.HasPrefix(key, "unused") {
		sid := m[1]
		gb, _ := strconv.ParseFloat(m[2], 64)
		st, err := s.storageOn(v.node, sid)
		if err != nil {
			return "", err
		}
		vol, err := s.allocVolume(st, v.id, int64(gb*float64(1<<30)), "")
		if err != nil {
			return "", err
		}
		rest := ""
		if i := strings.Index(val, ","); i >= 0 {
			rest = val[i:]
		}
		return st.volid(vol.name) + rest + ",size=" + formatSize(vol.size), nil
	}
	if strings.HasSuffix(first, ":cloudinit") {
		sid := strings.TrimSuffix(first, ":cloudinit")
		st, err := s.storageOn(v.node, sid)
		if err != nil {
			return "", err
		}
		name := st.diskName(v.id, "cloudinit", st.format, false)
		st.volumes[name] = &volume{storage: sid, name: name, owner: v.id, size: 4 << 20, format: st.format, files: map[string]string{}, ctime: s.now().Unix()}
		return st.volid(name) + ",media=cdrom", nil
	}
	sid, vn, ok := driveVolume(val)
	if !ok {
		return val, nil
	}
	st, err := s.storageOn(v.node, sid)
	if err != nil {
		return "", err
	}
	vol, ok := st.volumes[vn]
	if !ok {
		return "", fmt.Errorf("volume '%s' does not exist", st.volid(vn))
	}
	if driveOpt(val, "size") == "" {
		val += ",size=" + formatSize(vol.size)
	}
	return val, nil
}

// detachDrive removes a drive key. Owned volumes become unusedN unless destroy is
// set; foreign volumes (a workspace holder's disk) are only unreferenced.
func (s *Sim) detachDrive(v *vm, key, val string, destroy bool) error {
	sid, vn, ok := driveVolume(val)
	v.conf.del(key)
	if !ok {
		return nil
	}
	st, err := s.storageOn(v.node, sid)
	if err != nil {
		return nil
	}
	if ownerOf(vn) != v.id {
		return nil
	}
	if strings.Contains(vn, "cloudinit") {
		delete(st.volumes, vn)
		return nil
	}
	if destroy {
		for _, sn := range v.snapshots {
			for _, sv := range sn.conf.vals {
				if _, svn, ok := driveVolume(sv); ok && svn == vn {
					return fmt.Errorf("unable to delete '%s' - volume is still in use (snapshot?)", st.volid(vn))
				}
			}
		}
		delete(st.volumes, vn)
		return nil
	}
	for i := 0; i < 256; i++ {
		k := fmt.Sprintf("unused%d", i)
		if _, used := v.conf.get(k); !used {
			v.conf.set(k, st.volid(vn))
			return nil
		}
	}
	return fmt.Errorf("Too many unused volumes - please delete them first.")
}

// withMAC fills in a generated MAC (upper-case, BC:24:11 prefix) when none is given.
func (s *Sim) withMAC(val string) string {
	parts := strings.Split(val, ",")
	model := parts[0]
	if strings.Contains(model, "=") {
		k, mac, _ := strings.Cut(model, "=")
		if k == "model" {
			parts[0] = k + "=" + mac
			return strings.Join(parts, ",")
		}
		return val
	}
	parts[0] = model + "=" + s.randomMAC()
	return strings.Join(parts, ",")
}

func (s *Sim) randomMAC() string {
	return fmt.Sprintf("BC:24:11:%02X:%02X:%02X", s.rnd.Intn(256), s.rnd.Intn(256), s.rnd.Intn(256))
}

func (s *Sim) postConfig(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	if err := s.configPrecheck(req, v); err != nil {
		return nil, err
	}
	upid := s.startTask(req, v.node, "qmconfig", strconv.Itoa(v.id), func(w *worker) error {
		if err := w.flock(v.id, 10*time.Second); err != nil {
			return err
		}
		if err := w.wait(); err != nil {
			return err
		}
		if !req.has("skiplock") {
			if err := checkLock(v); err != nil {
				return err
			}
		}
		return s.applyConfig(req, v, w)
	})
	if req.has("background_delay") && !s.tasks[upid].running && s.tasks[upid].exitstatus == "OK" {
		return nil, nil
	}
	return upid, nil
}

func (s *Sim) putConfig(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	if err := s.configPrecheck(req, v); err != nil {
		return nil, err
	}
	if err := s.syncFlock(v); err != nil {
		return nil, err
	}
	return nil, s.applyConfig(req, v, nil)
}

// syncFlock waits, with the state lock released, until no task holds the VM's
// config flock (10 s, as lock_config's default).
func (s *Sim) syncFlock(v *vm) error {
	deadline := time.Now().Add(10 * time.Second)
	for v.flock != nil || len(v.shared) > 0 {
		if time.Now().After(deadline) {
			return errf("can't lock file '/var/lock/qemu-server/lock-%d.conf' - got timeout", v.id)
		}
		s.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		s.mu.Lock()
	}
	return nil
}

// cloneVM follows clone_vm: sync checks, then a qmclone worker that writes the target
// config with lock=clone, copies or links each disk, regenerates MACs and unlocks.
func (s *Sim) cloneVM(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	src, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	newid := req.intv("newid")
	if newid == src.id {
		return nil, paramErr(map[string]string{"newid": "source and target VMID are the same"})
	}
	if err := checkLock(src); err != nil {
		return nil, err
	}
	snapname := req.str("snapname")
	srcConf := src.conf
	if snapname != "" {
		sn, ok := src.snapshots[snapname]
		if !ok {
			return nil, errf("snapshot '%s' does not exist", snapname)
		}
		srcConf = sn.conf
	}
	full := !src.isTemplate()
	if req.has("full") {
		full = req.boolv("full")
	}
	if !full {
		if req.has("storage") {
			return nil, errf("parameter 'storage' not allowed for linked clones")
		}
		if req.has("format") {
			return nil, errf("parameter 'format' not allowed for linked clones")
		}
	}
	if t := req.str("target"); t != "" && t != src.node {
		if err := s.checkNode(t); err != nil {
			return nil, err
		}
		return nil, errf("Can't clone to other node '%s' with local storage", t)
	}
	var featureErr error
	src.disks(srcConf, func(k, sid, vn string) {
		if featureErr != nil || strings.HasPrefix(k, "unused") {
			return
		}
		st, err := s.storageOn(src.node, sid)
		if err != nil {
			featureErr = err
			return
		}
		vol := st.volumes[vn]
		if vol == nil {
			featureErr = fmt.Errorf("volume '%s' does not exist", st.volid(vn))
			return
		}
		of := ""
		if snapname != "" {
			of = " a snapshot of"
		}
		cloudinit := strings.Contains(vn, "cloudinit")
		if full || cloudinit || k == "tpmstate0" {
			if !st.feature("copy", vol, snapname != "") {
				featureErr = fmt.Errorf("Full clone feature is not supported for%s '%s' (%s)", of, st.volid(vn), k)
			}
		} else if !st.feature("clone", vol, snapname != "") {
			featureErr = fmt.Errorf("Linked clone feature is not supported for%s '%s' (%s)", of, st.volid(vn), k)
		}
	})
	if featureErr != nil {
		return nil, errf("%s", featureErr.Error())
	}
	if _, exists := s.vms[newid]; exists {
		return nil, errf("unable to create VM %d: config file already exists", newid)
	}
	targetStorage := req.str("storage")
	if targetStorage != "" {
		if _, err := s.storageOn(src.node, targetStorage); err != nil {
			return nil, err
		}
	}
	upid := s.startTask(req, src.node, "qmclone", strconv.Itoa(src.id), func(w *worker) error {
		lock := w.flock
		if !src.running {
			lock = w.flockShared
		}
		if err := lock(src.id, time.Second); err != nil {
			return err
		}
		if _, exists := s.vms[newid]; exists {
			return fmt.Errorf("unable to create VM %d: config file already exists", newid)
		}
		if err := checkLock(src); err != nil {
			return err
		}
		nc := newConfig()
		nc.set("lock", "clone")
		dst := &vm{id: newid, node: src.node, conf: nc, snapshots: map[string]*snapshot{}, agent: AgentRunning}
		// clone_vm copies the source's firewall config (clone_vmfw_conf).
		for k, v := range src.fw.options {
			if dst.fw.options == nil {
				dst.fw.options = map[string]string{}
			}
			dst.fw.options[k] = v
		}
		dst.fw.ipsets = copyIPSets(src.fw.ipsets)
		for _, r := range src.fw.rules {
			cp := fwRule{}
			for k, v := range r {
				cp[k] = v
			}
			dst.fw.rules = append(dst.fw.rules, cp)
		}
		s.vms[newid] = dst
		if err := w.flock(newid, time.Second); err != nil {
			delete(s.vms, newid)
			return err
		}
		var created []*volume
		fail := func(err error) error {
			for _, vol := range created {
				if st, e := s.storageOn(src.node, vol.storage); e == nil {
					delete(st.volumes, vol.name)
				}
			}
			delete(s.vms, newid)
			return fmt.Errorf("clone failed: %v", err)
		}
		for _, k := range srcConf.keys {
			val := srcConf.vals[k]
			switch {
			case k == "template" || k == "lock" || strings.HasPrefix(k, "unused") || k == "parent" || k == "snapstate" || k == "vmstate":
				continue
			case regexp.MustCompile(`^net\d+$`).MatchString(k):
				nc.set(k, s.replaceMAC(val))
			case k == "smbios1":
				nc.set(k, "uuid="+s.uuid())
			case k == "vmgenid":
				nc.set(k, s.uuid())
			case isDiskKey(k):
				sid, vn, ok := driveVolume(val)
				if !ok {
					nc.set(k, val)
					continue
				}
				st, _ := s.storageOn(src.node, sid)
				vol := st.volumes[vn]
				linked := !full && !strings.Contains(vn, "cloudinit") && k != "tpmstate0"
				dstSt := st
				if !linked && targetStorage != "" && !strings.Contains(vn, "cloudinit") {
					dstSt, _ = s.storageOn(src.node, targetStorage)
				}
				nv, err := s.cloneVolume(w, st, dstSt, vol, newid, snapname, linked, k)
				if err != nil {
					return fail(err)
				}
				created = append(created, nv)
				rest := ""
				if i := strings.Index(val, ","); i >= 0 {
					rest = val[i:]
				}
				nc.set(k, dstSt.volid(nv.name)+rest)
			default:
				nc.set(k, val)
			}
		}
		if name := req.str("name"); name != "" {
			nc.set("name", name)
		} else {
			nc.set("name", "Copy-of-VM-"+src.name())
		}
		if d := req.str("description"); d != "" {
			nc.set("description", d)
		}
		if err := w.wait(); err != nil {
			return fail(err)
		}
		nc.del("lock")
		return nil
	})
	return upid, nil
}

func (s *Sim) replaceMAC(val string) string {
	parts := strings.Split(val, ",")
	if k, _, ok := strings.Cut(parts[0], "="); ok {
		parts[0] = k + "=" + s.randomMAC()
	}
	return strings.Join(parts, ",")
}

func (s *Sim) cloneVolume(w *worker, src, dst *storage, vol *volume, newid int, snap string, linked bool, key string) (*volume, error) {
	files := vol.files
	if snap != "" {
		files = vol.snapData[snap]
	}
	if linked {
		w.logf("create linked clone of drive %s (%s)", key, src.volid(vol.name))
		var name string
		child := src.allocName(newid, vol.format)
		switch src.typ {
		case typeZFS:
			name = vol.name + "/" + child
		case typeDir:
			name = vol.name + "/" + child
		default:
			name = child
		}
		nv := &volume{storage: src.id, name: name, owner: newid, size: vol.size, format: vol.format,
			parent: vol.name, files: copyFiles(files), ctime: s.now().Unix()}
		src.volumes[name] = nv
		return nv, nil
	}
	w.logf("create full clone of drive %s (%s)", key, src.volid(vol.name))
	if strings.Contains(vol.name, "cloudinit") {
		name := dst.diskName(newid, "cloudinit", dst.format, false)
		nv := &volume{storage: dst.id, name: name, owner: newid, size: vol.size, format: dst.format, files: map[string]string{}, ctime: s.now().Unix()}
		dst.volumes[name] = nv
		return nv, nil
	}
	nv, err := s.allocVolume(dst, newid, vol.size, "")
	if err != nil {
		return nil, err
	}
	nv.files = copyFiles(files)
	return nv, nil
}

// allocVolume creates vm-<vmid>-disk-N on st, honouring capacity.
func (s *Sim) allocVolume(st *storage, vmid int, size int64, name string) (*volume, error) {
	if st.full || !st.thin() && st.used()+size > st.total {
		return nil, fmt.Errorf("unable to create image: not enough free space on storage '%s'", st.id)
	}
	format := st.format
	if name == "" {
		name = st.allocName(vmid, format)
	}
	vol := &volume{storage: st.id, name: name, owner: vmid, size: size, format: format,
		files: map[string]string{}, snapData: map[string]map[string]string{}, ctime: s.now().Unix()}
	st.volumes[name] = vol
	return vol, nil
}

func (s *Sim) storageOn(nodeName, sid string) (*storage, error) {
	n := s.nodes[nodeName]
	if n == nil {
		return nil, fmt.Errorf("no such node '%s'", nodeName)
	}
	st, ok := n.storages[sid]
	if !ok {
		return nil, fmt.Errorf("storage '%s' does not exist", sid)
	}
	return st, nil
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
		if err := w.flock(v.id, 10*time.Second); err != nil {
			return err
		}
		if d := req.str("digest"); d != "" && d != v.conf.digest() {
			return fmt.Errorf("checksum mismatch (file change by other user?)")
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
		v.conf.set(disk, setDriveOpt(val, "size", formatSize(newsize)))
		return nil
	}), nil
}

func (s *Sim) startVM(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	if err := checkSkiplock(req); err != nil {
		return nil, err
	}
	return s.startTask(req, v.node, "qmstart", strconv.Itoa(v.id), func(w *worker) error {
		if err := w.flock(v.id, 10*time.Second); err != nil {
			return err
		}
		if v.isTemplate() {
			return fmt.Errorf("you can't start a vm if it's a template")
		}
		if err := checkLock(v); err != nil {
			return err
		}
		if v.running {
			return fmt.Errorf("VM %d already running", v.id)
		}
		if cc, ok := v.conf.get("cicustom"); ok {
			for _, part := range strings.Split(cc, ",") {
				_, volid, _ := strings.Cut(part, "=")
				if err := s.checkSnippet(v.node, volid); err != nil {
					return err
				}
			}
		}
		if err := w.wait(); err != nil {
			return err
		}
		s.nextPID += 7
		v.running, v.started, v.pid = true, s.now(), s.nextPID
		if _, ok := v.conf.get("efidisk0"); !ok && strings.Contains(v.conf.vals["bios"], "ovmf") {
			w.warn("no efidisk configured! Using temporary efivars disk.")
		}
		return nil
	}), nil
}

func (s *Sim) checkSnippet(nodeName, volid string) error {
	sid, name, ok := strings.Cut(volid, ":")
	st, err := s.storageOn(nodeName, sid)
	if !ok || err != nil {
		return fmt.Errorf("storage '%s' does not exist", sid)
	}
	file, isSnippet := strings.CutPrefix(name, "snippets/")
	if !isSnippet || !contains(st.content, "snippets") {
		return fmt.Errorf("%s is not in the snippets directory", volid)
	}
	if _, ok := st.snippet(file); !ok {
		return fmt.Errorf("can't find file '%s'", volid)
	}
	return nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func (s *Sim) stopVM(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkNode(req.vars["node"]); err != nil {
		return nil, err
	}
	if err := checkSkiplock(req); err != nil {
		return nil, err
	}
	id := req.intv("vmid")
	return s.startTask(req, req.vars["node"], "qmstop", strconv.Itoa(id), func(w *worker) error {
		v, ok := s.vms[id]
		if !ok || v.node != req.vars["node"] {
			return fmt.Errorf("unable to find configuration file for VM %d on node '%s'", id, req.vars["node"])
		}
		if err := w.flock(v.id, 10*time.Second); err != nil {
			return err
		}
		if !req.has("skiplock") {
			if err := checkLock(v); err != nil {
				return err
			}
		}
		if !v.running {
			return nil
		}
		if err := w.wait(); err != nil {
			return err
		}
		v.running = false
		return nil
	}), nil
}

func (s *Sim) shutdownVM(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	if err := checkSkiplock(req); err != nil {
		return nil, err
	}
	return s.startTask(req, v.node, "qmshutdown", strconv.Itoa(v.id), func(w *worker) error {
		if err := w.flock(v.id, 10*time.Second); err != nil {
			return err
		}
		if err := checkLock(v); err != nil {
			return err
		}
		if !v.running {
			return nil
		}
		if err := w.wait(); err != nil {
			return err
		}
		if v.noACPI || v.agent == AgentHung {
			if req.boolv("forceStop") {
				v.running = false
				return nil
			}
			return fmt.Errorf("VM quit/powerdown failed - got timeout")
		}
		v.running = false
		return nil
	}), nil
}

func (s *Sim) rebootVM(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	if !v.running {
		return nil, errf("VM %d not running", v.id)
	}
	return s.startTask(req, v.node, "qmreboot", strconv.Itoa(v.id), func(w *worker) error {
		if err := w.wait(); err != nil {
			return err
		}
		v.started = s.now()
		return nil
	}), nil
}

// destroyVM frees every owned referenced volume (unusedN included) and skips
// volumes owned by other VMIDs, as destroy_vm does.
func (s *Sim) destroyVM(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	if err := checkSkiplock(req); err != nil {
		return nil, err
	}
	if p, _ := v.conf.get("protection"); p == "1" {
		return nil, errf("can't remove VM %d - protection mode enabled", v.id)
	}
	if v.running {
		return nil, errf("VM %d is running - destroy failed", v.id)
	}
	return s.startTask(req, v.node, "qmdestroy", strconv.Itoa(v.id), func(w *worker) error {
		if err := w.flock(v.id, 10*time.Second); err != nil {
			return err
		}
		if s.vms[v.id] != v {
			return fmt.Errorf("Configuration file '%s' does not exist", v.confPath())
		}
		if v.running {
			return fmt.Errorf("VM %d is running - destroy failed", v.id)
		}
		if l := v.lock(); l != "" && l != "suspended" && !req.has("skiplock") {
			return fmt.Errorf("VM is locked (%s)", l)
		}
		if v.isTemplate() {
			if err := s.checkBaseUnused(v); err != nil {
				return err
			}
		}
		if err := w.wait(); err != nil {
			return err
		}
		owned := map[string]bool{}
		collect := func(c *config) {
			v.disks(c, func(k, sid, vn string) {
				if ownerOf(vn) == v.id {
					owned[sid+":"+vn] = true
				}
			})
		}
		collect(v.conf)
		for _, sn := range v.snapshots {
			collect(sn.conf)
		}
		for volid := range owned {
			sid, vn, _ := strings.Cut(volid, ":")
			st, _ := s.storageOn(v.node, sid)
			if st != nil {
				delete(st.volumes, vn)
				w.logf("Removing image: %s", volid)
			}
		}
		if req.boolv("destroy-unreferenced-disks") {
			for _, st := range s.nodes[v.node].storages {
				for name, vol := range st.volumes {
					if vol.owner == v.id && !vol.isBase {
						delete(st.volumes, name)
					}
				}
			}
		}
		delete(s.vms, v.id)
		return nil
	}), nil
}

func (s *Sim) checkBaseUnused(v *vm) error {
	var err error
	v.disks(v.conf, func(k, sid, vn string) {
		st, _ := s.storageOn(v.node, sid)
		if st == nil || err != nil {
			return
		}
		for _, other := range st.volumes {
			if other.parent == vn {
				err = fmt.Errorf("base volume '%s' is still in use by linked clones", vn)
			}
		}
	})
	return err
}

// template converts a VM into a template, renaming its disks to base-<vmid>-disk-N.
func (s *Sim) template(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	if err := checkLock(v); err != nil {
		return nil, err
	}
	if v.isTemplate() {
		return nil, errf("you can't convert a template to a template")
	}
	if v.running {
		return nil, errf("you can't convert a VM to template if VM is running")
	}
	if len(v.snapshots) > 0 {
		return nil, errf("unable to create template, because VM contains snapshots")
	}
	return s.startTask(req, v.node, "qmtemplate", strconv.Itoa(v.id), func(w *worker) error {
		if err := w.wait(); err != nil {
			return err
		}
		s.makeTemplate(v)
		return nil
	}), nil
}

func (s *Sim) makeTemplate(v *vm) {
	v.disks(v.conf, func(k, sid, vn string) {
		if strings.Contains(vn, "cloudinit") || strings.HasPrefix(k, "unused") {
			return
		}
		st, _ := s.storageOn(v.node, sid)
		vol := st.volumes[vn]
		if vol == nil {
			return
		}
		nn := strings.Replace(vn, fmt.Sprintf("vm-%d-", v.id), fmt.Sprintf("base-%d-", v.id), 1)
		delete(st.volumes, vn)
		vol.name, vol.isBase = nn, true
		st.volumes[nn] = vol
		v.conf.set(k, strings.Replace(v.conf.vals[k], sid+":"+vn, sid+":"+nn, 1))
	})
	v.conf.set("template", "1")
}

// unlink detaches (and with force destroys) disks; PVE returns null, not a task.
func (s *Sim) unlink(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	if err := checkLock(v); err != nil {
		return nil, err
	}
	for _, k := range splitConfigList(req.str("idlist")) {
		if val, ok := v.conf.get(k); ok {
			if err := s.detachDrive(v, k, val, req.boolv("force") || strings.HasPrefix(k, "unused")); err != nil {
				return nil, err
			}
		}
	}
	return nil, nil
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

// Guest agent: the three canonical errors in assert_agent_available's order.
func (s *Sim) agentCheck(req *request) (*vm, error) {
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	a, ok := v.conf.get("agent")
	if !ok || !agentEnabled(a) {
		return nil, errf("No QEMU guest agent configured")
	}
	if !v.running {
		return nil, errf("VM %d is not running", v.id)
	}
	switch v.agent {
	case AgentNotRunning:
		return nil, errf("QEMU guest agent is not running")
	case AgentHung:
		return nil, errf("VM %d qmp command 'guest-ping' failed - got timeout", v.id)
	}
	if s.now().Sub(v.started) < s.opts.AgentBootDelay {
		return nil, errf("QEMU guest agent is not running")
	}
	return v, nil
}

func (s *Sim) agentPing(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.agentCheck(req); err != nil {
		return nil, err
	}
	return map[string]any{"result": map[string]any{}}, nil
}

func (s *Sim) agentOSInfo(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.agentCheck(req); err != nil {
		return nil, err
	}
	return map[string]any{"result": map[string]any{"id": "ubuntu", "name": "Ubuntu", "pretty-name": "Ubuntu 24.04.3 LTS",
		"version": "24.04.3 LTS (Noble Numbat)", "version-id": "24.04", "kernel-release": "6.8.0-85-generic",
		"kernel-version": "#85-Ubuntu SMP PREEMPT_DYNAMIC", "machine": "x86_64"}}, nil
}

// GuestIP is the address a VM's guest reports once DHCP is done: 10.77.x.y derived from the VMID.
func GuestIP(vmid int) string {
	return fmt.Sprintf("10.77.%d.%d", (vmid/250)%250, vmid%250+2)
}

func (s *Sim) agentInterfaces(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.agentCheck(req)
	if err != nil {
		return nil, err
	}
	stats := map[string]any{"rx-bytes": 1024, "rx-packets": 10, "rx-errs": 0, "rx-dropped": 0,
		"tx-bytes": 2048, "tx-packets": 12, "tx-errs": 0, "tx-dropped": 0}
	ifaces := []map[string]any{{"name": "lo", "hardware-address": "00:00:00:00:00:00", "statistics": stats,
		"ip-addresses": []map[string]any{{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
			{"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128}}}}
	for _, k := range v.conf.keys {
		if !regexp.MustCompile(`^net\d+$`).MatchString(k) {
			continue
		}
		idx, _ := strconv.Atoi(strings.TrimPrefix(k, "net"))
		mac := ""
		if _, m, ok := strings.Cut(strings.Split(v.conf.vals[k], ",")[0], "="); ok {
			mac = strings.ToLower(m)
		}
		addrs := []map[string]any{{"ip-address-type": "ipv6", "ip-address": "fe80::be24:11ff:fe00:" + strconv.Itoa(v.id%9999), "prefix": 64}}
		if idx == 0 && s.now().Sub(v.started) >= s.opts.AgentBootDelay+s.opts.DHCPDelay {
			addrs = append([]map[string]any{{"ip-address-type": "ipv4", "ip-address": guestIPv4(v), "prefix": guestPrefix(v)}}, addrs...)
		}
		ifaces = append(ifaces, map[string]any{"name": fmt.Sprintf("eth%d", idx), "hardware-address": mac,
			"ip-addresses": addrs, "statistics": stats})
	}
	return map[string]any{"result": ifaces}, nil
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
	v := &vm{id: id, node: req.vars["node"], conf: newConfig(), snapshots: map[string]*snapshot{}, agent: AgentRunning}
	v.conf.set("lock", "create")
	s.vms[id] = v
	return s.startTask(req, v.node, "qmcreate", strconv.Itoa(id), func(w *worker) error {
		if err := w.flock(id, 10*time.Second); err != nil {
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
		if _, ok := v.conf.get("smbios1"); !ok {
			v.conf.set("smbios1", "uuid="+s.uuid())
		}
		return nil
	}), nil
}
