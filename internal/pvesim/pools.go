package pvesim

import (
	"fmt"
	"sort"
	"strconv"
)

// Pools follow pve-manager PVE/API2/Pool.pm: pools live in user.cfg with a
// comment, VM members and storage members; a VM belongs to at most one pool
// ($usercfg->{vms}); every write runs under lock_user_config, which prefixes
// errors ("update pools failed: …"); /cluster/resources (API2/Cluster.pm)
// lists the pools and names each member VM's pool.

type pool struct {
	comment  *string
	vms      map[int]bool
	storages map[string]bool
}

// poolOf is $usercfg->{vms}->{$vmid}.
func (s *Sim) poolOf(vmid int) string {
	for name, p := range s.pools {
		if p.vms[vmid] {
			return name
		}
	}
	return ""
}

func poolErr(prefix string, err error) error { return errf("%s: %v", prefix, err) }

func (s *Sim) listPools(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id := req.str("poolid"); id != "" {
		info, err := s.poolInfo(id, req.str("type"))
		if err != nil {
			return nil, err
		}
		return []map[string]any{info}, nil
	}
	out := []map[string]any{}
	for _, name := range sortedKeys(s.pools) {
		e := map[string]any{"poolid": name}
		if c := s.pools[name].comment; c != nil {
			e["comment"] = *c
		}
		out = append(out, e)
	}
	return out, nil
}

// poolInfo is index with poolid: members as extract_vm_stats/extract_storage_stats.
func (s *Sim) poolInfo(id, typ string) (map[string]any, error) {
	p, ok := s.pools[id]
	if !ok {
		return nil, errf("pool '%s' does not exist", id)
	}
	members := []map[string]any{}
	var ids []int
	for vmid := range p.vms {
		ids = append(ids, vmid)
	}
	sort.Ints(ids)
	for _, vmid := range ids {
		v, ok := s.vms[vmid]
		if !ok || typ != "" && typ != "qemu" {
			continue
		}
		st := s.vmStatusLocked(v)
		template := 0
		if v.isTemplate() {
			template = 1
		}
		members = append(members, map[string]any{"id": fmt.Sprintf("qemu/%d", vmid), "vmid": vmid, "node": v.node,
			"type": "qemu", "status": st["status"], "name": v.name(), "uptime": st["uptime"], "template": template,
			"maxcpu": v.cpus(), "cpu": st["cpu"], "maxmem": st["maxmem"], "mem": st["mem"], "maxdisk": st["maxdisk"],
			"disk": 0, "netin": st["netin"], "netout": st["netout"], "diskread": 0, "diskwrite": 0})
	}
	if typ == "" || typ == "storage" {
		for _, sid := range sortedKeys(p.storages) {
			n := s.Node()
			st, ok := s.nodes[n].storages[sid]
			if !ok {
				continue
			}
			members = append(members, map[string]any{"id": "storage/" + n + "/" + sid, "storage": sid, "node": n,
				"type": "storage", "status": "available", "plugintype": st.pluginType(), "maxdisk": st.total, "disk": st.used(),
				"content": joinComma(st.content), "shared": st.sharedFlag()})
		}
	}
	info := map[string]any{"poolid": id, "members": members}
	if p.comment != nil {
		info["comment"] = *p.comment
	}
	return info, nil
}

// getPool is the deprecated GET /pools/{poolid}: index's first entry.
func (s *Sim) getPool(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.poolInfo(req.str("poolid"), req.str("type"))
}

func (s *Sim) createPool(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := req.str("poolid")
	if _, ok := s.pools[id]; ok {
		return nil, poolErr("create pool failed", fmt.Errorf("pool '%s' already exists", id))
	}
	if id == "" || !(id[0] >= 'a' && id[0] <= 'z' || id[0] >= 'A' && id[0] <= 'Z') {
		return nil, poolErr("create pool failed", fmt.Errorf("pool name must start with a letter"))
	}
	p := &pool{vms: map[int]bool{}, storages: map[string]bool{}}
	if req.has("comment") {
		c := req.str("comment")
		p.comment = &c
	}
	s.pools[id] = p
	return nil, nil
}

func (s *Sim) updatePool(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.updatePoolLocked(req); err != nil {
		return nil, poolErr("update pools failed", err)
	}
	return nil, nil
}

// updatePoolLocked applies the whole update or nothing (user.cfg is written once at the end).
func (s *Sim) updatePoolLocked(req *request) error {
	id := req.str("poolid")
	p, ok := s.pools[id]
	if !ok {
		return fmt.Errorf("pool '%s' does not exist", id)
	}
	del := req.boolv("delete")
	vms := map[int]bool{}
	for k, v := range p.vms {
		vms[k] = v
	}
	moved := map[int]string{}
	for _, x := range splitConfigList(req.str("vms")) {
		vmid, _ := strconv.Atoi(x)
		if del {
			if !vms[vmid] {
				return fmt.Errorf("VM %d is not a pool member", vmid)
			}
			delete(vms, vmid)
			continue
		}
		if vms[vmid] {
			return fmt.Errorf("VM %d is already a pool member", vmid)
		}
		if other := s.poolOf(vmid); other != "" {
			if !req.boolv("allow-move") {
				return fmt.Errorf("VM %d belongs already to pool '%s' and 'allow-move' is not set", vmid, other)
			}
			moved[vmid] = other
		}
		vms[vmid] = true
	}
	storages := map[string]bool{}
	for k, v := range p.storages {
		storages[k] = v
	}
	for _, sid := range splitConfigList(req.str("storage")) {
		if del {
			if !storages[sid] {
				return fmt.Errorf("Storage '%s' is not a pool member", sid)
			}
			delete(storages, sid)
			continue
		}
		if storages[sid] {
			return fmt.Errorf("Storage '%s' is already a pool member", sid)
		}
		storages[sid] = true
	}
	for vmid, other := range moved {
		delete(s.pools[other].vms, vmid)
	}
	if req.has("comment") {
		c := req.str("comment")
		p.comment = &c
	}
	p.vms, p.storages = vms, storages
	return nil
}

func (s *Sim) deletePool(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := req.str("poolid")
	p, ok := s.pools[id]
	if !ok {
		return nil, poolErr("delete pool failed", fmt.Errorf("pool '%s' does not exist", id))
	}
	for vmid := range p.vms {
		return nil, poolErr("delete pool failed", fmt.Errorf("pool '%s' is not empty (contains VM %d)", id, vmid))
	}
	for sid := range p.storages {
		return nil, poolErr("delete pool failed", fmt.Errorf("pool '%s' is not empty (contains storage '%s')", id, sid))
	}
	delete(s.pools, id)
	return nil, nil
}
