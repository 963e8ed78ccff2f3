package pvesim

// Migration: migrate_vm (PVE::API2::Qemu) and PVE::QemuMigrate, within one
// cluster. Offline migration moves the config and copies every local
// volume to the target (storage_migrate); volumes on shared storage stay
// where they are. A running VM migrates only with online=1, and its
// attached local disks only with with-local-disks=1 (scan_local_volumes).

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// storageMap is PVE::JSONSchema::parse_idmap for pve-targetstorage: "1"
// maps every storage to itself, "sid" maps all to sid, "a:b,c:d" pairs.
type storageMap struct {
	entries  map[string]string
	def      string
	identity bool
}

func parseStorageMap(s string) (storageMap, error) {
	m := storageMap{entries: map[string]string{}}
	if s == "1" {
		m.identity = true
		return m, nil
	}
	for _, item := range strings.Split(s, ",") {
		src, dst, pair := strings.Cut(item, ":")
		switch {
		case !pair && m.def != "":
			return m, fmt.Errorf("default target ID can only be provided once")
		case !pair:
			m.def = item
		default:
			if _, dup := m.entries[src]; dup {
				return m, fmt.Errorf("duplicate mapping for source '%s'", src)
			}
			m.entries[src] = dst
		}
	}
	return m, nil
}

// mapID is PVE::JSONSchema::map_id.
func (m storageMap) mapID(sid string) string {
	if m.identity {
		return sid
	}
	if d, ok := m.entries[sid]; ok {
		return d
	}
	if m.def != "" {
		return m.def
	}
	return sid
}

func (s *Sim) migrateVM(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkNode(req.vars["node"]); err != nil {
		return nil, err
	}
	target := req.str("target")
	if target == req.vars["node"] {
		return nil, paramErr(map[string]string{"target": "target is local node."})
	}
	if err := s.checkQuorum(); err != nil {
		return nil, err
	}
	if _, ok := s.nodes[target]; !ok {
		return nil, errf("no such cluster node '%s'", target) // PVE::Cluster::check_node_exists
	}
	root := req.user == "root@pam" && req.tokenID == ""
	for _, k := range []string{"force", "migration_type", "migration_network"} {
		if req.has(k) && !root && (k != "force" || req.boolv(k)) {
			return nil, paramErr(map[string]string{k: "Only root may use this option."})
		}
	}
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	if err := checkLock(v); err != nil {
		return nil, err
	}
	online := req.boolv("online")
	if v.running && !online {
		return nil, errf("can't migrate running VM without --online")
	}
	if !v.running {
		online = false // "VM isn't running. Doing offline migration instead."
	}
	smap := storageMap{}
	if ts := req.str("targetstorage"); ts != "" {
		if smap, err = parseStorageMap(ts); err != nil {
			return nil, paramErr(map[string]string{"targetstorage": "failed to parse storage map: " + err.Error()})
		}
		// $check_storage_access_migrate for every target storage.
		targets := []string{}
		for _, d := range smap.entries {
			targets = append(targets, d)
		}
		if smap.def != "" {
			targets = append(targets, smap.def)
		}
		sort.Strings(targets)
		for _, sid := range targets {
			st, err := s.storageOn(target, sid)
			if err != nil {
				if _, e := s.storageOn(s.Node(), sid); e != nil {
					return nil, errf("storage '%s' does not exist", sid)
				}
				return nil, errf("storage '%s' is not available on node '%s'", sid, target)
			}
			if !contains(st.content, "images") {
				return nil, errf("storage '%s' does not support vm images", sid)
			}
		}
	}
	if smap.entries == nil || smap.identity {
		// check_storage_availability: every volume's storage on both nodes.
		var availErr error
		v.disks(v.conf, func(k, sid, vn string) {
			if availErr != nil || strings.HasPrefix(k, "unused") {
				return
			}
			if _, err := s.storageOn(target, sid); err != nil {
				availErr = errf("storage '%s' is not available on node '%s'", sid, target)
			}
		})
		if availErr != nil {
			return nil, availErr
		}
	}
	withLocal := req.boolv("with-local-disks")
	src := v.node
	return s.startTask(req, src, "qmigrate", strconv.Itoa(v.id), func(w *worker) error {
		return s.runMigration(w, v, src, target, online, withLocal, smap)
	}), nil
}

// migLog writes a line as AbstractMigrate's log does: a local timestamp,
// " ERROR:" for errors.
func (s *Sim) migLog(w *worker, level, format string, a ...any) {
	prefix := s.now().Format("2006-01-02 15:04:05")
	if level == "err" {
		prefix += " ERROR:"
	}
	for _, line := range strings.Split(strings.TrimRight(fmt.Sprintf(format, a...), "\n"), "\n") {
		w.logf("%s %s", prefix, line)
	}
}

type migVolume struct {
	key, sid, volname, targetSid string
	st                           *storage
	vol                          *volume
	ref                          string // attached, unused, snapshot, generated
}

// runMigration is AbstractMigrate::migrate with QemuMigrate's phases, run
// under the VM's config flock (lock_vm).
func (s *Sim) runMigration(w *worker, v *vm, src, target string, online, withLocal bool, smap storageMap) error {
	start := s.now()
	abort := func(err string) error {
		d := s.now().Sub(start).Round(time.Second)
		s.migLog(w, "err", "migration aborted (duration %02d:%02d:%02d): %s",
			int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60, err)
		return errors.New("migration aborted")
	}
	if err := w.lockVM(v, configLockTimeout); err != nil {
		return abort(err.Error())
	}
	// prepare: the VM still there, unlocked, power state as checked.
	if v.node != src {
		return abort(fmt.Sprintf("Configuration file 'nodes/%s/qemu-server/%d.conf' does not exist", src, v.id))
	}
	if err := checkLock(v); err != nil {
		return abort(strings.TrimPrefix(err.Error(), "500 "))
	}
	if v.running && !online {
		return abort("can't migrate running VM without --online")
	}
	if s.nodes[target].offline {
		// prepare's ssh to the target ("/bin/true") fails.
		return abort("Can't connect to destination address using public key")
	}
	running := v.running
	s.migLog(w, "info", "starting migration of VM %d to node '%s' (%s)", v.id, target, s.nodeIP(target))
	v.conf.set("lock", "migrate")
	clearLock := func() { v.conf.del("lock") } // phase1_cleanup
	vols, scanErr := s.scanLocalVolumes(w, v, target, running, withLocal, smap)
	if scanErr != "" {
		clearLock()
		return abort("Problem found while scanning volumes - " + scanErr)
	}
	if len(vols) > 0 {
		s.migLog(w, "info", "copying local disk images")
	}
	if err := w.wait(); err != nil {
		clearLock()
		return abort(err.Error())
	}
	moved := map[string]string{} // old volid → new volid
	var created []*volume
	for _, mv := range vols {
		tst, _ := s.storageOn(target, mv.targetSid)
		// storage_migrate keeps the volume's name where it is free (a
		// cloud-init volume's always: allow_rename is off for it), else
		// takes the target's next free one.
		format := mv.vol.format
		if tst.typ != typeDir {
			format = "raw"
		} else if mv.st.typ != typeDir {
			format = "raw" // a raw zvol or LV becomes a raw file
		}
		name := mv.vol.name
		if mv.st.typ != tst.typ {
			suffix := strings.TrimPrefix(baseName(mv.vol.name), fmt.Sprintf("vm-%d-", v.id))
			suffix = strings.TrimSuffix(strings.TrimPrefix(suffix, fmt.Sprintf("base-%d-", v.id)), "."+mv.vol.format)
			name = tst.diskName(v.id, suffix, format, mv.vol.isBase)
		}
		if _, taken := tst.volumes[name]; taken && !strings.Contains(name, "cloudinit") {
			name = tst.allocName(v.id, format)
		}
		if s.nodes[target].offline {
			// The target went away during the copy: storage_migrate pipes
			// pvesm export into "ssh <target> pvesm import", which dies
			// with the connection (exit code 255). phase1_cleanup's
			// cleanup_remotedisks frees over ssh too, and only the copies
			// volume_map lists (completed ones), so nothing on the target
			// is freed: the copies made and the partial one stay there,
			// owned by the VMID but in no config, and the VM stays on the
			// source.
			tst.volumes[name] = &volume{storage: tst.id, name: name, owner: v.id, size: mv.vol.size, format: format,
				files: map[string]string{}, snapData: map[string]map[string]string{}, ctime: s.now().Unix()}
			for _, c := range created {
				s.migLog(w, "err", "command '/usr/bin/ssh -e none -o 'BatchMode=yes' -o 'HostKeyAlias=%s' root@%s pvesm free %s' failed: exit code 255",
					target, s.nodeIP(target), tst.volid(c.name))
			}
			clearLock()
			return abort(fmt.Sprintf("storage migration for '%s' to storage '%s' failed - command 'set -o pipefail && pvesm export %s %s+size - -with-snapshots %d | /usr/bin/ssh -e none -o 'BatchMode=yes' -o 'HostKeyAlias=%s' root@%s -- pvesm import %s %s+size - -with-snapshots %d -allow-rename 1' failed: exit code 255",
				mv.st.volid(mv.volname), tst.id, mv.st.volid(mv.volname), format, boolInt(len(mv.vol.snaps) > 0), target, s.nodeIP(target),
				tst.volid(name), format, boolInt(len(mv.vol.snaps) > 0)))
		}
		if !tst.thin() && tst.used()+mv.vol.size > tst.total || tst.full {
			for _, c := range created {
				delete(tst.volumes, c.name)
			}
			clearLock()
			return abort(fmt.Sprintf("storage migration for '%s' to storage '%s' failed - unable to create image: not enough free space on storage '%s'",
				mv.st.volid(mv.volname), tst.id, tst.id))
		}
		nv := &volume{storage: tst.id, name: name, owner: v.id, size: mv.vol.size, format: format,
			isBase: mv.vol.isBase, files: copyFiles(mv.vol.files), snaps: append([]string(nil), mv.vol.snaps...),
			snapData: map[string]map[string]string{}, ctime: s.now().Unix()}
		for k, d := range mv.vol.snapData {
			nv.snapData[k] = copyFiles(d)
		}
		tst.volumes[name] = nv
		created = append(created, nv)
		moved[mv.st.volid(mv.volname)] = tst.volid(name)
		s.migLog(w, "info", "volume '%s' is '%s' on the target", mv.st.volid(mv.volname), tst.volid(name))
	}
	// phase3_cleanup: the config moves to the target (move_config_to_node)
	// with its volids rewritten, local copies are freed, the lock cleared.
	rewrite := func(c *config) {
		for _, k := range c.keys {
			if !isDiskKey(k) {
				continue
			}
			val := c.vals[k]
			sid, vn, ok := driveVolume(val)
			if !ok {
				continue
			}
			if nv, ok := moved[sid+":"+vn]; ok {
				c.vals[k] = nv + strings.TrimPrefix(val, sid+":"+vn)
			}
		}
	}
	rewrite(v.conf)
	for _, sn := range v.snapshots {
		rewrite(sn.conf)
	}
	for _, mv := range vols {
		delete(mv.st.volumes, mv.volname)
	}
	v.node = target
	v.conf.del("lock")
	d := s.now().Sub(start).Round(time.Second)
	s.migLog(w, "info", "migration finished successfully (duration %02d:%02d:%02d)",
		int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
	return nil
}

// scanLocalVolumes is QemuMigrate::scan_local_volumes: which volumes are
// local (to be copied), and every reason the migration cannot go on. The
// returned text is what it dies with.
func (s *Sim) scanLocalVolumes(w *worker, v *vm, target string, running, withLocal bool, smap storageMap) ([]migVolume, string) {
	byVolid := map[string]*migVolume{}
	var order []string
	errs := map[string]string{}
	note := func(c *config, snap bool) {
		v.disks(c, func(k, sid, vn string) {
			volid := sid + ":" + vn
			st, err := s.storageOn(v.node, sid)
			if err != nil {
				errs[volid] = fmt.Sprintf("storage '%s' does not exist", sid)
				return
			}
			targetSid := sid
			if !st.shared {
				targetSid = smap.mapID(sid)
			}
			if _, err := s.storageOn(target, targetSid); err != nil {
				errs[volid] = fmt.Sprintf("storage '%s' is not available on node '%s'", targetSid, target)
				return
			}
			if st.shared {
				return
			}
			mv := byVolid[volid]
			if mv == nil {
				mv = &migVolume{key: k, sid: sid, volname: vn, targetSid: targetSid, st: st, vol: st.volumes[vn]}
				byVolid[volid] = mv
				order = append(order, volid)
			}
			switch {
			case snap && mv.ref == "":
				mv.ref = "snapshot"
			case !snap && strings.HasPrefix(k, "unused"):
				mv.ref = "unused"
			case !snap && strings.Contains(vn, "cloudinit"):
				mv.ref = "generated"
			case !snap:
				mv.ref = "attached"
			}
		})
	}
	for _, name := range v.snapOrder {
		note(v.snapshots[name].conf, true)
	}
	note(v.conf, false)
	sort.Strings(order)
	for _, volid := range order {
		mv := byVolid[volid]
		if mv.vol == nil {
			errs[volid] = fmt.Sprintf("unable to determine size for volume '%s'", volid)
			continue
		}
		if len(mv.vol.snaps) > 0 {
			if running {
				errs[volid] = "online storage migration not possible if non-replicated snapshot exists"
				continue
			}
			if !(mv.st.typ == typeZFS || mv.vol.format == "qcow2") {
				errs[volid] = "non-migratable snapshot exists"
				continue
			}
		}
		if mv.vol.isBase {
			for _, other := range mv.st.volumes {
				if other.parent == mv.vol.name {
					errs[volid] = "referenced by linked clone(s)"
					break
				}
			}
		}
	}
	for _, volid := range order {
		mv := byVolid[volid]
		switch mv.ref {
		case "attached":
			if running && !withLocal {
				errs[volid] = "can't live migrate attached local disks without with-local-disks option"
			}
			s.migLog(w, "info", "found local disk '%s' (attached)", volid)
		case "unused":
			s.migLog(w, "info", "found local disk '%s' (unused)", volid)
		case "snapshot":
			s.migLog(w, "info", "found local disk '%s' (referenced by snapshot(s))", volid)
		case "generated":
			s.migLog(w, "info", "found generated disk '%s' (in current VM config)", volid)
		}
	}
	if len(errs) > 0 {
		for _, volid := range sortedKeys(errs) {
			s.migLog(w, "warn", "can't migrate local disk '%s': %s", volid, errs[volid])
		}
		return nil, "can't migrate VM - check log"
	}
	out := make([]migVolume, 0, len(order))
	for _, volid := range order {
		mv := byVolid[volid]
		// A linked clone's volume needs its base, which stays behind.
		if mv.vol.parent != "" {
			return nil, fmt.Sprintf("can't migrate '%s' as it's a clone of '%s' at /usr/share/perl5/PVE/QemuMigrate.pm line 586.", volid, baseName(mv.vol.parent))
		}
		out = append(out, *mv)
	}
	return out, ""
}

func (s *Sim) nodeIP(name string) string {
	for i, n := range s.opts.Nodes {
		if n == name {
			return fmt.Sprintf("127.0.0.%d", i+1)
		}
	}
	return ""
}

// migratePrecondition is migrate_vm_precondition: which nodes accept the
// VM (a node lacking one of its storages is "not allowed" with
// unavailable_storages) and which of its disks are local, with the
// attributes foreach_volid collects (0/1 numbers, as PVE encodes them).
func (s *Sim) migratePrecondition(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkQuorum(); err != nil {
		return nil, err
	}
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	if err := checkLock(v); err != nil {
		return nil, err
	}
	running := 0
	if v.running {
		running = 1
	}
	allowed := []string{}
	notAllowed := map[string]any{}
	for _, n := range s.opts.Nodes {
		if n == v.node {
			continue
		}
		missing := map[string]bool{}
		v.disks(v.conf, func(k, sid, vn string) {
			if strings.HasPrefix(k, "unused") {
				return
			}
			if _, err := s.storageOn(n, sid); err != nil {
				missing[sid] = true
			}
		})
		// check_local_storage_availability has an entry for every node,
		// so every other node appears in not_allowed_nodes, as {} when
		// nothing blocks it (the Perl tests the hash's truth, not its size).
		info := map[string]any{}
		notAllowed[n] = info
		if len(missing) > 0 {
			info["unavailable_storages"] = sortedKeys(missing)
		} else {
			allowed = append(allowed, n)
		}
	}
	disks := map[string]map[string]any{}
	add := func(c *config, snap string) {
		v.disks(c, func(k, sid, vn string) {
			if st, err := s.storageOn(v.node, sid); err == nil && st.shared {
				return
			}
			volid := sid + ":" + vn
			a := disks[volid]
			if a == nil {
				a = map[string]any{"volid": volid, "cdrom": 0, "is_cloudinit": 0, "replicate": 0, "shared": 0,
					"is_unused": 0, "is_attached": 0, "is_vmstate": 0, "is_tpmstate": 0}
				disks[volid] = a
			}
			if strings.Contains(vn, "cloudinit") {
				a["cdrom"], a["is_cloudinit"] = 1, 1
			}
			if strings.HasPrefix(k, "unused") {
				a["is_unused"] = 1
			} else if snap == "" {
				a["is_attached"] = 1
			}
			if snap != "" {
				refs, _ := a["referenced_in_snapshot"].(map[string]any)
				if refs == nil {
					refs = map[string]any{}
					a["referenced_in_snapshot"] = refs
				}
				refs[snap] = 1
			}
			if k == "tpmstate0" {
				a["is_tpmstate"] = 1
			}
			if size, ok := parseSize(driveOpt(c.vals[k], "size")); ok && a["size"] == nil {
				a["size"] = size
			}
			if !strings.HasPrefix(k, "unused") {
				a["drivename"] = k
			}
		})
	}
	add(v.conf, "")
	for _, name := range v.snapOrder {
		add(v.snapshots[name].conf, name)
	}
	local := []map[string]any{}
	for _, volid := range sortedKeys(disks) {
		local = append(local, disks[volid])
	}
	return map[string]any{"running": running, "allowed_nodes": allowed, "not_allowed_nodes": notAllowed,
		"local_disks": local, "local_resources": []string{}, "mapped-resources": []string{},
		"mapped-resource-info": map[string]any{}, "has-dbus-vmstate": 1}, nil
}
