package pvesim

import "sync"

// The datacenter firewall options (PVE/API2/Firewall/Cluster.pm): a fresh
// cluster has the firewall off (enable 0, ebtables default 1). Kept per
// simulator outside the shared state so this file stands alone.
var clusterFw = struct {
	sync.Mutex
	opts map[*Sim]map[string]string
}{opts: map[*Sim]map[string]string{}}

func init() {
	handle("GET", "/cluster/firewall/options", (*Sim).clusterFwOptions)
	handle("PUT", "/cluster/firewall/options", (*Sim).setClusterFwOptions)
}

func (s *Sim) clusterFwOptions(req *request) (any, error) {
	clusterFw.Lock()
	defer clusterFw.Unlock()
	out := map[string]any{"enable": 0, "ebtables": 1}
	for k, v := range clusterFw.opts[s] {
		if k == "enable" || k == "ebtables" {
			out[k] = map[string]int{"0": 0, "1": 1}[v]
		} else {
			out[k] = v
		}
	}
	return out, nil
}

func (s *Sim) setClusterFwOptions(req *request) (any, error) {
	clusterFw.Lock()
	defer clusterFw.Unlock()
	if clusterFw.opts[s] == nil {
		clusterFw.opts[s] = map[string]string{}
	}
	for _, k := range []string{"enable", "ebtables", "policy_in", "policy_out", "policy_forward"} {
		if req.has(k) {
			clusterFw.opts[s][k] = req.str(k)
		}
	}
	return nil, nil
}

// SetClusterFirewall sets datacenter firewall options (tests, agentd dev).
func (s *Sim) SetClusterFirewall(opts map[string]string) {
	clusterFw.Lock()
	defer clusterFw.Unlock()
	if clusterFw.opts[s] == nil {
		clusterFw.opts[s] = map[string]string{}
	}
	for k, v := range opts {
		clusterFw.opts[s][k] = v
	}
}
