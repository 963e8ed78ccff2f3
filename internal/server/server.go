// Package server is agentd's HTTP API (/v1): routing, strict JSON decoding,
// typed errors, and the bearer-token check for TCP clients.
package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/jobs"
	"github.com/agentlab/terraform-provider-agentlab/internal/sandbox"
	"github.com/agentlab/terraform-provider-agentlab/internal/session"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/strictjson"
	"github.com/agentlab/terraform-provider-agentlab/internal/version"
)

// MaxBody bounds every request body.
const MaxBody = 64 << 10

// Server serves the control API.
type Server struct {
	mgr      *sandbox.Manager
	sessions *session.Manager
	log      *slog.Logger
	started  time.Time
	node     string
	mux      *http.ServeMux
	policy   map[string]perm
	duties   func(context.Context, string) (*api.NodeDuties, error)
	jobs     *jobs.Manager
	loops    interface {
		Status() map[string]api.LoopStatus
	}
}

// SetLoops lets status report the runtime loops.
func (s *Server) SetLoops(l interface {
	Status() map[string]api.LoopStatus
}) {
	s.loops = l
}

// New builds the API handler.
func New(mgr *sandbox.Manager, sessions *session.Manager, node string, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{mgr: mgr, sessions: sessions, log: log, started: time.Now().UTC(), node: node, mux: http.NewServeMux()}
	s.routes()
	return s
}

type handler func(w http.ResponseWriter, r *http.Request) (status int, body any, err error)

func (s *Server) routes() {
	add := func(method, path string, p perm, h handler) {
		s.handle(method+" "+path, p, s.wrap(h))
	}
	add("GET", "/healthz", public, func(http.ResponseWriter, *http.Request) (int, any, error) {
		return 200, map[string]string{"status": "ok"}, nil
	})
	add("GET", "/v1/status", teamRead, s.status)
	add("GET", "/v1/profiles", teamRead, s.listProfiles)
	add("GET", "/v1/profiles/{name}", teamRead, s.getProfile)
	add("GET", "/v1/sandboxes", teamRead, s.listSandboxes)
	add("POST", "/v1/sandboxes", teamWrite, s.createSandbox)
	add("POST", "/v1/sandboxes/prune", hostWrite, s.prune)
	add("POST", "/v1/reconcile", hostWrite, s.reconcile)
	add("GET", "/v1/orphans", hostRead, s.orphans)
	add("GET", "/v1/sandboxes/{ref}", teamRead, s.getSandbox)
	add("POST", "/v1/sandboxes/{ref}/start", teamWrite, s.op(s.mgr.Start))
	add("POST", "/v1/sandboxes/{ref}/stop", teamWrite, s.op(s.mgr.Stop))
	add("POST", "/v1/sandboxes/{ref}/touch", teamWrite, s.op(s.mgr.Touch))
	add("POST", "/v1/sandboxes/{ref}/destroy", teamWrite, s.destroy)
	add("POST", "/v1/sandboxes/{ref}/lease/renew", teamWrite, s.renew)
	add("GET", "/v1/sandboxes/{ref}/events", teamRead, s.sandboxEvents)
	add("GET", "/v1/events", teamRead, s.events)
	s.workspaceRoutes(add)
	s.accessRoutes(add)
	s.poolRoutes(add)
	s.teamRoutes(add)
	s.nodeRoutes(add)
}

type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *statusRecorder) WriteHeader(code int)        { r.status = code }

func (s *Server) wrap(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rid := r.Header.Get("X-Request-Id")
		if rid == "" || len(rid) > 64 {
			var b [6]byte
			_, _ = rand.Read(b[:])
			rid = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-Id", rid)
		status, body, err := h(w, r)
		if err != nil {
			var ae *api.Error
			switch {
			case errors.As(api.Invalid(err), &ae):
				// A validation failure is the client's mistake wherever it surfaced.
			case errors.Is(err, store.ErrAmbiguous):
				ae = &api.Error{Status: http.StatusConflict, Code: api.CodeAmbiguous, Message: err.Error()}
			case errors.Is(err, store.ErrNoTeam):
				ae = &api.Error{Status: http.StatusNotFound, Code: api.CodeTeamNotFound, Message: err.Error() + " (deleted meanwhile?)"}
			case errors.Is(err, store.ErrTeamInUse):
				ae = &api.Error{Status: http.StatusConflict, Code: api.CodeTeamInUse, Message: err.Error()}
			case errors.Is(err, store.ErrStale), errors.Is(err, store.ErrConflict):
				// A compare-and-set lost to a concurrent request: the caller
				// may retry; never a 500.
				ae = &api.Error{Status: http.StatusConflict, Code: api.CodeConflict, Message: err.Error() + "; retry"}
			default:
				s.log.Error("request failed", "request_id", rid, "method", r.Method, "path", r.URL.Path, "err", err)
				ae = &api.Error{Status: http.StatusInternalServerError, Code: api.CodeInternal, Message: err.Error()}
			}
			status, body = ae.Status, api.ErrorBody{Error: ae}
		}
		writeJSON(w, status, body)
		level := slog.LevelInfo
		if r.Method == http.MethodGet {
			level = slog.LevelDebug // polling would drown everything else
		}
		s.log.Log(r.Context(), level, "request", "request_id", rid, "method", r.Method, "path", r.URL.Path, "status", status, "duration", time.Since(start))
	}
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(body)
}

// decode reads a JSON body strictly: size-limited, field names matched
// case-sensitively, duplicate and unknown keys rejected, one value only. An empty body decodes as {} when optional.
func decode(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	return decodeMax(w, r, v, optional, MaxBody)
}

// decodeMax is decode with its own size limit (exec carries up to 64 KiB of
// stdin, which JSON escaping can grow).
func decodeMax(w http.ResponseWriter, r *http.Request, v any, optional bool, limit int64) error {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return api.Errorf(http.StatusRequestEntityTooLarge, api.CodeBodyTooLarge, "request body exceeds %d bytes", limit)
		}
		return api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "read body: %v", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		if optional {
			return nil
		}
		return api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "request body is empty; want a JSON object")
	}
	if err := strictjson.Decode(data, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return api.FieldError(te.Field, "want a JSON %s, got %s", te.Type.Kind(), te.Value)
		}
		var se *strictjson.Error
		if errors.As(err, &se) && se.Field != "" {
			return api.FieldError(se.Field, "%s", se.Msg)
		}
		return api.Errorf(http.StatusBadRequest, api.CodeBadRequest, "invalid JSON body: %v", err)
	}
	return nil
}

func (s *Server) status(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	counts, err := s.mgr.Store().Counts(r.Context())
	if err != nil {
		return 0, nil, err
	}
	st := api.Status{Version: version.Version, Node: s.node, InstanceID: s.mgr.Instance(), Sandboxes: map[api.State]int{}, StartedAt: s.started,
		Profiles: s.profileNames(r.Context()), IdleStop: s.mgr.IdleStatus(), SSH: s.mgr.SSHInfo()}
	p, ok := auth.From(r.Context())
	if ok {
		st.Caller = api.Caller{Actor: p.Actor, Team: p.Team, Role: string(p.Role), ActingIn: p.Selected}
	}
	// The loops work on every team's objects, and their last errors name
	// them: host information, not a team's.
	if s.loops != nil && (!ok || p.Global()) {
		st.Loops = s.loops.Status()
	}
	for _, state := range api.States {
		st.Sandboxes[state] = counts[state]
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if v, err := s.mgr.Proxmox().Version(ctx); err != nil {
		st.Proxmox.Error = err.Error()
	} else {
		st.Proxmox.Reachable, st.Proxmox.Version = true, v
	}
	return 200, st, nil
}

func (s *Server) listProfiles(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	out := api.ProfileList{Profiles: []api.Profile{}}
	set := s.mgr.Profiles()
	for _, n := range s.profileNames(r.Context()) {
		out.Profiles = append(out.Profiles, set[n].API())
	}
	return 200, out, nil
}

// profileNames lists the profiles the caller's team may use (all of them
// for a global caller acting across teams).
func (s *Server) profileNames(ctx context.Context) []string {
	return s.mgr.ProfileNames(auth.Scope(ctx))
}

func (s *Server) getProfile(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	name := r.PathValue("name")
	p, ok := s.mgr.Profiles()[name]
	if team := auth.Scope(r.Context()); ok && team != "" && !p.Allows(team) {
		// A profile limited to other teams is not there for this one, as
		// in the list.
		ok = false
	}
	if !ok {
		return 0, nil, api.Errorf(http.StatusNotFound, api.CodeProfileNotFound, "profile %q does not exist (available: %s)",
			name, strings.Join(s.profileNames(r.Context()), ", "))
	}
	return 200, p.API(), nil
}

func (s *Server) listSandboxes(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	q := r.URL.Query()
	f := store.Filter{Profile: q.Get("profile"), Name: q.Get("name")}
	for k := range q {
		switch k {
		case "state", "profile", "name", "all", "pooled", "limit", "after":
		default:
			return 0, nil, api.FieldError(k, "unknown filter (known: state, profile, name, all, pooled; paging: limit, after)")
		}
	}
	for _, v := range q["state"] {
		for _, st := range strings.Split(v, ",") {
			state := api.State(strings.ToUpper(strings.TrimSpace(st)))
			if !state.Valid() {
				return 0, nil, api.FieldError("state", "%q is not a sandbox state (one of: %s)", st, statesList())
			}
			f.States = append(f.States, state)
		}
	}
	f.IncludeDestroyed = q.Get("all") == "true" || q.Get("all") == "1"
	p, err := pageOf(r)
	if err != nil {
		return 0, nil, err
	}
	list := s.mgr.List
	if q.Get("pooled") == "true" && auth.Scope(r.Context()) == "" {
		// Warm-pool members too (they are no one's sandbox, so hidden by
		// default): what a soak or an operator auditing VMs needs. Members
		// are no team's, so a caller scoped to a team never lists them.
		list = s.mgr.Store().Sandboxes
	}
	rows, err := list(r.Context(), f)
	if err != nil {
		return 0, nil, err
	}
	out := api.SandboxList{Sandboxes: make([]api.Sandbox, 0, len(rows))}
	for _, sb := range rows {
		out.Sandboxes = append(out.Sandboxes, sb.Sandbox)
	}
	out.Sandboxes, out.Next = paginate(out.Sandboxes, func(s api.Sandbox) string { return newestFirst(s.CreatedAt, s.ID) }, p)
	return 200, out, nil
}

func statesList() string {
	names := make([]string, len(api.States))
	for i, s := range api.States {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.CreateSandboxRequest
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	sb, created, err := s.mgr.Create(r.Context(), req)
	if err != nil {
		return 0, nil, err
	}
	w.Header().Set("Location", "/v1/sandboxes/"+sb.Name)
	if created {
		return http.StatusAccepted, sb.Sandbox, nil
	}
	return http.StatusOK, sb.Sandbox, nil
}

// getSandbox answers one sandbox; with ?wait=settled it is a long-poll that
// answers once agentd stops working on it (or after timeout, default and at
// most 30s, with the current view: the client asks again).
func (s *Server) getSandbox(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	q := r.URL.Query()
	var timeout time.Duration
	switch w := q.Get("wait"); w {
	case "":
		if q.Has("timeout") {
			return 0, nil, api.FieldError("timeout", "is only for a long-poll: add wait=settled")
		}
	case "settled":
		timeout = sandbox.MaxWait
		if t := q.Get("timeout"); t != "" {
			d, err := time.ParseDuration(t)
			if err != nil || d < 0 {
				return 0, nil, api.FieldError("timeout", "want a Go duration such as 10s (at most %s), got %q", sandbox.MaxWait, t)
			}
			timeout = min(d, sandbox.MaxWait)
		}
	default:
		return 0, nil, api.FieldError("wait", "the only wait condition is \"settled\", got %q", w)
	}
	sb, err := s.mgr.WaitSettled(r.Context(), r.PathValue("ref"), timeout)
	if err != nil {
		return 0, nil, err
	}
	return 200, sb.Sandbox, nil
}

func (s *Server) op(fn func(context.Context, string) (*store.Sandbox, error)) handler {
	return func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var empty struct{}
		if err := decode(w, r, &empty, true); err != nil {
			return 0, nil, err
		}
		sb, err := fn(r.Context(), r.PathValue("ref"))
		if err != nil {
			return 0, nil, err
		}
		return 200, sb.Sandbox, nil
	}
}

func (s *Server) destroy(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.DestroyRequest
	if err := decode(w, r, &req, true); err != nil {
		return 0, nil, err
	}
	sb, err := s.mgr.Destroy(r.Context(), r.PathValue("ref"), req.Force)
	if err != nil {
		return 0, nil, err
	}
	return 200, sb.Sandbox, nil
}

func (s *Server) renew(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.RenewRequest
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	if req.TTL == "" {
		return 0, nil, api.FieldError("ttl", "is required (e.g. \"2h\")")
	}
	sb, err := s.mgr.Renew(r.Context(), r.PathValue("ref"), req.TTL)
	if err != nil {
		return 0, nil, err
	}
	return 200, sb.Sandbox, nil
}

func (s *Server) prune(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.PruneRequest
	if err := decode(w, r, &req, true); err != nil {
		return 0, nil, err
	}
	res, err := s.mgr.Prune(r.Context(), req.DryRun)
	if err != nil {
		return 0, nil, err
	}
	if req.Orphans {
		if res.Orphans, res.Kept, err = s.mgr.PruneOrphans(r.Context(), req.Node, req.DryRun); err != nil {
			return 0, nil, proxmoxUnavailable(err)
		}
	}
	return 200, res, nil
}

func proxmoxUnavailable(err error) error {
	return api.Errorf(http.StatusBadGateway, api.CodeProxmox, "%v", err)
}

func (s *Server) reconcile(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.ReconcileRequest
	if err := decode(w, r, &req, true); err != nil {
		return 0, nil, err
	}
	rep, err := s.mgr.Reconcile(r.Context(), req.DryRun)
	if err != nil {
		return 0, nil, proxmoxUnavailable(err)
	}
	return 200, rep, nil
}

func (s *Server) orphans(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	o, err := s.mgr.Orphans(r.Context())
	if err != nil {
		return 0, nil, proxmoxUnavailable(err)
	}
	if o == nil {
		o = []api.Orphan{}
	}
	return 200, map[string][]api.Orphan{"orphans": o}, nil
}

// eventQuery reads the two ways of reading events: after=N pages forward
// in id order (limit, default 100, caps the page; tail is read as limit for
// older clients), and without after, tail=K is the newest K (default 100).
type eventQuery struct {
	forward bool
	after   int64
	n       int
}

func eventParams(r *http.Request) (eventQuery, error) {
	q := r.URL.Query()
	e := eventQuery{n: 100}
	if v := q.Get("after"); v != "" {
		after, err := strconv.ParseInt(v, 10, 64)
		if err != nil || after < 0 {
			return e, api.FieldError("after", "want an event id (a whole number ≥ 0), got %q", v)
		}
		e.forward, e.after = true, after
	}
	for _, k := range []string{"tail", "limit"} {
		v := q.Get(k)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxPage {
			return e, api.FieldError(k, "want a number between 1 and %d, got %q", MaxPage, v)
		}
		e.n = n
	}
	if q.Get("limit") != "" && !e.forward {
		return e, api.FieldError("limit", "pages forward from after=N; for the newest events use tail")
	}
	return e, nil
}

func (s *Server) sandboxEvents(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	sb, err := s.mgr.Get(r.Context(), r.PathValue("ref"))
	if err != nil {
		return 0, nil, err
	}
	return s.eventList(r, store.EventFilter{SandboxID: sb.ID})
}

func (s *Server) events(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	return s.eventList(r, store.EventFilter{Team: r.URL.Query().Get("team")})
}

func (s *Server) eventList(r *http.Request, f store.EventFilter) (int, any, error) {
	e, err := eventParams(r)
	if err != nil {
		return 0, nil, err
	}
	var evs []api.Event
	more := false
	if e.forward {
		evs, more, err = s.mgr.Store().EventsAfter(r.Context(), f, e.after, e.n)
	} else {
		evs, err = s.mgr.Store().Events(r.Context(), f, 0, e.n)
	}
	if err != nil {
		return 0, nil, err
	}
	out := api.EventList{Events: evs, Last: e.after, More: more}
	if n := len(evs); n > 0 {
		out.Last = evs[n-1].ID
	}
	return 200, out, nil
}
