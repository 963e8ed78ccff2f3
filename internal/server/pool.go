package server

import (
	"net/http"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// poolRoutes serves the warm pools: GET lists every profile's pool (ready,
// building, claimed); PUT stores a runtime override of min_ready and max.
func (s *Server) poolRoutes(add func(method, path string, p perm, h handler)) {
	add("GET", "/v1/pools", hostRead, func(_ http.ResponseWriter, r *http.Request) (int, any, error) {
		pools, err := s.mgr.Pools(r.Context())
		if err != nil {
			return 0, nil, err
		}
		return 200, api.PoolList{Pools: pools}, nil
	})
	add("GET", "/v1/pools/{profile}", hostRead, func(_ http.ResponseWriter, r *http.Request) (int, any, error) {
		p, err := s.mgr.Pool(r.Context(), r.PathValue("profile"))
		if err != nil {
			return 0, nil, err
		}
		return 200, p, nil
	})
	add("PUT", "/v1/pools/{profile}", hostWrite, func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var req api.SetPoolRequest
		if err := decode(w, r, &req, false); err != nil {
			return 0, nil, err
		}
		p, err := s.mgr.SetPool(r.Context(), r.PathValue("profile"), req)
		if err != nil {
			return 0, nil, err
		}
		return 200, p, nil
	})
}
