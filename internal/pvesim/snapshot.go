package pvesim

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

func (s *Sim) listSnapshots(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	out := []map[string]any{}
	for _, name := range v.snapOrder {
		sn := v.snapshots[name]
		m := map[string]any{"name": name, "snaptime": sn.snaptime, "description": sn.description}
		if sn.vmstate {
			m["vmstate"] = 1
		}
		if sn.parent != "" {
			m["parent"] = sn.parent
		}
		if sn.snapstate != "" {
			m["snapstate"] = sn.snapstate
		}
		out = append(out, m)
	}
	cur := map[string]any{"name": "current", "digest": v.digest(), "description": "You are here!", "running": 0}
	if v.running {
		cur["running"] = 1
	}
	if v.parent != "" {
		cur["parent"] = v.parent
	}
	return append(out, cur), nil
}

func (s *Sim) snapshotConfig(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	sn, ok := v.snapshots[req.vars["snapname"]]
	if !ok {
		return nil, errf("snapshot '%s' does not exist", req.vars["snapname"])
	}
	out := renderConfig(sn.conf)
	out["snaptime"] = sn.snaptime
	if sn.parent != "" {
		out["parent"] = sn.parent
	}
	out["digest"] = sn.conf.digest()
	return out, nil
}

// updateSnapshotConfig is qemu-server's update_snapshot_config: under the
// config flock, check_lock, the snapshot must exist, only its description
// changes (when given); the answer is null.
func (s *Sim) updateSnapshotConfig(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	if err := s.syncFlock(v); err != nil {
		return nil, err
	}
	if err := checkLock(v); err != nil {
		return nil, err
	}
	sn, ok := v.snapshots[req.vars["snapname"]]
	if !ok {
		return nil, errf("snapshot '%s' does not exist", req.vars["snapname"])
	}
	if req.has("description") {
		sn.description = req.str("description")
	}
	return nil, nil
}

// snapshotVolumes lists the volumes a VM snapshot covers: every drive but CD-ROMs
// and unusedN.
func (s *Sim) snapshotVolumes(v *vm, c *config) []*volume {
	var vols []*volume
	v.disks(c, func(k, sid, vn string) {
		if strings.HasPrefix(k, "unused") || strings.Contains(vn, "cloudinit") {
			return
		}
		if st, _ := s.storageOn(v.node, sid); st != nil && st.volumes[vn] != nil {
			vols = append(vols, st.volumes[vn])
		}
	})
	return vols
}

func (s *Sim) createSnapshot(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	name := req.str("snapname")
	if name == "current" || name == "pending" {
		return nil, errf("unable to use snapshot name '%s' (reserved name)", name)
	}
	return s.startTask(req, v.node, "qmsnapshot", strconv.Itoa(v.id), func(w *worker) error {
		if err := w.lockVM(v, configLockTimeout); err != nil {
			return err
		}
		if v.isTemplate() {
			return fmt.Errorf("you can't take a snapshot if it's a template")
		}
		if err := checkLock(v); err != nil {
			return err
		}
		if _, used := v.snapshots[name]; used {
			return fmt.Errorf("snapshot name '%s' already used", name)
		}
		for _, vol := range s.snapshotVolumes(v, v.conf) {
			st, _ := s.storageOn(v.node, vol.storage)
			if !st.feature("snapshot", vol, false) {
				return fmt.Errorf("snapshot feature is not available")
			}
		}
		sn := &snapshot{name: name, conf: v.conf.clone(), snaptime: s.now().Unix(),
			description: req.str("description"), parent: v.parent, snapstate: "prepare",
			// qemu-server saves the RAM only of a running VM ($running in snapshot_create).
			vmstate: req.boolv("vmstate") && v.running}
		v.snapshots[name] = sn
		v.snapOrder = append(v.snapOrder, name)
		v.conf.set("lock", "snapshot")
		// __snapshot_prepare ends here and releases the flock; the volume
		// snapshots run without it, guarded only by "lock: snapshot", so a stop
		// now fails check_lock with "VM is locked (snapshot)".
		w.unlock(v.id)
		cleanup := func() {
			delete(v.snapshots, name)
			v.snapOrder = v.snapOrder[:len(v.snapOrder)-1]
			v.conf.del("lock")
		}
		if err := w.wait(); err != nil {
			cleanup()
			return err
		}
		vols := s.snapshotVolumes(v, v.conf)
		for _, vol := range vols {
			if err := s.volumeSnapshot(vol, name); err != nil {
				w.logf("snapshot create failed: starting cleanup")
				cleanup()
				return err
			}
		}
		for _, vol := range vols {
			if vol.snapData == nil {
				vol.snapData = map[string]map[string]string{}
			}
			vol.snapData[name] = copyFiles(vol.files)
			vol.snaps = append(vol.snaps, name)
		}
		// __snapshot_commit takes the flock again.
		if err := w.lockVM(v, configLockTimeout); err != nil {
			return err
		}
		sn.snapstate = ""
		v.parent = name
		v.conf.del("lock")
		return nil
	}), nil
}

// volumeSnapshot refuses a snapshot name the volume already carries, as the
// storage tools do: zfs snapshot (ZFSPoolPlugin volume_snapshot, run_command
// errmsg "zfs error") and lvcreate (LvmThinPlugin volume_snapshot). The pool and
// volume group names (rpool/data, pve) are PVE's installer defaults.
func (s *Sim) volumeSnapshot(vol *volume, name string) error {
	if !contains(vol.snaps, name) {
		return nil
	}
	st, _ := s.storageOn(s.nodeOfStorageVolume(vol), vol.storage)
	switch {
	case st != nil && st.typ == typeZFS:
		return fmt.Errorf("zfs error: cannot create snapshot 'rpool/data/%s@%s': dataset already exists", baseName(vol.name), name)
	case st != nil && st.typ == typeLVMThin:
		snap := fmt.Sprintf("snap_%s_%s", vol.name, name)
		return fmt.Errorf("lvcreate snapshot 'pve/%s' error:   Logical Volume \"%s\" already exists in volume group \"pve\"", snap, snap)
	}
	return fmt.Errorf("snapshot '%s' already exists on volume '%s'", name, vol.name)
}

// nodeOfStorageVolume finds the node holding vol (volumes are node-local).
func (s *Sim) nodeOfStorageVolume(vol *volume) string {
	for name, n := range s.nodes {
		if st := n.storages[vol.storage]; st != nil && st.volumes[vol.name] == vol {
			return name
		}
	}
	return s.Node()
}

func (s *Sim) rollback(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	name := req.vars["snapname"]
	return s.startTask(req, v.node, "qmrollback", strconv.Itoa(v.id), func(w *worker) error {
		if err := w.lockVM(v, configLockTimeout); err != nil {
			return err
		}
		if v.isTemplate() {
			return fmt.Errorf("you can't rollback if vm is a template")
		}
		sn, ok := v.snapshots[name]
		if !ok {
			return fmt.Errorf("snapshot '%s' does not exist", name)
		}
		for _, vol := range s.snapshotVolumes(v, sn.conf) {
			st, _ := s.storageOn(v.node, vol.storage)
			if st.typ == typeZFS && len(vol.snaps) > 0 && vol.snaps[len(vol.snaps)-1] != name {
				return fmt.Errorf("can't rollback, '%s' is not most recent snapshot on '%s'", name, st.volid(vol.name))
			}
		}
		if sn.snapstate != "" {
			return fmt.Errorf("unable to rollback to incomplete snapshot (snapstate = %s)", sn.snapstate)
		}
		if err := checkLock(v); err != nil {
			return err
		}
		if v.running {
			w.logf("stopping VM %d before rollback", v.id)
			v.running = false
		}
		v.conf.set("lock", "rollback")
		if err := w.wait(); err != nil {
			return err
		}
		for _, vol := range s.snapshotVolumes(v, sn.conf) {
			vol.files = copyFiles(vol.snapData[name])
		}
		v.conf = rollbackConfig(v, v.conf, sn.conf)
		v.parent = name
		if req.boolv("start") || sn.vmstate {
			v.running, v.started, v.awake = true, s.now(), sn.vmstate
		}
		return nil
	}), nil
}

// rollbackConfig is the config a rollback writes (AbstractConfig
// snapshot_rollback): the snapshot's, but with the current description and
// unusedN kept (__snapshot_apply_config), and every volume the current
// config references that the snapshot does not added as unusedN
// (QemuConfig __snapshot_rollback_get_unused, add_unused_volume), whoever
// owns it: a disk plugged after the snapshot is no longer attached.
func rollbackConfig(v *vm, cur, snap *config) *config {
	nc := snap.clone()
	for _, k := range append([]string(nil), nc.keys...) {
		if k == "description" || strings.HasPrefix(k, "unused") {
			nc.del(k)
		}
	}
	for _, k := range cur.keys {
		if k == "description" || strings.HasPrefix(k, "unused") {
			nc.set(k, cur.vals[k])
		}
	}
	volids := func(c *config) map[string]bool {
		out := map[string]bool{}
		v.disks(c, func(k, sid, vn string) {
			if strings.HasPrefix(k, "unused") || strings.Contains(c.vals[k], "media=cdrom") || strings.Contains(vn, "cloudinit") {
				return
			}
			out[sid+":"+vn] = true
		})
		return out
	}
	inSnap := volids(snap)
	unused := map[string]bool{}
	for _, k := range nc.keys {
		if strings.HasPrefix(k, "unused") {
			unused[nc.vals[k]] = true
		}
	}
	for _, k := range cur.keys {
		sid, vn, ok := driveVolume(cur.vals[k])
		volid := sid + ":" + vn
		if !ok || !isDiskKey(k) || strings.HasPrefix(k, "unused") || strings.Contains(cur.vals[k], "media=cdrom") || strings.Contains(vn, "cloudinit") || inSnap[volid] || unused[volid] {
			continue
		}
		for i := 0; i < 256; i++ {
			if _, used := nc.get(fmt.Sprintf("unused%d", i)); !used {
				nc.set(fmt.Sprintf("unused%d", i), volid)
				unused[volid] = true
				break
			}
		}
	}
	return nc
}

func (s *Sim) deleteSnapshot(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	name := req.vars["snapname"]
	return s.startTask(req, v.node, "qmdelsnapshot", strconv.Itoa(v.id), func(w *worker) error {
		if err := w.lockVM(v, configLockTimeout); err != nil {
			return err
		}
		if v.isTemplate() {
			return fmt.Errorf("you can't delete a snapshot if vm is a template")
		}
		sn, ok := v.snapshots[name]
		if !ok {
			return fmt.Errorf("snapshot '%s' does not exist", name)
		}
		if err := checkLock(v); err != nil && !req.boolv("force") {
			return err
		}
		v.conf.set("lock", "snapshot-delete")
		if err := w.wait(); err != nil {
			v.conf.del("lock")
			return err
		}
		for _, vol := range s.snapshotVolumes(v, sn.conf) {
			delete(vol.snapData, name)
			for i, n := range vol.snaps {
				if n == name {
					vol.snaps = append(vol.snaps[:i], vol.snaps[i+1:]...)
					break
				}
			}
		}
		for _, other := range v.snapshots {
			if other.parent == name {
				other.parent = sn.parent
			}
		}
		if v.parent == name {
			v.parent = sn.parent
		}
		delete(v.snapshots, name)
		for i, n := range v.snapOrder {
			if n == name {
				v.snapOrder = append(v.snapOrder[:i], v.snapOrder[i+1:]...)
				break
			}
		}
		v.conf.del("lock")
		return nil
	}), nil
}

// moveDisk implements both modes of move_disk; reassign renames the volume to the
// target's next free disk name, so its volid changes.
func (s *Sim) moveDisk(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	disk := req.str("disk")
	hasTarget, hasStorage := req.has("target-vmid"), req.has("storage")
	switch {
	case hasTarget && hasStorage:
		return nil, paramErr(map[string]string{"target-vmid": "either set 'storage' or 'target-vmid', but not both", "storage": "either set 'storage' or 'target-vmid', but not both"})
	case !hasTarget && !hasStorage:
		return nil, paramErr(map[string]string{"target-vmid": "both 'storage' and 'target-vmid' missing, either needs to be set", "storage": "both 'storage' and 'target-vmid' missing, either needs to be set"})
	case hasStorage:
		return nil, errf("move_disk to another storage is not simulated")
	}
	tid := req.intv("target-vmid")
	if tid == v.id {
		return nil, paramErr(map[string]string{"target-vmid": "must be different than source VMID to reassign disk"})
	}
	tdisk := req.str("target-disk")
	if tdisk == "" {
		tdisk = disk
	}
	check := func() (*vm, *storage, *volume, error) {
		t, ok := s.vms[tid]
		if !ok {
			return nil, nil, nil, fmt.Errorf("could not find target VM %d", tid)
		}
		if t.node != v.node {
			return nil, nil, nil, fmt.Errorf("Both VMs need to be on the same node (%s != %s)", v.node, t.node)
		}
		if err := checkLock(v); err != nil {
			return nil, nil, nil, err
		}
		if err := checkLock(t); err != nil {
			return nil, nil, nil, err
		}
		if v.isTemplate() || t.isTemplate() {
			return nil, nil, nil, fmt.Errorf("Can't move disks from or to template VMs")
		}
		val, ok := v.conf.get(disk)
		if !ok {
			return nil, nil, nil, fmt.Errorf("Disk '%s' for VM '%d' does not exist", disk, v.id)
		}
		if _, used := t.conf.get(tdisk); used {
			return nil, nil, nil, fmt.Errorf("Target disk key '%s' is already in use for VM '%d'", tdisk, t.id)
		}
		sid, vn, ok := driveVolume(val)
		if !ok {
			return nil, nil, nil, fmt.Errorf("CD drive contents can't be moved to another VM")
		}
		st, _ := s.storageOn(v.node, sid)
		vol := st.volumes[vn]
		if vol == nil {
			return nil, nil, nil, fmt.Errorf("Volume '%s' not managed by PVE", st.volid(vn))
		}
		for _, sn := range v.snapshots {
			for _, sv := range sn.conf.vals {
				if _, svn, ok := driveVolume(sv); ok && svn == vn {
					return nil, nil, nil, fmt.Errorf("Can't move disk used by a snapshot to another VM")
				}
			}
		}
		if !st.feature("rename", vol, false) {
			return nil, nil, nil, fmt.Errorf("Storage does not support moving of this disk to another VM")
		}
		if v.running && !strings.HasPrefix(disk, "unused") {
			return nil, nil, nil, fmt.Errorf("Cannot move disk to another VM while the source VM is running - detach first")
		}
		return t, st, vol, nil
	}
	if _, _, _, err := check(); err != nil {
		return nil, errf("%s", err.Error())
	}
	id := fmt.Sprintf("%d-%s>%d-%s", v.id, disk, tid, tdisk)
	return s.startTask(req, v.node, "qmmove", id, func(w *worker) error {
		if err := w.lockVM(v, configLockTimeout); err != nil {
			return err
		}
		if err := w.flock(tid, configLockTimeout); err != nil {
			return err
		}
		t, st, vol, err := check()
		if err != nil {
			return err
		}
		val := v.conf.vals[disk]
		v.conf.del(disk)
		if err := w.wait(); err != nil {
			v.conf.set(disk, val)
			return err
		}
		newName := st.allocName(tid, vol.format)
		delete(st.volumes, vol.name)
		old := st.volid(vol.name)
		vol.name, vol.owner = newName, tid
		st.volumes[newName] = vol
		w.logf("rename volume %s to %s", old, st.volid(newName))
		rest := ""
		if i := strings.Index(val, ","); i >= 0 && !strings.HasPrefix(tdisk, "unused") {
			rest = val[i:]
		}
		t.conf.set(tdisk, st.volid(newName)+rest)
		if boot, ok := v.conf.get("boot"); ok {
			v.conf.set("boot", strings.ReplaceAll(strings.ReplaceAll(boot, ";"+disk, ""), disk+";", ""))
		}
		return nil
	}), nil
}

// volumeSnapshots is used by the state dump.
func volumeSnapshots(vol *volume) []string {
	out := append([]string(nil), vol.snaps...)
	sort.Strings(out)
	return out
}
