package pvesim

import "fmt"

// Node reachability. The simulator's API stands for pveproxy on a node
// that stays reachable; a request for /nodes/{n}/… with n offline is what
// pveproxy proxies to n (every such method is "proxyto => 'node'") and
// cannot deliver: PVE::APIServer::AnyEvent proxy_request forwards the
// Status and Reason AnyEvent::HTTP's http_request reports for the failed
// connect, a 595 with the connect error's text and no body ("No route to
// host" for a host that is down, "Connection refused" when only pveproxy
// is stopped; Options.OfflineReason chooses).

// proxyCheck answers for a request whose {node} is offline.
func (s *Sim) proxyCheck(vars map[string]string) *Error {
	name, ok := vars["node"]
	if !ok {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.nodes[name]; n != nil && n.offline {
		return &Error{Code: 595, Msg: s.opts.OfflineReason}
	}
	return nil
}

// SetNodeOnline takes a node off the cluster (online false: powered off or
// cut off from the network) or brings it back. While it is offline its API
// answers 595 through the other nodes, /cluster/status reports it online 0
// (and quorate 0 once no majority is left), /cluster/resources and /nodes
// list it offline with its VMs in status "unknown", and its tasks make no
// progress; back online, everything continues where it was (its VMs keep
// their power state: the node was unreachable, not rebooted).
func (s *Sim) SetNodeOnline(name string, online bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.nodes[name]
	if !ok {
		return fmt.Errorf("pvesim: no node %q", name)
	}
	switch {
	case !online && !n.offline:
		n.offline, n.back = true, make(chan struct{})
	case online && n.offline:
		n.offline = false
		close(n.back)
	}
	return nil
}

// NodeOnline reports whether a node is online.
func (s *Sim) NodeOnline(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.nodes[name]
	return ok && !n.offline
}

// Nodes is the configured node list, first node first.
func (s *Sim) Nodes() []string { return append([]string(nil), s.opts.Nodes...) }

// RestrictStorage limits a storage to the named nodes, as storage.cfg's
// "nodes" option does: on every other node it no longer exists. It fails
// when one of those nodes still holds volumes on it. A test hook: the
// restriction is not kept in the state dir.
func (s *Sim) RestrictStorage(sid string, nodes ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := map[string]bool{}
	for _, n := range nodes {
		if _, ok := s.nodes[n]; !ok {
			return fmt.Errorf("pvesim: no node %q", n)
		}
		keep[n] = true
	}
	for name, n := range s.nodes {
		st, ok := n.storages[sid]
		if !ok || keep[name] {
			continue
		}
		if len(st.volumes) > 0 && !st.shared {
			return fmt.Errorf("pvesim: storage %s on %s holds volumes", sid, name)
		}
	}
	for name, n := range s.nodes {
		if !keep[name] {
			delete(n.storages, sid)
		}
	}
	return nil
}
