// Package guest is the guest-facing listener: sandboxes fetch their bootstrap
// (secrets, SSH keys, git credentials, job) once with a single-use token,
// upload artifacts and report their job's end. It is separate from the
// control API and bound to the agent bridge.
package guest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/jobs"
	"github.com/agentlab/terraform-provider-agentlab/internal/metrics"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/strictjson"
	"github.com/agentlab/terraform-provider-agentlab/internal/token"
)

// Options configures the guest listener. Zero limits mean none; zero
// timeouts take the defaults of internal/config.
type Options struct {
	BaseURL          string // how guests reach this listener
	ArtifactDir      string
	MaxBytes         int64 // one artifact
	ArtifactTokenTTL time.Duration
	CheckSourceIP    bool
	Now              func() time.Time

	SandboxQuotaBytes int64 // all artifacts of a sandbox
	JobQuotaBytes     int64 // all artifacts of a job
	MaxArtifacts      int   // artifacts per sandbox

	// RefusalInterval: at most one guest.refused event per sandbox (or
	// source address) per interval; a source refused more than RefusalBurst
	// times in one gets 429 without a lookup until it ends.
	RefusalInterval time.Duration
	RefusalBurst    int

	HeaderTimeout time.Duration // request line and headers
	ReadTimeout   time.Duration // a whole request other than an upload, and each response
	IdleTimeout   time.Duration // keep-alive connection between requests
	// An upload must deliver UploadMinRate bytes/s averaged over each
	// UploadRateWindow, or it is cut off and its temp file removed.
	UploadMinRate    int64
	UploadRateWindow time.Duration
}

func (o *Options) defaults() {
	if o.Now == nil {
		o.Now = time.Now
	}
	for _, d := range []struct {
		p *time.Duration
		v time.Duration
	}{{&o.RefusalInterval, time.Minute}, {&o.HeaderTimeout, 10 * time.Second}, {&o.ReadTimeout, 30 * time.Second},
		{&o.IdleTimeout, time.Minute}, {&o.UploadRateWindow, 10 * time.Second}} {
		if *d.p <= 0 {
			*d.p = d.v
		}
	}
	if o.RefusalBurst <= 0 {
		o.RefusalBurst = 20
	}
	if o.UploadMinRate <= 0 {
		o.UploadMinRate = 4096
	}
}

// Server serves guests.
type Server struct {
	store    *store.Store
	jobs     *jobs.Manager
	secrets  secrets.Store
	profiles profile.Set
	opts     Options
	log      *slog.Logger
	met      *metrics.Metrics
	mu       sync.Mutex
	inflight map[string]bool // bootstrap tokens being delivered right now
	mux      *http.ServeMux
	refusals *refusals
	quotas   *quotas
}

// New builds the guest listener's handler.
func New(st *store.Store, j *jobs.Manager, sec secrets.Store, profiles profile.Set, o Options, log *slog.Logger, met *metrics.Metrics) *Server {
	o.defaults()
	s := &Server{store: st, jobs: j, secrets: sec, profiles: profiles, opts: o, log: log, met: met, inflight: map[string]bool{}, mux: http.NewServeMux(),
		refusals: newRefusals(o.RefusalInterval, o.RefusalBurst, o.Now), quotas: newQuotas(st, o.SandboxQuotaBytes, o.JobQuotaBytes, o.MaxArtifacts)}
	s.mux.HandleFunc("GET /v1/bootstrap", s.bootstrap)
	s.mux.HandleFunc("POST /v1/artifacts", s.upload)
	s.mux.HandleFunc("POST /v1/report", s.report)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	return s
}

// Configure sets the listener's timeouts on srv. Uploads replace the read
// deadline with their minimum rate; everything else must arrive within
// ReadTimeout.
func (s *Server) Configure(srv *http.Server) {
	srv.ReadHeaderTimeout = s.opts.HeaderTimeout
	srv.ReadTimeout = s.opts.ReadTimeout
	srv.IdleTimeout = s.opts.IdleTimeout
	srv.MaxHeaderBytes = 16 << 10
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/artifacts" {
		// An upload sets its own deadline once its body is in.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.opts.ReadTimeout))
	}
	if r.URL.Path != "/healthz" {
		if limited, left := s.refusals.throttled(remoteIP(r)); limited {
			w.Header().Set("Retry-After", strconv.Itoa(int(left.Seconds())+1))
			fail(w, http.StatusTooManyRequests, api.CodeRateLimited, "too many refused requests from this address; retry later")
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

func fail(w http.ResponseWriter, status int, code api.Code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: &api.Error{Code: code, Message: msg}})
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func bearer(r *http.Request) string {
	v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	return strings.TrimSpace(v)
}

// refuse answers 401/403 and records why (never the token itself), at most
// once per sandbox (or source address) per RefusalInterval.
func (s *Server) refuse(ctx context.Context, w http.ResponseWriter, r *http.Request, sb *store.Sandbox, status int, why string) {
	ip := remoteIP(r)
	subject := "src:" + ip
	if sb != nil {
		subject = sb.ID
	}
	if emit, note := s.refusals.refused(subject, ip); emit {
		_ = s.store.AddEvent(context.WithoutCancel(ctx), sb, store.Event{Kind: "guest.refused", Message: why + note})
		s.log.Warn("guest request refused", "reason", why+note)
	}
	code := api.CodeUnauthorized
	if status == http.StatusForbidden {
		code = api.CodeForbidden
	}
	fail(w, status, code, why)
}

// authorize resolves a bearer token of a kind to its sandbox.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, kind string) (*store.Token, *store.Sandbox, bool) {
	ctx := r.Context()
	raw := bearer(r)
	ip := remoteIP(r)
	if raw == "" {
		s.refuse(ctx, w, r, nil, http.StatusUnauthorized, fmt.Sprintf("%s request from %s without a token", kind, ip))
		return nil, nil, false
	}
	t, err := s.store.LookupToken(ctx, token.Hash(raw), kind)
	if err != nil {
		s.refuse(ctx, w, r, nil, http.StatusUnauthorized, fmt.Sprintf("unknown %s token from %s", kind, ip))
		return nil, nil, false
	}
	sb, err := s.store.Sandbox(ctx, t.SandboxID)
	if err != nil || sb.State == api.StateDestroyed {
		s.refuse(ctx, w, r, nil, http.StatusUnauthorized, fmt.Sprintf("%s token of a sandbox that is gone, from %s", kind, ip))
		return nil, nil, false
	}
	if !s.opts.Now().Before(t.ExpiresAt) {
		s.refuse(ctx, w, r, sb, http.StatusUnauthorized, fmt.Sprintf("expired %s token presented from %s", kind, ip))
		return nil, nil, false
	}
	if t.SpentAt != nil {
		s.refuse(ctx, w, r, sb, http.StatusUnauthorized, fmt.Sprintf("spent %s token presented again from %s", kind, ip))
		return nil, nil, false
	}
	if s.opts.CheckSourceIP && t.BoundIP != "" && t.BoundIP != ip {
		// Bound at issuance to the sandbox's assigned address: refused from
		// anywhere else, whatever state the sandbox is in.
		s.refuse(ctx, w, r, sb, http.StatusForbidden, fmt.Sprintf("%s token of sandbox %s (bound to %s) presented from %s", kind, sb.Name, t.BoundIP, ip))
		return nil, nil, false
	}
	if s.opts.CheckSourceIP && t.BoundIP == "" && sb.IP != "" && sb.IP != ip {
		s.refuse(ctx, w, r, sb, http.StatusForbidden, fmt.Sprintf("%s token of sandbox %s (%s) presented from %s", kind, sb.Name, sb.IP, ip))
		return nil, nil, false
	}
	return t, sb, true
}

func (s *Server) bootstrap(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	t, sb, ok := s.authorize(w, r, store.TokenBootstrap)
	if !ok {
		return
	}
	s.mu.Lock()
	if s.inflight[t.Hash] {
		s.mu.Unlock()
		fail(w, http.StatusConflict, api.CodeConflict, "this bootstrap is being delivered on another connection")
		return
	}
	s.inflight[t.Hash] = true
	s.mu.Unlock()
	defer func() { s.mu.Lock(); delete(s.inflight, t.Hash); s.mu.Unlock() }()

	b, err := s.build(ctx, sb, t.BoundIP)
	if err != nil {
		// The cause names host paths (the secrets key file): the guest gets
		// none of it, the operator's log and events get all of it.
		s.log.Error("build bootstrap", "sandbox_id", sb.ID, "err", err)
		_ = s.store.AddEvent(context.WithoutCancel(ctx), sb, store.Event{Kind: "bootstrap.failed", Message: err.Error()})
		fail(w, http.StatusInternalServerError, api.CodeInternal, "bootstrap could not be prepared; agentd's log and this sandbox's events say why")
		return
	}
	body, _ := json.Marshal(b)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.Header().Set("Cache-Control", "no-store")
	n, werr := w.Write(body)
	if werr == nil {
		werr = http.NewResponseController(w).Flush()
	}
	if werr != nil || n != len(body) {
		// Not spent: the guest may retry within the TTL.
		_ = s.store.AddEvent(ctx, sb, store.Event{Kind: "bootstrap.incomplete", Message: fmt.Sprintf("delivery failed after %d of %d bytes; the token stays valid", n, len(body))})
		return
	}
	if err := s.store.SpendToken(context.WithoutCancel(ctx), t.Hash); err != nil {
		s.log.Error("spend bootstrap token", "sandbox_id", sb.ID, "err", err)
	}
	var env []string
	for k := range b.Env {
		env = append(env, k)
	}
	sort.Strings(env)
	_ = s.store.AddEvent(ctx, sb, store.Event{Kind: "bootstrap.delivered", Message: fmt.Sprintf("to %s: env [%s], %d ssh key(s), git %t, job %t",
		remoteIP(r), strings.Join(env, " "), len(b.SSHKeys), b.Git != nil, b.Job != nil)})
	s.jobs.Started(context.WithoutCancel(ctx), sb.ID)
}

// build assembles a sandbox's bootstrap: its profile's bundle (only the env
// names the profile lists), its job, and a fresh artifact token.
func (s *Server) build(ctx context.Context, sb *store.Sandbox, bound string) (*api.GuestBootstrap, error) {
	b := &api.GuestBootstrap{SandboxID: sb.ID, Name: sb.Name, ArtifactURL: s.opts.BaseURL + "/v1/artifacts", ReportURL: s.opts.BaseURL + "/v1/report"}
	if p := s.profiles[sb.Profile]; p != nil && p.Secrets.Bundle != "" {
		bundle, err := s.secrets.Load(p.Secrets.Bundle)
		if err != nil {
			return nil, fmt.Errorf("secrets bundle %s: %w", p.Secrets.Bundle, err)
		}
		allowed := map[string]bool{}
		for _, n := range p.Secrets.Env {
			allowed[n] = true
		}
		for k, v := range bundle.Env {
			if len(allowed) == 0 || allowed[k] {
				if b.Env == nil {
					b.Env = map[string]string{}
				}
				b.Env[k] = v
			}
		}
		for _, k := range sortedKeys(bundle.SSHKeys) {
			b.SSHKeys = append(b.SSHKeys, bundle.SSHKeys[k])
		}
		if g := bundle.Git; g != nil {
			b.Git = &api.GuestGit{Username: g.Username, Token: g.Token, Host: g.Host}
		}
	}
	jobID := ""
	if j, err := s.store.JobOfSandbox(ctx, sb.ID); err == nil {
		b.Job = &api.GuestJob{ID: j.ID, Repo: j.Repo, Ref: j.Ref, Task: j.Task}
		jobID = j.ID
	}
	raw, hash := token.New()
	if err := s.store.CreateToken(ctx, &store.Token{Hash: hash, Kind: store.TokenArtifact, SandboxID: sb.ID, JobID: jobID,
		ExpiresAt: s.opts.Now().Add(s.opts.ArtifactTokenTTL), BoundIP: bound}); err != nil {
		return nil, err
	}
	b.ArtifactToken = raw
	return b, nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ValidName checks an artifact name: a relative path without "..", NUL,
// backslashes, control characters or hidden parts.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("name is required")
	case len(name) > 255:
		return errors.New("name is longer than 255 bytes")
	case strings.ContainsAny(name, "\x00\\"):
		return errors.New("name contains NUL or a backslash")
	case strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || r == utf8.RuneError }):
		// They would reach every terminal that lists the artifact.
		return errors.New("name contains control characters or invalid UTF-8")
	case strings.HasPrefix(name, "/"):
		return errors.New("name must be relative")
	case path.Clean(name) != name:
		return errors.New("name is not a clean relative path")
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." || part == "." || strings.HasPrefix(part, ".") {
			return fmt.Errorf("name part %q is not allowed", part)
		}
	}
	return nil
}

func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	_, sb, ok := s.authorize(w, r, store.TokenArtifact)
	if !ok {
		return
	}
	var rep api.JobReport
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err == nil {
		err = strictjson.Decode(data, &rep)
	}
	if err != nil {
		fail(w, http.StatusBadRequest, api.CodeBadRequest, "invalid report: "+err.Error())
		return
	}
	values, err := s.secretValues(sb)
	if err != nil {
		s.failErr(w, "report", sb, err)
		return
	}
	rep.Message = secrets.MaskString(rep.Message, values)
	j, err := s.jobs.Report(r.Context(), sb.ID, rep)
	if err != nil {
		s.failErr(w, "report", sb, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.jobs.API(r.Context(), j))
}

// failErr answers an error: an *api.Error as it is, anything else as a 500
// whose details (paths, driver messages) go to the log only.
func (s *Server) failErr(w http.ResponseWriter, op string, sb *store.Sandbox, err error) {
	var ae *api.Error
	if errors.As(err, &ae) {
		writeErr(w, ae)
		return
	}
	s.log.Error("guest "+op, "sandbox_id", sb.ID, "err", err)
	fail(w, http.StatusInternalServerError, api.CodeInternal, op+" failed on the host; agentd's log says why")
}

// secretValues are the values of the bundle of sb's profile, to mask in what
// the guest sends back (none when the profile has no bundle).
func (s *Server) secretValues(sb *store.Sandbox) ([]string, error) {
	p := s.profiles[sb.Profile]
	if p == nil || p.Secrets.Bundle == "" {
		return nil, nil
	}
	b, err := s.secrets.Load(p.Secrets.Bundle)
	if err != nil {
		return nil, fmt.Errorf("open secrets bundle %s to mask it: %w", p.Secrets.Bundle, err)
	}
	return b.Values(), nil
}
