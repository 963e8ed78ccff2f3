package pvesim

// Destroy, template and unlink: destroy_vm, template, unlink (PVE::API2::Qemu).

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

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
		if err := w.lockVM(v, configLockTimeout); err != nil {
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
		owned := map[string]bool{}
		collect := func(c *config) {
			v.disks(c, func(k, sid, vn string) {
				if ownerOf(vn) == v.id {
					owned[sid+":"+vn] = true
				}
			})
			// destroy_vm's foreach_volume_full has extra_keys => ['vmstate']:
			// a hibernated VM's RAM state goes with it.
			if vs, ok := c.get("vmstate"); ok {
				if sid, vn, ok := strings.Cut(vs, ":"); ok && ownerOf(vn) == v.id {
					owned[sid+":"+vn] = true
				}
			}
		}
		collect(v.conf)
		for _, sn := range v.snapshots {
			collect(sn.conf)
		}
		// The task's time goes by before the disks are freed, so that a
		// request racing the destroy still finds them; the frees' storage
		// lock holds are part of that time.
		w.dur -= time.Duration(len(owned)) * s.opts.Durations.StorageLock
		if err := w.wait(); err != nil {
			return err
		}
		// destroy_vm frees each volume with vdisk_free (under the storage
		// lock) in an eval: a volume it cannot free is a warning, "Could
		// not remove disk …, check manually", and stays on the storage.
		for _, volid := range sortedKeys(owned) {
			sid, vn, _ := strings.Cut(volid, ":")
			st, _ := s.storageOn(v.node, sid)
			if st == nil {
				continue
			}
			err := w.lockStorage(st, func() error {
				delete(st.volumes, vn)
				w.logf("Removing image: %s", volid)
				return nil
			})
			if errors.Is(err, errAborted) {
				return err
			} else if err != nil {
				w.warn("Could not remove disk '%s', check manually: %v", volid, err)
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
		if req.boolv("purge") {
			for _, p := range s.pools {
				delete(p.vms, v.id) // remove_vm_access also drops pool membership
			}
		}
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
