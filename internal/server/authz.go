package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/token"
)

// perm is what a route needs of its caller. Every route names one when it
// is registered (handle), and a request to a route without one is refused:
// deny by default.
type perm int

const (
	public     perm = iota + 1 // no token (/healthz)
	teamRead                   // reading the caller's team's objects (any role)
	teamWrite                  // changing them (member, admin)
	teamAdmin                  // the team's tokens (admin)
	hostRead                   // host-wide views (global principals)
	hostWrite                  // host-wide changes, teams (global admins)
	nodeAgent                  // one node's duties and reports (its node agent, global admins)
	guestRelay                 // speaking for one node's guests (its node agent alone)
)

func (p perm) String() string {
	return [...]string{"", "public", "team read", "team write", "team admin", "host read", "host write", "node agent", "guest relay"}[p]
}

// allows reports whether principal pr may call a route needing p.
func (p perm) allows(pr auth.Principal) bool {
	switch p {
	case public:
		return true
	case teamRead:
		return pr.Role.AtLeast(auth.Read)
	case teamWrite:
		return pr.Role.AtLeast(auth.Member)
	case teamAdmin:
		return pr.Role.AtLeast(auth.Admin)
	case hostRead:
		return pr.Global() && pr.Role.AtLeast(auth.Read)
	case hostWrite:
		return pr.Global() && pr.Role.AtLeast(auth.Admin)
	case nodeAgent:
		// The handler checks that a node agent asks only for its node.
		return pr.Role == auth.NodeAgent && pr.Node != "" || pr.Global() && pr.Role.AtLeast(auth.Admin)
	case guestRelay:
		// A guest's address is its identity on the guest listener: no
		// principal but the node agent (a global admin included) needs to
		// claim one.
		return pr.Role == auth.NodeAgent && pr.Node != ""
	}
	return false
}

// Route is one registered endpoint and what it needs (the auth matrix test
// walks them all).
type Route struct {
	Pattern string // "METHOD /path"
	Perm    string
}

// Routes lists every registered route.
func (s *Server) Routes() []Route {
	out := make([]Route, 0, len(s.policy))
	for pat, p := range s.policy {
		out = append(out, Route{Pattern: pat, Perm: p.String()})
	}
	return out
}

// handle registers a route with its permission.
func (s *Server) handle(pattern string, p perm, h http.Handler) {
	if s.policy == nil {
		s.policy = map[string]perm{}
	}
	s.policy[pattern] = p
	s.mux.Handle(pattern, h)
}

type socketUIDKey struct{}

// WithSocketPeer records the Unix socket peer's uid on a connection's
// context (http.Server.ConnContext), for the socket principal's name.
func WithSocketPeer(ctx context.Context, uid int) context.Context {
	return context.WithValue(ctx, socketUIDKey{}, uid)
}

// ServeHTTP serves the trusted Unix socket: its caller is a global admin
// ("socket:<uid>"); file permissions on the socket are the access control.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	actor := "socket"
	if uid, ok := r.Context().Value(socketUIDKey{}).(int); ok {
		actor = "socket:" + strconv.Itoa(uid)
	}
	s.dispatch(w, r, auth.Principal{Role: auth.Admin, Actor: actor})
}

// WithToken guards the API with bearer tokens (the TCP listener): the
// agent's own API token (a global admin, as before teams) or a token from
// the database, checked on every request so that a revocation holds at the
// next one. /healthz stays open so load balancers can probe it.
func (s *Server) WithToken(agentToken string) http.Handler {
	want := []byte("Bearer " + agentToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			s.dispatch(w, r, auth.Principal{Actor: "anonymous"})
			return
		}
		got := r.Header.Get("Authorization")
		if agentToken != "" && subtle.ConstantTimeCompare([]byte(got), want) == 1 {
			s.dispatch(w, r, auth.Principal{Role: auth.Admin, Actor: "token:agent"})
			return
		}
		p, aerr := s.tokenPrincipal(r.Context(), got)
		if aerr != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="agentd"`)
			writeJSON(w, aerr.Status, api.ErrorBody{Error: aerr})
			return
		}
		s.dispatch(w, r, p)
	})
}

// tokenPrincipal checks a database token.
func (s *Server) tokenPrincipal(ctx context.Context, header string) (auth.Principal, *api.Error) {
	unauth := func(code api.Code, format string, args ...any) *api.Error {
		return &api.Error{Status: http.StatusUnauthorized, Code: code, Message: fmt.Sprintf(format, args...)}
	}
	raw, ok := cutBearer(header)
	if !ok {
		if header == "" {
			return auth.Principal{}, unauth(api.CodeUnauthorized, "missing bearer token: set AGENTLAB_TOKEN (or --token) to an API token of the agent")
		}
		return auth.Principal{}, unauth(api.CodeUnauthorized, "invalid bearer token")
	}
	st := s.mgr.Store()
	t, err := st.APITokenByHash(ctx, token.Hash(raw))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return auth.Principal{}, unauth(api.CodeUnauthorized, "invalid bearer token")
	case err != nil:
		return auth.Principal{}, &api.Error{Status: http.StatusInternalServerError, Code: api.CodeInternal, Message: err.Error()}
	case t.RevokedAt != nil:
		return auth.Principal{}, unauth(api.CodeTokenRevoked, "token %s was revoked at %s", t.Name, t.RevokedAt.Format(time.RFC3339))
	case t.ExpiresAt != nil && !st.Now().Before(*t.ExpiresAt):
		return auth.Principal{}, unauth(api.CodeTokenExpired, "token %s expired at %s", t.Name, t.ExpiresAt.Format(time.RFC3339))
	}
	role, err := auth.ParseRole(t.Role)
	if err != nil {
		return auth.Principal{}, unauth(api.CodeUnauthorized, "token %s: %v", t.Name, err)
	}
	st.TouchAPIToken(ctx, t)
	actor := "token:" + t.Name
	if t.Team != "" {
		actor = "token:" + t.Team + "/" + t.Name
	}
	if role == auth.NodeAgent {
		actor = "node:" + t.Node
	}
	return auth.Principal{Team: t.Team, Role: role, Actor: actor, TokenID: t.ID, Expires: t.ExpiresAt, Node: t.Node}, nil
}

func cutBearer(h string) (string, bool) {
	const prefix = "Bearer "
	if len(h) <= len(prefix) || h[:len(prefix)] != prefix {
		return "", false
	}
	return h[len(prefix):], true
}

// dispatch routes an authenticated request: the route's permission is
// checked against the principal, the team header applied, and the
// principal put on the request context, where the store scopes every
// lookup by it.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	h, pattern := s.mux.Handler(r)
	if pattern == "" {
		s.unmatched(w, r, h)
		return
	}
	need, ok := s.policy[pattern]
	deny := func(status int, code api.Code, format string, args ...any) {
		writeJSON(w, status, api.ErrorBody{Error: &api.Error{Code: code, Message: fmt.Sprintf(format, args...)}})
	}
	if !ok {
		deny(http.StatusForbidden, api.CodeForbidden, "%s has no access policy; refused", pattern)
		return
	}
	if need != public && p.Role == "" {
		deny(http.StatusUnauthorized, api.CodeUnauthorized, "missing bearer token")
		return
	}
	if !need.allows(p) {
		who := "a global " + string(p.Role) + " token"
		if !p.Global() {
			who = "a " + string(p.Role) + " token of team " + p.Team
		}
		deny(http.StatusForbidden, api.CodeForbidden, "%s needs %s access; %s (%s) does not have it", pattern, need, who, p.Actor)
		return
	}
	// A relayed guest request's headers are the guest's: a team header
	// there selects nothing (and must not tell a guest which teams exist).
	if t := r.Header.Get(api.TeamHeader); t != "" && need != hostRead && need != hostWrite && need != guestRelay {
		switch {
		case !p.Global() && t != p.Team:
			deny(http.StatusForbidden, api.CodeForbidden, "%s: a token of team %s acts only in team %s", api.TeamHeader, p.Team, p.Team)
			return
		case p.Global():
			if err := auth.ValidTeam(t); err != nil {
				deny(http.StatusBadRequest, api.CodeBadRequest, "%s: %v", api.TeamHeader, err)
				return
			}
			if _, err := s.mgr.Store().Team(r.Context(), t); errors.Is(err, store.ErrNotFound) {
				deny(http.StatusNotFound, api.CodeTeamNotFound, "%s: team %q does not exist (agentd team list)", api.TeamHeader, t)
				return
			} else if err != nil {
				deny(http.StatusInternalServerError, api.CodeInternal, "%v", err)
				return
			}
			p.Selected = t
		}
	}
	s.mux.ServeHTTP(w, r.WithContext(auth.With(r.Context(), p)))
}

// unmatched answers a request no route matched with the JSON error body
// (the mux's own 404/405 answers are plain text).
func (s *Server) unmatched(w http.ResponseWriter, r *http.Request, h http.Handler) {
	rec := &statusRecorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	if rec.status == http.StatusMethodNotAllowed {
		allow := rec.header.Get("Allow")
		w.Header().Set("Allow", allow)
		writeJSON(w, rec.status, api.ErrorBody{Error: &api.Error{Code: api.CodeMethodNotAllowed,
			Message: fmt.Sprintf("%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow)}})
		return
	}
	writeJSON(w, http.StatusNotFound, api.ErrorBody{Error: &api.Error{Code: api.CodeNotFound,
		Message: fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)}})
}
