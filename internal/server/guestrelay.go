package server

import (
	"cmp"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// The guest relay: a guest on another node reaches the guest listener
// (bootstrap, artifacts, job reports) at its own node's agent bridge
// address, where the node agent relays each request to agentd over the
// authenticated API. The guest's source address and bearer token travel in
// headers; agentd believes the address only from the node agent of the node
// that address's sandbox runs on, and the guest listener then checks it as
// it checks a direct request.

// SetGuestRelay sets the guest listener's handler that relayed requests
// are served by.
func (s *Server) SetGuestRelay(h http.Handler) {
	relay := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.relayGuest(w, r, h); err != nil {
			var ae *api.Error
			if !errors.As(err, &ae) {
				ae = &api.Error{Status: http.StatusInternalServerError, Code: api.CodeInternal, Message: err.Error()}
			}
			writeJSON(w, ae.Status, api.ErrorBody{Error: ae})
		}
	})
	for _, m := range []string{"GET", "POST"} { // the guest listener's methods
		s.handle(m+" /v1/nodes/{name}/guest/{path...}", guestRelay, relay)
	}
}

func (s *Server) relayGuest(w http.ResponseWriter, r *http.Request, h http.Handler) error {
	node, err := agentNode(r)
	if err != nil {
		return err
	}
	addr, err := netip.ParseAddr(r.Header.Get(api.GuestAddrHeader))
	if err != nil {
		return api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "%s: want the guest's IP address", api.GuestAddrHeader)
	}
	ctx := auth.Host(r.Context())
	id, err := s.mgr.Store().AddressOwner(ctx, addr)
	var sb *store.Sandbox
	if err == nil {
		sb, err = s.mgr.Store().Sandbox(ctx, id)
	}
	if err != nil || cmp.Or(sb.Node, s.node) != node {
		return api.Errorf(http.StatusForbidden, api.CodeForbidden, "%s is not the address of a sandbox on node %s", addr, node)
	}
	g := r.Clone(r.Context())
	g.URL.Path = "/" + r.PathValue("path")
	g.URL.RawPath = ""
	g.RemoteAddr = net.JoinHostPort(addr.String(), "0")
	g.Header.Del("Authorization")
	if v := r.Header.Get(api.GuestAuthHeader); strings.HasPrefix(v, "Bearer ") {
		g.Header.Set("Authorization", v)
	}
	g.Header.Del(api.GuestAuthHeader)
	g.Header.Del(api.GuestAddrHeader)
	h.ServeHTTP(w, g)
	return nil
}
