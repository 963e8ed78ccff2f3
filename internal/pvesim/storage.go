package pvesim

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

func (s *Sim) listStorages(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.nodes[req.vars["node"]]
	if !ok {
		return nil, s.checkNode(req.vars["node"])
	}
	content := req.str("content")
	out := []map[string]any{}
	for _, id := range sortedKeys(n.storages) {
		st := n.storages[id]
		if content != "" && !contains(st.content, content) {
			continue
		}
		out = append(out, s.storageInfo(st))
	}
	return out, nil
}

func (s *Sim) storageInfo(st *storage) map[string]any {
	used := st.used()
	return map[string]any{"storage": st.id, "type": st.pluginType(), "content": joinComma(st.content),
		"active": 1, "enabled": 1, "shared": st.sharedFlag(), "total": st.total, "used": used, "avail": st.total - used,
		"used_fraction": float64(used) / float64(st.total)}
}

func (s *Sim) storageStatus(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.storageOn(req.vars["node"], req.vars["storage"])
	if err != nil {
		if e := s.checkNode(req.vars["node"]); e != nil {
			return nil, e
		}
		// API2/Storage/Status.pm read_status: raise_param_exc({storage => "No such storage."}).
		return nil, paramErr(map[string]string{"storage": "No such storage."})
	}
	return s.storageInfo(st), nil
}

func (s *Sim) listContent(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.storageOn(req.vars["node"], req.vars["storage"])
	if err != nil {
		return nil, errf("storage '%s' does not exist", req.vars["storage"])
	}
	content, vmid := req.str("content"), req.str("vmid")
	out := []map[string]any{}
	if content == "" || content == "images" {
		for _, name := range sortedKeys(st.volumes) {
			vol := st.volumes[name]
			if vmid != "" && strconv.Itoa(vol.owner) != vmid {
				continue
			}
			m := map[string]any{"volid": st.volid(name), "vmid": vol.owner, "format": vol.format,
				"size": vol.size, "used": vol.size / 4, "ctime": vol.ctime, "content": "images"}
			if vol.parent != "" {
				m["parent"] = vol.parent
			}
			out = append(out, m)
		}
	}
	if (content == "" || content == "snippets") && vmid == "" {
		for _, n := range st.snippetNames() {
			b, _ := st.snippet(n)
			out = append(out, map[string]any{"volid": st.volid("snippets/" + n), "format": "snippet",
				"size": len(b), "content": "snippets", "ctime": 0})
		}
	}
	return out, nil
}

var allocSizeRE = regexp.MustCompile(`^(\d+)([MG]?)$`)

// allocContent is the storage API's vdisk_alloc; names must follow vm-<vmid>-*.
func (s *Sim) allocContent(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.storageOn(req.vars["node"], req.vars["storage"])
	if err != nil {
		return nil, errf("storage '%s' does not exist", req.vars["storage"])
	}
	vmid := req.intv("vmid")
	name := req.str("filename")
	m := allocSizeRE.FindStringSubmatch(req.str("size"))
	kb, _ := strconv.ParseInt(m[1], 10, 64)
	switch m[2] {
	case "M":
		kb *= 1024
	case "G":
		kb *= 1024 * 1024
	}
	format := req.str("format")
	if format == "" {
		format = st.format
	}
	if !strings.HasPrefix(name, fmt.Sprintf("vm-%d-", vmid)) && !strings.HasPrefix(name, fmt.Sprintf("base-%d-", vmid)) {
		return nil, errf("illegal name '%s' - should be 'vm-%d-*'", name, vmid)
	}
	volname := name
	if st.typ == typeDir {
		if !strings.HasSuffix(name, "."+format) {
			volname = name + "." + format
		}
		volname = fmt.Sprintf("%d/%s", vmid, volname)
	}
	if _, exists := st.volumes[volname]; exists {
		return nil, errf("volume '%s' already exists", st.volid(volname))
	}
	vol, err := s.allocVolume(st, vmid, kb*1024, volname)
	if err != nil {
		return nil, errf("%s", err.Error())
	}
	vol.format = format
	return st.volid(vol.name), nil
}

func (s *Sim) volumeInfo(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, vol, err := s.volumeFor(req)
	if err != nil {
		return nil, err
	}
	return map[string]any{"path": "/dev/sim/" + vol.name, "size": vol.size, "used": vol.size / 4,
		"format": vol.format, "volid": st.volid(vol.name)}, nil
}

func (s *Sim) volumeFor(req *request) (*storage, *volume, error) {
	st, err := s.storageOn(req.vars["node"], req.vars["storage"])
	if err != nil {
		return nil, nil, errf("storage '%s' does not exist", req.vars["storage"])
	}
	name := req.vars["volume"]
	if sid, vn, ok := strings.Cut(name, ":"); ok {
		if sid != st.id {
			return nil, nil, errf("volume '%s' does not exist", name)
		}
		name = vn
	}
	if err := parseVolname(st, name); err != nil {
		return nil, nil, err
	}
	vol, ok := st.volumes[name]
	if !ok {
		return nil, nil, errf("no such volume '%s'", st.volid(name))
	}
	return st, vol, nil
}

// deleteContent frees a volume without checking VM configs (PVE does not), but
// refuses base volumes still used by linked clones.
func (s *Sim) deleteContent(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, vol, err := s.volumeFor(req)
	if err != nil {
		return nil, err
	}
	id := fmt.Sprintf("%d@%s", vol.owner, st.id)
	upid := s.startTask(req, req.vars["node"], "imgdel", id, func(w *worker) error {
		if vol.isBase {
			for _, other := range st.volumes {
				if other.parent == vol.name {
					return fmt.Errorf("base volume '%s' is still in use by linked clones", vol.name)
				}
			}
		}
		if err := w.wait(); err != nil {
			return err
		}
		// vdisk_free: under the storage lock.
		return w.lockStorage(st, func() error {
			delete(st.volumes, vol.name)
			return nil
		})
	})
	if req.has("delay") && !s.tasks[upid].running {
		return nil, nil
	}
	return upid, nil
}
