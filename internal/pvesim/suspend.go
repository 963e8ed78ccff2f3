package pvesim

import (
	"fmt"
	"strconv"
	"strings"
)

// Suspend and resume follow API2/Qemu.pm vm_suspend/vm_resume and
// QemuServer/RunState.pm: without todisk the guest is paused (qmpaused task,
// qmpstatus "paused"); with todisk (qmsuspend) the RAM goes to a vmstate volume
// vm-<vmid>-state-suspend-<date> (__snapshot_save_vmstate: 2×memory + 500 MiB,
// raw), the config gets vmstate and "lock: suspended" and QEMU quits. Resume of
// a hibernated VM is vm_start, which loads the state and frees the volume.

func (s *Sim) suspendVM(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	if err := checkSkiplock(req); err != nil {
		return nil, err
	}
	if !v.running {
		return nil, errf("VM %d not running", v.id)
	}
	todisk := req.boolv("todisk")
	statestorage := req.str("statestorage")
	if todisk && statestorage == "" {
		statestorage = s.vmstateStorage(v)
	}
	if todisk {
		if _, err := s.storageOn(v.node, statestorage); err != nil {
			return nil, err
		}
	}
	typ := "qmpause"
	if todisk {
		typ = "qmsuspend"
	}
	return s.startTask(req, v.node, typ, strconv.Itoa(v.id), func(w *worker) error {
		if err := w.lockVM(v, configLockTimeout); err != nil {
			return err
		}
		if !req.has("skiplock") && v.lock() != "backup" {
			if err := checkLock(v); err != nil {
				return err
			}
		}
		if !todisk {
			v.paused = true
			return nil
		}
		v.conf.set("lock", "suspending")
		st, _ := s.storageOn(v.node, statestorage)
		name := fmt.Sprintf("vm-%d-state-suspend-%s", v.id, s.now().Format("2006-01-02"))
		if st.typ == typeDir {
			name = fmt.Sprintf("%d/%s.raw", v.id, name)
		}
		vol, err := s.allocVolume(st, v.id, (v.memoryMB()*2+500)<<20, name)
		if err != nil {
			v.conf.del("lock") // PVE leaves "suspending" only after savevm started
			return err
		}
		vol.format = "raw"
		v.conf.set("vmstate", st.volid(vol.name))
		v.conf.set("runningmachine", "pc-i440fx-10.0+pve0")
		if err := w.wait(); err != nil {
			return err
		}
		v.conf.set("lock", "suspended")
		v.running, v.paused = false, false
		return nil
	}), nil
}

// vmstateStorage is find_vmstate_storage: vmstatestorage, else the storage of
// the first disk (shared or not, the simulator has one node's storages).
func (s *Sim) vmstateStorage(v *vm) string {
	if sid, ok := v.conf.get("vmstatestorage"); ok {
		return sid
	}
	found := ""
	v.disks(v.conf, func(k, sid, vn string) {
		if found == "" && !strings.HasPrefix(k, "unused") && !strings.Contains(vn, "cloudinit") {
			found = sid
		}
	})
	if found == "" {
		found = "local"
	}
	return found
}

func (s *Sim) resumeVM(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	if err := checkSkiplock(req); err != nil {
		return nil, err
	}
	hibernated := v.lock() == "suspended"
	if !hibernated && !v.running {
		return nil, errf("VM %d not running", v.id)
	}
	return s.startTask(req, v.node, "qmresume", strconv.Itoa(v.id), func(w *worker) error {
		if err := w.lockVM(v, configLockTimeout); err != nil {
			return err
		}
		if !hibernated {
			if !req.has("skiplock") {
				if err := checkLock(v); err != nil {
					return err
				}
			}
			v.paused = false
			return nil
		}
		if err := w.wait(); err != nil {
			return err
		}
		s.nextPID += 7
		v.running, v.started, v.pid = true, s.now(), s.nextPID
		v.paused = false
		v.awake = s.restoreVMState(v, w)
		return nil
	}), nil
}

// checkVMState fails the resume of a hibernated VM whose vmstate volume is
// gone (removed behind PVE's back): vm_start_nolock activates it
// (PVE::Storage::activate_volumes) before QEMU loads it, and that fails; the
// VM stays stopped with its lock and vmstate key.
func (s *Sim) checkVMState(v *vm) error {
	volid, ok := v.conf.get("vmstate")
	if !ok {
		return nil
	}
	sid, vn, _ := strings.Cut(volid, ":")
	if st, err := s.storageOn(v.node, sid); err == nil && st.volumes[vn] != nil {
		return nil
	}
	return fmt.Errorf("volume '%s' does not exist", volid)
}

// restoreVMState is vm_start's resume path: the vmstate volume is freed and the
// hibernation keys and lock removed.
func (s *Sim) restoreVMState(v *vm, w *worker) bool {
	volid, ok := v.conf.get("vmstate")
	if !ok || v.lock() != "suspended" {
		return false
	}
	if sid, vn, ok := strings.Cut(volid, ":"); ok {
		if st, err := s.storageOn(v.node, sid); err == nil {
			delete(st.volumes, vn)
		}
	}
	for _, k := range []string{"vmstate", "runningmachine", "runningcpu", "lock"} {
		v.conf.del(k)
	}
	w.logf("resuming VM from %s", volid)
	return true
}
