package server

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
)

func (s *Server) nodeRoutes(add func(method, path string, p perm, h handler)) {
	add("GET", "/v1/nodes", teamRead, func(_ http.ResponseWriter, r *http.Request) (int, any, error) {
		ns, err := s.mgr.Nodes(r.Context())
		if err != nil {
			return 0, nil, err
		}
		return 200, api.NodeList{Nodes: ns}, nil
	})
	drain := func(drained bool) handler {
		return func(w http.ResponseWriter, r *http.Request) (int, any, error) {
			var empty struct{}
			if err := decode(w, r, &empty, true); err != nil {
				return 0, nil, err
			}
			n, err := s.mgr.Drain(r.Context(), r.PathValue("name"), drained)
			if err != nil {
				return 0, nil, err
			}
			return 200, n, nil
		}
	}
	add("POST", "/v1/nodes/{name}/drain", hostWrite, drain(true))
	add("POST", "/v1/nodes/{name}/undrain", hostWrite, drain(false))
	add("GET", "/v1/nodes/{name}/duties", nodeAgent, func(_ http.ResponseWriter, r *http.Request) (int, any, error) {
		node, err := agentNode(r)
		if err != nil {
			return 0, nil, err
		}
		if s.duties == nil {
			return 0, nil, api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "this agent hands out no node duties")
		}
		d, err := s.duties(r.Context(), node)
		if err != nil {
			return 0, nil, err
		}
		return 200, d, nil
	})
	add("POST", "/v1/nodes/{name}/report", nodeAgent, func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		node, err := agentNode(r)
		if err != nil {
			return 0, nil, err
		}
		var rep api.NodeReport
		if err := decode(w, r, &rep, false); err != nil {
			return 0, nil, err
		}
		for i, f := range rep.SSHFlows {
			if _, err := netip.ParseAddr(f); err != nil {
				return 0, nil, api.FieldError(fmt.Sprintf("ssh_flows[%d]", i), "want an IP address, got %q", f)
			}
		}
		s.mgr.NodeReport(node, rep)
		return 200, map[string]string{"node": node, "status": "recorded"}, nil
	})
}

// SetNodeDuties sets how node duties are rendered (the agent's config and
// profiles).
func (s *Server) SetNodeDuties(f func(context.Context, string) (*api.NodeDuties, error)) {
	s.duties = f
}

// agentNode is the node a node-agent route is about: a node agent's token
// speaks for its own node only (another node is a 404, as another team's
// object is).
func agentNode(r *http.Request) (string, error) {
	node := r.PathValue("name")
	if p, _ := auth.From(r.Context()); p.Role == auth.NodeAgent && p.Node != node {
		return "", api.Errorf(http.StatusNotFound, api.CodeNodeNotFound, "node %q not found", node)
	}
	return node, nil
}
