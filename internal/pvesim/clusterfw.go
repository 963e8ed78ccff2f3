package pvesim

// The datacenter firewall options (PVE/API2/Firewall/Cluster.pm): a fresh
// cluster has the firewall off (enable 0, ebtables default 1). They live in
// Sim.clusterFw (cluster.fw), persisted with the rest of the state.

func init() {
	handle("GET", "/cluster/firewall/options", (*Sim).clusterFwOptions)
	handle("PUT", "/cluster/firewall/options", (*Sim).setClusterFwOptions)
}

func (s *Sim) clusterFwOptions(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]any{"enable": 0, "ebtables": 1}
	for k, v := range s.clusterFw {
		if k == "enable" || k == "ebtables" {
			out[k] = map[string]int{"0": 0, "1": 1}[v]
		} else {
			out[k] = v
		}
	}
	return out, nil
}

func (s *Sim) setClusterFwOptions(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clusterFw == nil {
		s.clusterFw = map[string]string{}
	}
	for _, k := range []string{"enable", "ebtables", "policy_in", "policy_out", "policy_forward"} {
		if req.has(k) {
			s.clusterFw[k] = req.str(k)
		}
	}
	return nil, nil
}

// SetClusterFirewall sets datacenter firewall options (tests, agentd dev).
func (s *Sim) SetClusterFirewall(opts map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clusterFw == nil {
		s.clusterFw = map[string]string{}
	}
	for k, v := range opts {
		s.clusterFw[k] = v
	}
}
