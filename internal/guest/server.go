// Package guest is the guest-facing listener: sandboxes fetch their bootstrap
// (secrets, SSH keys, git credentials, job) once with a single-use token,
// upload artifacts and report their job's end. It is separate from the
// control API and bound to the agent bridge.
package guest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/jobs"
	"github.com/agentlab/terraform-provider-agentlab/internal/metrics"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/token"
)

// Options configures the guest listener.
type Options struct {
	BaseURL          string // how guests reach this listener
	ArtifactDir      string
	MaxBytes         int64
	ArtifactTokenTTL time.Duration
	CheckSourceIP    bool
	Now              func() time.Time
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
}

// New builds the guest listener's handler.
func New(st *store.Store, j *jobs.Manager, sec secrets.Store, profiles profile.Set, o Options, log *slog.Logger, met *metrics.Metrics) *Server {
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Server{store: st, jobs: j, secrets: sec, profiles: profiles, opts: o, log: log, met: met, inflight: map[string]bool{}, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /v1/bootstrap", s.bootstrap)
	s.mux.HandleFunc("POST /v1/artifacts", s.upload)
	s.mux.HandleFunc("POST /v1/report", s.report)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

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

// refuse answers 401/403 and records why (never the token itself).
func (s *Server) refuse(ctx context.Context, w http.ResponseWriter, sb *store.Sandbox, status int, why string) {
	_ = s.store.AddEvent(ctx, sb, store.Event{Kind: "guest.refused", Message: why})
	s.log.Warn("guest request refused", "reason", why)
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
		s.refuse(ctx, w, nil, http.StatusUnauthorized, fmt.Sprintf("%s request from %s without a token", kind, ip))
		return nil, nil, false
	}
	t, err := s.store.LookupToken(ctx, token.Hash(raw), kind)
	if err != nil {
		s.refuse(ctx, w, nil, http.StatusUnauthorized, fmt.Sprintf("unknown %s token from %s", kind, ip))
		return nil, nil, false
	}
	sb, err := s.store.Sandbox(ctx, t.SandboxID)
	if err != nil || sb.State == api.StateDestroyed {
		s.refuse(ctx, w, nil, http.StatusUnauthorized, fmt.Sprintf("%s token of a sandbox that is gone, from %s", kind, ip))
		return nil, nil, false
	}
	if !s.opts.Now().Before(t.ExpiresAt) {
		s.refuse(ctx, w, sb, http.StatusUnauthorized, fmt.Sprintf("expired %s token presented from %s", kind, ip))
		return nil, nil, false
	}
	if t.SpentAt != nil {
		s.refuse(ctx, w, sb, http.StatusUnauthorized, fmt.Sprintf("spent %s token presented again from %s", kind, ip))
		return nil, nil, false
	}
	if s.opts.CheckSourceIP && sb.IP != "" && sb.IP != ip {
		s.refuse(ctx, w, sb, http.StatusForbidden, fmt.Sprintf("%s token of sandbox %s (%s) presented from %s", kind, sb.Name, sb.IP, ip))
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

	b, err := s.build(ctx, sb)
	if err != nil {
		s.log.Error("build bootstrap", "sandbox_id", sb.ID, "err", err)
		fail(w, http.StatusInternalServerError, api.CodeInternal, "bootstrap could not be prepared: "+err.Error())
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
func (s *Server) build(ctx context.Context, sb *store.Sandbox) (*api.GuestBootstrap, error) {
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
		ExpiresAt: s.opts.Now().Add(s.opts.ArtifactTokenTTL)}); err != nil {
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
// backslashes or hidden parts.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("name is required")
	case len(name) > 255:
		return errors.New("name is longer than 255 bytes")
	case strings.ContainsAny(name, "\x00\\"):
		return errors.New("name contains NUL or a backslash")
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

func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	t, sb, ok := s.authorize(w, r, store.TokenArtifact)
	if !ok {
		return
	}
	name := r.URL.Query().Get("name")
	if err := ValidName(name); err != nil {
		fail(w, http.StatusBadRequest, api.CodeInvalidField, "name: "+err.Error())
		return
	}
	owner := sb.ID
	if t.JobID != "" {
		owner = t.JobID
	}
	dst := filepath.Join(s.opts.ArtifactDir, owner, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		fail(w, http.StatusInternalServerError, api.CodeInternal, err.Error())
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".upload-*")
	if err != nil {
		fail(w, http.StatusInternalServerError, api.CodeInternal, err.Error())
		return
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), http.MaxBytesReader(w, r.Body, s.opts.MaxBytes))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		fail(w, http.StatusRequestEntityTooLarge, api.CodeBodyTooLarge, fmt.Sprintf("artifact exceeds artifact_max_bytes (%d)", s.opts.MaxBytes))
		return
	case err != nil:
		fail(w, http.StatusBadRequest, api.CodeBadRequest, "upload interrupted: "+err.Error())
		return
	case n == 0:
		fail(w, http.StatusBadRequest, api.CodeBadRequest, "empty artifact")
		return
	}
	if err := tmp.Sync(); err != nil {
		fail(w, http.StatusInternalServerError, api.CodeInternal, err.Error())
		return
	}
	if err := tmp.Chmod(0o640); err != nil || tmp.Close() != nil {
		fail(w, http.StatusInternalServerError, api.CodeInternal, "close artifact")
		return
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		fail(w, http.StatusInternalServerError, api.CodeInternal, err.Error())
		return
	}
	done = true
	sum := hex.EncodeToString(h.Sum(nil))
	a := &store.Artifact{SandboxID: sb.ID, JobID: t.JobID, Name: name, Size: n, SHA256: sum, Path: dst}
	if err := s.store.AddArtifact(context.WithoutCancel(ctx), a, store.Event{Kind: "artifact.received", Message: fmt.Sprintf("%s (%d bytes, sha256 %s)", name, n, sum[:12])}); err != nil {
		fail(w, http.StatusInternalServerError, api.CodeInternal, err.Error())
		return
	}
	s.met.ArtifactBytes(n)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(api.Artifact{ID: a.ID, SandboxID: a.SandboxID, JobID: a.JobID, Name: a.Name, Size: a.Size, SHA256: a.SHA256, CreatedAt: a.CreatedAt})
}

func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	_, sb, ok := s.authorize(w, r, store.TokenArtifact)
	if !ok {
		return
	}
	var rep api.JobReport
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		fail(w, http.StatusBadRequest, api.CodeBadRequest, "invalid report: "+err.Error())
		return
	}
	j, err := s.jobs.Report(r.Context(), sb.ID, rep)
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) {
			fail(w, ae.Status, ae.Code, ae.Message)
			return
		}
		fail(w, http.StatusInternalServerError, api.CodeInternal, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.jobs.API(r.Context(), j))
}
