package pvesim

// Clone: clone_vm (PVE::API2::Qemu) and clone_disk, plus volume allocation.

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// cloneVM follows clone_vm: sync checks, then a qmclone worker that writes the target
// config with lock=clone, copies or links each disk, regenerates MACs and unlocks.
func (s *Sim) cloneVM(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	src, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	// clone_vm's load_and_check: target node, storage, quorum, then the
	// source's config (vmFor above stands for load_config).
	target := req.str("target")
	if target == src.node || target == "localhost" {
		target = ""
	}
	if target != "" {
		if _, ok := s.nodes[target]; !ok {
			return nil, errf("no such cluster node '%s'", target) // PVE::Cluster::check_node_exists
		}
	}
	if sid := req.str("storage"); sid != "" {
		st, err := s.storageOn(src.node, sid)
		if err != nil {
			return nil, errf("storage '%s' does not exist", sid) // PVE::Storage::storage_config
		}
		if !contains(st.content, "images") {
			return nil, paramErr(map[string]string{"storage": fmt.Sprintf("storage '%s' does not support vm images", sid)})
		}
		if target != "" {
			if _, err := s.storageOn(target, sid); err != nil {
				return nil, errf("storage '%s' is not available on node '%s'", sid, target) // storage_check_node
			}
			if !st.shared {
				return nil, errf("can't clone to non-shared storage '%s'", sid)
			}
		}
	}
	if target != "" {
		if err := s.checkQuorum(); err != nil {
			return nil, err
		}
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
	if target != "" && !s.allShared(src, srcConf) {
		return nil, errf("can't clone VM to node '%s' (VM uses local storage)", target)
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
		if err := lock(src.id, cloneLockTimeout); err != nil {
			return err
		}
		if s.vms[src.id] != src {
			return fmt.Errorf("Configuration file '%s' does not exist", src.confPath())
		}
		if _, exists := s.vms[newid]; exists {
			return fmt.Errorf("unable to create VM %d: config file already exists", newid)
		}
		if err := checkLock(src); err != nil {
			return err
		}
		nc := newConfig()
		nc.set("lock", "clone")
		// clone_vm first writes a placeholder config ("# qmclone temporary
		// file\nlock: clone\n", whose comment reads back as the description)
		// and writes the real one only once the disks are copied. Readers
		// during the copy see no name, tags or description of the request.
		tmp := newConfig()
		tmp.set("lock", "clone")
		tmp.set("description", " qmclone temporary file\n")
		dst := &vm{id: newid, node: src.node, conf: tmp, snapshots: map[string]*snapshot{}, agent: AgentRunning}
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
		if err := w.flock(newid, cloneLockTimeout); err != nil {
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
				// clone_disk allocates every copied drive, the cloud-init one
				// included, on the target storage of a full clone.
				if !linked && targetStorage != "" {
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
		dst.conf = nc
		if target != "" {
			// clone_vm renames the finished config into the target node's
			// directory (nodes/<target>/qemu-server/<newid>.conf).
			dst.node = target
		}
		if p := s.pools[req.str("pool")]; p != nil {
			p.vms[newid] = true // clone_vm: add_vm_to_pool
		}
		nc.del("lock")
		return nil
	})
	return upid, nil
}

// allShared is check_storage_access_clone's $sharedvm: every volume of the
// config (cloud-init and other cdrom images included) is on shared storage.
func (s *Sim) allShared(v *vm, c *config) bool {
	shared := true
	v.disks(c, func(k, sid, vn string) {
		if strings.HasPrefix(k, "unused") {
			return // foreach_volume skips unused disks
		}
		if st, err := s.storageOn(v.node, sid); err != nil || !st.shared {
			shared = false
		}
	})
	return shared
}

// cloneVolume is clone_disk's storage call: vdisk_clone for a linked
// clone, vdisk_alloc for a copy, each under the storage lock (lockStorage)
// of the storage it creates the volume on.
func (s *Sim) cloneVolume(w *worker, src, dst *storage, vol *volume, newid int, snap string, linked bool, key string) (*volume, error) {
	on := dst
	if linked {
		on = src
	}
	var nv *volume
	err := w.lockStorage(on, func() (err error) {
		nv, err = s.createCloneVolume(w, src, dst, vol, newid, snap, linked, key)
		return err
	})
	return nv, err
}

func (s *Sim) createCloneVolume(w *worker, src, dst *storage, vol *volume, newid int, snap string, linked bool, key string) (*volume, error) {
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
