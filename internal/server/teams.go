package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"regexp"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/token"
)

func (s *Server) teamRoutes(add func(method, path string, p perm, h handler)) {
	add("GET", "/v1/teams", teamRead, s.listTeams)
	add("POST", "/v1/teams", hostWrite, s.createTeam)
	add("GET", "/v1/teams/{name}", teamRead, s.getTeam)
	add("PUT", "/v1/teams/{name}", hostWrite, s.updateTeam)
	add("DELETE", "/v1/teams/{name}", hostWrite, s.deleteTeam)
	add("GET", "/v1/tokens", teamAdmin, s.listTokens)
	add("POST", "/v1/tokens", teamAdmin, s.createToken)
	add("POST", "/v1/tokens/{ref}/revoke", teamAdmin, s.revokeToken)
	add("POST", "/v1/tokens/{ref}/rotate", teamAdmin, s.rotateToken)
}

func (s *Server) teamView(r *http.Request, t *api.Team) (api.Team, error) {
	use, err := s.mgr.Store().TeamUsage(r.Context(), t.Name)
	if err != nil {
		return api.Team{}, err
	}
	out := *t
	out.Usage = &use
	return out, nil
}

func (s *Server) listTeams(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	ts, err := s.mgr.Store().Teams(r.Context())
	if err != nil {
		return 0, nil, err
	}
	out := api.TeamList{Teams: []api.Team{}}
	for _, t := range ts {
		v, err := s.teamView(r, t)
		if err != nil {
			return 0, nil, err
		}
		out.Teams = append(out.Teams, v)
	}
	return 200, out, nil
}

func (s *Server) findTeam(r *http.Request) (*api.Team, error) {
	name := r.PathValue("name")
	t, err := s.mgr.Store().Team(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, api.TeamNotFound(name)
	}
	return t, err
}

func (s *Server) getTeam(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	t, err := s.findTeam(r)
	if err != nil {
		return 0, nil, err
	}
	v, err := s.teamView(r, t)
	return 200, v, err
}

func checkQuota(q api.TeamQuota) error {
	for _, f := range []struct {
		k string
		v int64
	}{{"sandboxes", q.Sandboxes}, {"cores", q.Cores}, {"memory_mb", q.MemoryMB}, {"workspace_gb", q.WorkspaceGB},
		{"ttl_seconds", q.TTLSeconds}, {"artifact_bytes", q.ArtifactBytes}} {
		if f.v < 0 {
			return api.FieldError("quota."+f.k, "must be 0 (no limit) or more, got %d", f.v)
		}
	}
	return nil
}

func (s *Server) createTeam(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.CreateTeamRequest
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	if err := auth.ValidTeam(req.Name); err != nil {
		return 0, nil, api.FieldError("name", "%v", err)
	}
	if err := checkQuota(req.Quota); err != nil {
		return 0, nil, err
	}
	t := &api.Team{Name: req.Name, Description: req.Description, Quota: req.Quota}
	err := s.mgr.Store().CreateTeam(r.Context(), t)
	if errors.Is(err, store.ErrConflict) {
		// A retry of the same create is answered with the team; anything
		// else would silently change it.
		ex, gerr := s.mgr.Store().Team(r.Context(), req.Name)
		if gerr == nil && ex.Description == req.Description && ex.Quota == req.Quota {
			v, err := s.teamView(r, ex)
			return 200, v, err
		}
		return 0, nil, api.Errorf(http.StatusConflict, api.CodeConflict, "team %q already exists with another description or quota; change it with PUT /v1/teams/%s (agentd team update)", req.Name, req.Name)
	}
	if err != nil {
		return 0, nil, err
	}
	v, err := s.teamView(r, t)
	return 201, v, err
}

func (s *Server) updateTeam(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.UpdateTeamRequest
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	if err := checkQuota(req.Quota); err != nil {
		return 0, nil, err
	}
	t, err := s.findTeam(r)
	if err != nil {
		return 0, nil, err
	}
	t.Description, t.Quota = req.Description, req.Quota
	if err := s.mgr.Store().UpdateTeam(r.Context(), t); errors.Is(err, store.ErrNotFound) {
		return 0, nil, api.TeamNotFound(t.Name)
	} else if err != nil {
		return 0, nil, err
	}
	v, err := s.teamView(r, t)
	return 200, v, err
}

func (s *Server) deleteTeam(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	name := r.PathValue("name")
	if name == auth.DefaultTeam {
		return 0, nil, api.Errorf(http.StatusConflict, api.CodeTeamInUse, "team %s owns everything made before teams and what global tokens create; it cannot be deleted", name)
	}
	err := s.mgr.Store().DeleteTeam(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil, api.TeamNotFound(name)
	}
	if err != nil {
		return 0, nil, err
	}
	return 200, map[string]string{"deleted": name}, nil
}

// validNode: PVE node names are hostnames (pve-common's pve-node format).
func validNode(s string) bool { return nodeRE.MatchString(s) }

var nodeRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)

// tokenNameRE: what `agentd token create --name` accepts.
var tokenNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,62})$`)

// tokenTTL reads an optional TTL; the expiry is nil without one.
func (s *Server) tokenTTL(v string) (*time.Time, error) {
	if v == "" {
		return nil, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return nil, api.FieldError("ttl", "want a positive Go duration such as 720h, got %q", v)
	}
	exp := s.mgr.Store().Now().Add(d).UTC().Truncate(time.Millisecond)
	return &exp, nil
}

// boundByIssuer refuses a token (created or rotated) that would outlive
// the token of the caller issuing it: an expiring team admin token must not
// mint a longer-lived one, or its expiry would bind nothing. It refuses
// rather than clamps, so the caller is never handed a token that ends
// sooner than it asked. The socket and tokens without expiry are unbound.
func (s *Server) boundByIssuer(p auth.Principal, exp *time.Time) error {
	if p.Expires == nil || exp != nil && !exp.After(*p.Expires) {
		return nil
	}
	left := p.Expires.Sub(s.mgr.Store().Now()).Truncate(time.Second)
	asked := "no expiry"
	if exp != nil {
		asked = "expiry " + exp.UTC().Format(time.RFC3339)
	}
	return api.FieldError("ttl", "a token cannot outlive the token issuing it: %s expires at %s (in %s) and this one would have %s; give a ttl of at most %s",
		p.Actor, p.Expires.UTC().Format(time.RFC3339), left, asked, left)
}

// newToken makes a token value: the prefix lets secret scanners find a
// leaked one.
func newToken() (raw, hash string) {
	raw, _ = token.New()
	raw = "agt_" + raw
	return raw, token.Hash(raw)
}

func (s *Server) listTokens(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	ts, err := s.mgr.Store().APITokens(r.Context(), r.URL.Query().Get("all") == "true")
	if err != nil {
		return 0, nil, err
	}
	out := api.TokenList{Tokens: []api.Token{}}
	for _, t := range ts {
		out.Tokens = append(out.Tokens, t.Token)
	}
	return 200, out, nil
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.CreateTokenRequest
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	p, _ := auth.From(r.Context())
	if !tokenNameRE.MatchString(req.Name) {
		return 0, nil, api.FieldError("name", "want 1-63 lowercase letters, digits, '.', '_' or '-', got %q", req.Name)
	}
	role, err := auth.ParseRole(req.Role)
	if err != nil {
		return 0, nil, api.FieldError("role", "%v", err)
	}
	switch {
	case (role == auth.NodeAgent) != (req.Node != ""):
		return 0, nil, api.FieldError("node", "a node-agent token needs both role node and the node it speaks for")
	case role == auth.NodeAgent && (!p.Global() || p.Scope() != "" || req.Team != ""):
		return 0, nil, api.Errorf(http.StatusForbidden, api.CodeForbidden, "node-agent tokens are global: only a global admin acting across teams creates them")
	case role == auth.NodeAgent && !validNode(req.Node):
		return 0, nil, api.FieldError("node", "%q is not a node name", req.Node)
	}
	team := req.Team
	if team == "" {
		team = p.Scope() // a global caller acting across teams makes a global token
	}
	if !p.Global() && team != p.Team {
		return 0, nil, api.Errorf(http.StatusForbidden, api.CodeForbidden, "a token of team %s can only create tokens of team %s", p.Team, p.Team)
	}
	if team != "" {
		if err := auth.ValidTeam(team); err != nil {
			return 0, nil, api.FieldError("team", "%v", err)
		}
	}
	exp, err := s.tokenTTL(req.TTL)
	if err != nil {
		return 0, nil, err
	}
	if err := s.boundByIssuer(p, exp); err != nil {
		return 0, nil, err
	}
	raw, hash := newToken()
	var id [6]byte
	_, _ = rand.Read(id[:])
	t := &store.APIToken{Token: api.Token{ID: "tok-" + hex.EncodeToString(id[:]), Name: req.Name, Team: team, Role: string(role),
		Node: req.Node, ExpiresAt: exp, CreatedBy: p.Actor}, Hash: hash}
	switch err := s.mgr.Store().CreateAPIToken(r.Context(), t); {
	case errors.Is(err, store.ErrNotFound):
		return 0, nil, api.TeamNotFound(team)
	case errors.Is(err, store.ErrConflict):
		where := "global tokens"
		if team != "" {
			where = "team " + team
		}
		return 0, nil, api.Errorf(http.StatusConflict, api.CodeConflict, "%s already has a live token named %q; revoke it or rotate it (agentd token rotate)", where, req.Name)
	case err != nil:
		return 0, nil, err
	}
	return 201, api.IssuedToken{Token: t.Token, Value: raw}, nil
}

func (s *Server) findToken(r *http.Request) (*store.APIToken, error) {
	ref := r.PathValue("ref")
	t, err := s.mgr.Store().LookupAPIToken(r.Context(), ref)
	if errors.Is(err, store.ErrNotFound) {
		return nil, api.Errorf(http.StatusNotFound, api.CodeTokenNotFound, "token %q not found among live tokens (agentd token list)", ref)
	}
	return t, err
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var empty struct{}
	if err := decode(w, r, &empty, true); err != nil {
		return 0, nil, err
	}
	t, err := s.findToken(r)
	if err != nil {
		return 0, nil, err
	}
	if err := s.mgr.Store().RevokeAPIToken(r.Context(), t); errors.Is(err, store.ErrNotFound) {
		return 0, nil, api.Errorf(http.StatusNotFound, api.CodeTokenNotFound, "token %s was revoked meanwhile", t.Name)
	} else if err != nil {
		return 0, nil, err
	}
	return 200, t.Token, nil
}

func (s *Server) rotateToken(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.RotateTokenRequest
	if err := decode(w, r, &req, true); err != nil {
		return 0, nil, err
	}
	exp, err := s.tokenTTL(req.TTL)
	if err != nil {
		return 0, nil, err
	}
	p, _ := auth.From(r.Context())
	if err := s.boundByIssuer(p, exp); err != nil {
		return 0, nil, err
	}
	t, err := s.findToken(r)
	if err != nil {
		return 0, nil, err
	}
	raw, hash := newToken()
	if err := s.mgr.Store().RotateAPIToken(r.Context(), t, hash, exp); errors.Is(err, store.ErrNotFound) {
		return 0, nil, api.Errorf(http.StatusNotFound, api.CodeTokenNotFound, "token %s was revoked meanwhile", t.Name)
	} else if err != nil {
		return 0, nil, err
	}
	return 200, api.IssuedToken{Token: t.Token, Value: raw}, nil
}
