package pvesim

// Power: vm_start, vm_stop, vm_shutdown, vm_reboot (PVE::API2::Qemu, QemuServer).

import (
	"fmt"
	"strconv"
	"strings"
)

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
		if err := w.lockVM(v, configLockTimeout); err != nil {
			return err
		}
		if v.isTemplate() {
			return fmt.Errorf("you can't start a vm if it's a template")
		}
		// vm_start accepts "lock: suspended": starting resumes a hibernated VM.
		if v.lock() != "suspended" {
			if err := checkLock(v); err != nil {
				return err
			}
		} else if err := s.checkVMState(v); err != nil {
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
		if err := s.checkBridges(v); err != nil {
			return err
		}
		if err := w.wait(); err != nil {
			return err
		}
		s.nextPID += 7
		v.running, v.started, v.pid = true, s.now(), s.nextPID
		v.paused = false
		v.awake = s.restoreVMState(v, w)
		s.guestBoot(v)
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

// checkBridges: a VNet's bridge exists on the nodes only once the SDN
// config is applied; before, tap_plug (PVE::Network) finds no such bridge.
// Other bridge names (vmbr*) are assumed to exist on every node.
func (s *Sim) checkBridges(v *vm) error {
	for _, k := range v.conf.keys {
		if !strings.HasPrefix(k, "net") {
			continue
		}
		br := ""
		for _, part := range strings.Split(v.conf.vals[k], ",") {
			if b, ok := strings.CutPrefix(part, "bridge="); ok {
				br = b
			}
		}
		if br != "" {
			if isVnet, applied := s.vnetBridge(br); isVnet && !applied {
				return fmt.Errorf("bridge '%s' does not exist", br)
			}
		}
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
		if err := w.lockVM(v, configLockTimeout); err != nil {
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
		if err := w.lockVM(v, configLockTimeout); err != nil {
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
		v.started, v.awake = s.now(), false
		return nil
	}), nil
}
