package pvesim

import (
	"fmt"
	"sort"
	"strconv"
)

func (s *Sim) version(*request) (any, error) {
	major := s.opts.Version
	if len(major) > 3 {
		major = major[:3]
	}
	return map[string]any{"release": major, "repoid": "6f1f7a4c", "version": s.opts.Version}, nil
}

// clusterStatus answers like a standalone node unless several nodes are
// configured; then as get_status (PVE::API2::Cluster) does from the
// corosync membership: a "cluster" entry (nodes counts the configured
// nodes, quorate follows the online majority, version is the corosync
// config_version, which each join of pvecm add raises: N for N nodes) and
// one "node" entry per node with its online flag.
func (s *Sim) clusterStatus(*request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	if len(s.opts.Nodes) > 1 {
		q := 0
		if s.quorate() {
			q = 1
		}
		out = append(out, map[string]any{"type": "cluster", "id": "cluster", "name": "pvesim",
			"nodes": len(s.opts.Nodes), "quorate": q, "version": len(s.opts.Nodes)})
	}
	for i, n := range s.opts.Nodes {
		local, online := 0, 1
		if i == 0 {
			local = 1
		}
		if s.nodes[n].offline {
			online = 0
		}
		out = append(out, map[string]any{"type": "node", "id": "node/" + n, "name": n,
			"ip": fmt.Sprintf("127.0.0.%d", i+1), "local": local, "nodeid": i + 1, "online": online, "level": ""})
	}
	return out, nil
}

// quorate: corosync's votequorum with one vote per node needs a majority.
func (s *Sim) quorate() bool {
	online := 0
	for _, n := range s.nodes {
		if !n.offline {
			online++
		}
	}
	return online*2 > len(s.nodes)
}

// checkQuorum is PVE::Cluster::check_cfs_quorum: /etc/pve is read-only
// without quorum, so every change refuses.
func (s *Sim) checkQuorum() error {
	if !s.quorate() {
		return errf("cluster not ready - no quorum?")
	}
	return nil
}

func (s *Sim) checkNode(name string) error {
	if _, ok := s.nodes[name]; !ok {
		// pveproxy resolves the node to proxy to and dies when the lookup fails
		// (PVE::Network::get_ip_from_hostname around PVE::Tools::getaddrinfo_all);
		// a die in the handler is a 500 whose text is the status line. The
		// resolver's text is assumed to be glibc's EAI_NONAME message.
		return &Error{Code: 500, Msg: fmt.Sprintf("hostname lookup '%s' failed - failed to get address info for: %s: Name or service not known", name, name)}
	}
	return nil
}

// nextID returns the first free VMID as a string (PVE's JSON type for it).
func (s *Sim) nextID(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.has("vmid") {
		id := req.intv("vmid")
		if _, taken := s.vms[id]; taken {
			return nil, paramErr(map[string]string{"vmid": fmt.Sprintf("VM %d already exists", id)})
		}
		return strconv.Itoa(id), nil
	}
	if id, ok := s.faults.popNextID(); ok {
		return strconv.Itoa(id), nil
	}
	for id := 100; id < 1000000; id++ {
		if _, taken := s.vms[id]; !taken {
			return strconv.Itoa(id), nil
		}
	}
	return nil, errf("unable to get any free VMID in range [100, 1000000)")
}

// Simulated node capacity and use (the same on every node).
const (
	nodeMaxCPU = 16
	nodeMaxMem = int64(64) << 30
	nodeMem    = int64(9) << 30
)

// listNodes is PVE::API2::Nodes index: extract_node_stats per member. An
// offline node's RRD entry has expired (pmxcfs drops entries older than
// 5 minutes, status.c rrd_entry_is_old; the simulator assumes that time has
// passed), so it is listed with status "offline" and no figures.
func (s *Sim) listNodes(*request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	for _, n := range s.opts.Nodes {
		if s.nodes[n].offline {
			out = append(out, map[string]any{"node": n, "status": "offline", "id": "node/" + n, "type": "node",
				"ssl_fingerprint": "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99"})
			continue
		}
		out = append(out, map[string]any{"node": n, "status": "online", "cpu": 0.03, "maxcpu": nodeMaxCPU,
			"mem": s.nodeMemUsed(n), "maxmem": nodeMaxMem, "disk": int64(12) << 30, "maxdisk": int64(100) << 30,
			"uptime": int64(s.now().Sub(s.nodes[n].started).Seconds()), "id": "node/" + n, "type": "node",
			"level": "", "ssl_fingerprint": "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99"})
	}
	return out, nil
}

// nodeMemUsed is the host's base use plus a third of each running VM's
// memory (what vmStatusLocked reports as the guest's mem). A standalone
// node keeps the fixed figure it always reported.
func (s *Sim) nodeMemUsed(name string) int64 {
	if len(s.opts.Nodes) == 1 {
		return nodeMem
	}
	m := nodeMem
	for _, v := range s.vms {
		if v.node == name && v.running {
			m += v.memoryMB() << 20 / 3
		}
	}
	return m
}

func (s *Sim) nodeStatus(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.nodes[req.vars["node"]]
	if !ok {
		return nil, s.checkNode(req.vars["node"])
	}
	return map[string]any{
		"uptime":  int64(s.now().Sub(n.started).Seconds()),
		"loadavg": []string{"0.12", "0.20", "0.25"},
		"cpu":     0.031, "wait": 0.001,
		"memory": map[string]any{"total": int64(64) << 30, "used": int64(9) << 30, "free": int64(55) << 30},
		"swap":   map[string]any{"total": 0, "used": 0, "free": 0},
		"rootfs": map[string]any{"total": int64(100) << 30, "used": int64(12) << 30, "free": int64(88) << 30, "avail": int64(83) << 30},
		"cpuinfo": map[string]any{"model": "Simulated CPU @ 3.40GHz", "cores": 8, "cpus": 16, "sockets": 1,
			"mhz": "3400.000", "user_hz": 100, "flags": "fpu vme de pse tsc msr pae mce cx8 apic", "hvm": "1"},
		"kversion":       "Linux 6.14.8-2-pve #1 SMP PREEMPT_DYNAMIC PMX 6.14.8-2",
		"pveversion":     "pve-manager/" + s.opts.Version + "/6f1f7a4c",
		"ksm":            map[string]any{"shared": 0},
		"boot-info":      map[string]any{"mode": "efi", "secureboot": 0},
		"current-kernel": map[string]any{"machine": "x86_64", "release": "6.14.8-2-pve", "sysname": "Linux", "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.14.8-2"},
	}, nil
}

// resources answers /cluster/resources. Unlike status/current it always carries
// "template" as 0/1, which is what PVE does there.
func (s *Sim) resources(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	typ := req.str("type")
	out := []map[string]any{}
	if typ == "" || typ == "vm" {
		ids := make([]int, 0, len(s.vms))
		for id := range s.vms {
			ids = append(ids, id)
		}
		sort.Ints(ids)
		for _, id := range ids {
			v := s.vms[id]
			if s.nodes[v.node].offline {
				// extract_vm_stats without an RRD entry (expired with its
				// node): the vmlist facts only.
				out = append(out, map[string]any{"id": fmt.Sprintf("qemu/%d", id), "type": "qemu", "vmid": id,
					"node": v.node, "status": "unknown"})
				continue
			}
			st := s.vmStatusLocked(v)
			r := map[string]any{"id": fmt.Sprintf("qemu/%d", id), "type": "qemu", "vmid": id, "node": v.node,
				"name": v.name(), "status": st["status"], "template": 0, "maxcpu": v.cpus(), "cpu": st["cpu"],
				"maxmem": st["maxmem"], "mem": st["mem"], "maxdisk": st["maxdisk"], "disk": 0,
				"netin": st["netin"], "netout": st["netout"], "diskread": 0, "diskwrite": 0, "uptime": st["uptime"]}
			if v.isTemplate() {
				r["template"] = 1
			}
			if l := v.lock(); l != "" {
				r["lock"] = l
			}
			if t, ok := v.conf.get("tags"); ok {
				r["tags"] = t
			}
			if p := s.poolOf(id); p != "" {
				r["pool"] = p
			}
			out = append(out, r)
		}
	}
	if typ == "" {
		for _, name := range sortedKeys(s.pools) {
			out = append(out, map[string]any{"id": "/pool/" + name, "pool": name, "type": "pool"})
		}
	}
	if typ == "" || typ == "node" {
		for _, n := range s.opts.Nodes {
			if s.nodes[n].offline {
				out = append(out, map[string]any{"id": "node/" + n, "type": "node", "node": n, "status": "offline"})
				continue
			}
			r := map[string]any{"id": "node/" + n, "type": "node", "node": n, "status": "online",
				"maxcpu": nodeMaxCPU, "cpu": 0.03, "maxmem": nodeMaxMem, "mem": s.nodeMemUsed(n), "level": ""}
			if len(s.opts.Nodes) > 1 {
				r["uptime"] = int64(s.now().Sub(s.nodes[n].started).Seconds())
				r["disk"], r["maxdisk"] = int64(12)<<30, int64(100)<<30
			}
			out = append(out, r)
		}
	}
	if typ == "" || typ == "storage" {
		for _, n := range s.opts.Nodes {
			for _, id := range sortedKeys(s.nodes[n].storages) {
				st := s.nodes[n].storages[id]
				// extract_storage_stats: one entry per node, shared ones too.
				r := map[string]any{"id": "storage/" + n + "/" + id, "type": "storage", "node": n,
					"storage": id, "status": "available", "plugintype": st.pluginType(), "maxdisk": st.total, "disk": st.used(),
					"content": joinComma(st.content), "shared": st.sharedFlag()}
				if s.nodes[n].offline {
					r["status"] = "unknown"
					delete(r, "maxdisk")
					delete(r, "disk")
				}
				out = append(out, r)
			}
		}
	}
	return out, nil
}

func (s *Sim) clusterTasks(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	for i := len(s.taskList) - 1; i >= 0 && len(out) < 200; i-- {
		t := s.taskList[i]
		m := map[string]any{"upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
			"starttime": t.start.Unix(), "type": t.typ, "id": t.id, "user": t.owner()}
		if !t.running {
			m["status"] = t.exitstatus
			m["endtime"] = t.end.Unix()
		}
		out = append(out, m)
	}
	return out, nil
}

func joinComma(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}
