package pvesim

// VM config: GET/POST/PUT …/config and pending, after update_vm_api and
// vmconfig_apply_pending (PVE::API2::Qemu).

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim/apischema"
)

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
	out["digest"] = v.digest()
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
	// update_vm_api's own wording, typo included (qemu-server API2/Qemu.pm).
	if d := req.str("digest"); d != "" && d != v.digest() {
		return errf("checksum missmatch (file change by other user?)")
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

func (s *Sim) applyConfig(req *request, v *vm, w *worker) error {
	if d := req.str("digest"); d != "" && d != v.digest() {
		return fmt.Errorf("checksum missmatch (file change by other user?)")
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
		case netKeyRE.MatchString(k):
			nv, err := s.canonicalNet(k, val)
			if err != nil {
				return err
			}
			v.conf.set(k, nv)
		case k == "sshkeys":
			v.conf.set(k, val)
		case k == "vmgenid" && val == "1":
			v.conf.set(k, s.uuid()) // update_vm_api generates one for "1"
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
	dropReusedUnused(v.conf)
	return nil
}

var netKeyRE = regexp.MustCompile(`^net\d+$`)

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
		if err := w.lockVM(v, configLockTimeout); err != nil {
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
	deadline := time.Now().Add(configLockTimeout)
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
