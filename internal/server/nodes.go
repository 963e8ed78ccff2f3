package server

import (
	"net/http"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
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
}
