package pvesim

// Containers are not simulated (docs/guides/simulator.md): the node's
// container list (PVE::API2::LXC vmlist, GET /nodes/{node}/lxc) is empty, so
// a client that lists containers next to VMs works as on a host without any.

func init() {
	handle("GET", "/nodes/{node}/lxc", (*Sim).listContainers)
}

func (s *Sim) listContainers(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkNode(req.vars["node"]); err != nil {
		return nil, err
	}
	return []map[string]any{}, nil
}
