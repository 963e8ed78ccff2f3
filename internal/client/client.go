// Package client is the Go client of agentd's API, used by the CLI and the
// Terraform provider.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// DefaultSocket is where agentd serve listens by default.
const DefaultSocket = "/run/agentd/agentd.sock"

// Environment variables read by FromEnv (and by the provider).
const (
	EnvEndpoint = "AGENTLAB_ENDPOINT"
	EnvToken    = "AGENTLAB_TOKEN"
	EnvCACert   = "AGENTLAB_CA_CERT"
	EnvInsecure = "AGENTLAB_INSECURE"
	EnvTeam     = "AGENTLAB_TEAM"
)

// Config says how to reach agentd.
type Config struct {
	// Endpoint is unix:///path/to/agentd.sock or https://host:port.
	Endpoint string
	Token    string
	// CACert is a PEM certificate or a path to one.
	CACert   string
	Insecure bool
	Timeout  time.Duration // per request; default 60s
	// Team is the team a global token (or the socket) acts in: sent as the
	// Agentlab-Team header. A team token may only name its own team.
	Team string
	// TokenSetting names where the caller's user sets the token (the CLI's
	// flag, the provider's attribute), so that a refused token's error says
	// what to change. Defaults to EnvToken.
	TokenSetting string
}

// DefaultTokenFile is where agentd serve keeps its API token unless the
// config's token_file says otherwise.
const DefaultTokenFile = "/var/lib/agentd/api-token"

// FromEnv fills empty fields of c from AGENTLAB_* variables, then defaults to
// the local socket.
func FromEnv(c Config) Config {
	if c.Endpoint == "" {
		c.Endpoint = os.Getenv(EnvEndpoint)
	}
	if c.Token == "" {
		c.Token = os.Getenv(EnvToken)
	}
	if c.CACert == "" {
		c.CACert = os.Getenv(EnvCACert)
	}
	if c.Team == "" {
		c.Team = os.Getenv(EnvTeam)
	}
	if !c.Insecure {
		c.Insecure = os.Getenv(EnvInsecure) == "1" || strings.EqualFold(os.Getenv(EnvInsecure), "true")
	}
	if c.Endpoint == "" {
		c.Endpoint = "unix://" + DefaultSocket
	}
	return c
}

// Client talks to one agentd.
type Client struct {
	base    string
	token   string
	team    string
	hc      *http.Client
	where   string
	setting string
}

// New validates the endpoint and builds a client; it makes no request.
func New(c Config) (*Client, error) {
	if c.Timeout == 0 {
		c.Timeout = 60 * time.Second
	}
	u, err := url.Parse(c.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", c.Endpoint, err)
	}
	// Terraform runs 10 operations at once, each waiting on a long-poll;
	// a pool smaller than the requests in flight re-handshakes TLS.
	tr := &http.Transport{MaxIdleConnsPerHost: 32, IdleConnTimeout: 60 * time.Second, ForceAttemptHTTP2: false}
	if c.TokenSetting == "" {
		c.TokenSetting = EnvToken
	}
	cl := &Client{token: c.Token, team: c.Team, hc: &http.Client{Transport: tr, Timeout: c.Timeout}, where: c.Endpoint, setting: c.TokenSetting}
	switch u.Scheme {
	case "unix":
		path := u.Path
		if path == "" {
			path = u.Opaque
		}
		if path == "" {
			return nil, fmt.Errorf("endpoint %q: want unix:///path/to/agentd.sock", c.Endpoint)
		}
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		cl.base = "http://agentd"
	case "https":
		if u.Host == "" {
			return nil, fmt.Errorf("endpoint %q: want https://host:port", c.Endpoint)
		}
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.Insecure}
		if c.CACert != "" {
			pem := []byte(c.CACert)
			if !strings.Contains(c.CACert, "-----BEGIN") {
				if pem, err = os.ReadFile(c.CACert); err != nil {
					return nil, fmt.Errorf("CA certificate: %w", err)
				}
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("CA certificate: no PEM certificate found")
			}
			tc.RootCAs = pool
		}
		tr.TLSClientConfig = tc
		cl.base = strings.TrimRight(c.Endpoint, "/")
	default:
		return nil, fmt.Errorf("endpoint %q: the scheme must be unix:// or https:// (agentd's TCP listener always uses TLS)", c.Endpoint)
	}
	return cl, nil
}

// Endpoint returns where the client connects.
func (c *Client) Endpoint() string { return c.where }

// Do sends a request with an optional JSON body and decodes the JSON answer
// into out. Errors from agentd come back as *api.Error.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c.authorize(req)
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach agentd at %s: %w", c.where, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return fmt.Errorf("read answer of agentd: %w", err)
	}
	if resp.StatusCode >= 300 {
		return c.answerError(resp, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer of agentd: %w", err)
	}
	return nil
}

// answerError turns agentd's error answer into an *api.Error. A refused
// token gets a message of its own: the agent answered, so the fix is the
// token, and the caller's user needs to know which setting holds it.
func (c *Client) answerError(resp *http.Response, data []byte) error {
	var eb api.ErrorBody
	if json.Unmarshal(data, &eb) != nil || eb.Error == nil {
		eb.Error = &api.Error{Code: api.CodeInternal,
			Message: fmt.Sprintf("agentd answered %s: %s", resp.Status, strings.TrimSpace(string(data)))}
	}
	eb.Error.Status = resp.StatusCode
	if resp.StatusCode == http.StatusUnauthorized && (eb.Error.Code == api.CodeTokenExpired || eb.Error.Code == api.CodeTokenRevoked) {
		// The token was good once: say which one, and how to get another.
		eb.Error.Message = fmt.Sprintf("%s (agentd at %s). Set %s to a live token: ask a team admin for a new one (agentd token create or rotate)",
			eb.Error.Message, c.where, c.setting)
	} else if resp.StatusCode == http.StatusUnauthorized {
		what := "invalid token: agentd at %s refused the token it was given (401)"
		if c.token == "" {
			what = "missing token: agentd at %s requires a token and none was given (401)"
		}
		eb.Error.Code = api.CodeUnauthorized
		eb.Error.Message = fmt.Sprintf(what+". Set %s to the agent's API token: the content of its token_file "+
			"(%s unless the agent's config.yaml sets token_file); with agentd dev, the AGENTLAB_TOKEN its env file exports",
			c.where, c.setting, DefaultTokenFile)
	}
	return eb.Error
}

// IsUnauthorized reports whether agentd refused the client's token (or the
// lack of one).
func IsUnauthorized(err error) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Status == http.StatusUnauthorized
}

// IsNotFound reports whether err is a 404 from agentd.
func IsNotFound(err error) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// Status returns the host status.
func (c *Client) Status(ctx context.Context) (*api.Status, error) {
	var s api.Status
	return &s, c.Do(ctx, "GET", "/v1/status", nil, &s)
}

// Profiles lists profiles.
func (c *Client) Profiles(ctx context.Context) ([]api.Profile, error) {
	var l api.ProfileList
	err := c.Do(ctx, "GET", "/v1/profiles", nil, &l)
	return l.Profiles, err
}

// Profile returns one profile.
func (c *Client) Profile(ctx context.Context, name string) (*api.Profile, error) {
	var p api.Profile
	return &p, c.Do(ctx, "GET", "/v1/profiles/"+url.PathEscape(name), nil, &p)
}

// CreateSandbox requests a sandbox; it returns at once in REQUESTED (or the
// existing sandbox for a retried request).
func (c *Client) CreateSandbox(ctx context.Context, req api.CreateSandboxRequest) (*api.Sandbox, error) {
	var s api.Sandbox
	return &s, c.Do(ctx, "POST", "/v1/sandboxes", req, &s)
}

// Sandbox returns a sandbox by name, VMID or id.
func (c *Client) Sandbox(ctx context.Context, ref string) (*api.Sandbox, error) {
	var s api.Sandbox
	return &s, c.Do(ctx, "GET", "/v1/sandboxes/"+url.PathEscape(ref), nil, &s)
}

// Sandboxes lists sandboxes (every page); filter keys are state, profile,
// name and all.
func (c *Client) Sandboxes(ctx context.Context, filter url.Values) ([]api.Sandbox, error) {
	return all(ctx, c, "/v1/sandboxes", filter, func(l *api.SandboxList) ([]api.Sandbox, string) { return l.Sandboxes, l.Next })
}

// all reads every page of a list endpoint, following its next cursor.
func all[L any, T any](ctx context.Context, c *Client, path string, q url.Values, items func(*L) ([]T, string)) ([]T, error) {
	out := []T{}
	after := ""
	for {
		v := url.Values{}
		for k, vs := range q {
			v[k] = vs
		}
		if after != "" {
			v.Set("after", after)
		}
		p := path
		if len(v) > 0 {
			p += "?" + v.Encode()
		}
		var l L
		if err := c.Do(ctx, "GET", p, nil, &l); err != nil {
			return out, err
		}
		page, next := items(&l)
		out = append(out, page...)
		if next == "" || next == after {
			return out, nil
		}
		after = next
	}
}

func (c *Client) sandboxOp(ctx context.Context, ref, op string, body any) (*api.Sandbox, error) {
	var s api.Sandbox
	return &s, c.Do(ctx, "POST", "/v1/sandboxes/"+url.PathEscape(ref)+"/"+op, body, &s)
}

// Start starts a stopped sandbox (asynchronous: returns BOOTING).
func (c *Client) Start(ctx context.Context, ref string) (*api.Sandbox, error) {
	return c.sandboxOp(ctx, ref, "start", nil)
}

// Stop stops a sandbox and keeps it.
func (c *Client) Stop(ctx context.Context, ref string) (*api.Sandbox, error) {
	return c.sandboxOp(ctx, ref, "stop", nil)
}

// Touch records activity on a sandbox.
func (c *Client) Touch(ctx context.Context, ref string) (*api.Sandbox, error) {
	return c.sandboxOp(ctx, ref, "touch", nil)
}

// Destroy destroys a sandbox's VM.
func (c *Client) Destroy(ctx context.Context, ref string, force bool) (*api.Sandbox, error) {
	return c.sandboxOp(ctx, ref, "destroy", api.DestroyRequest{Force: force})
}

// Renew sets the lease to now + ttl.
func (c *Client) Renew(ctx context.Context, ref, ttl string) (*api.Sandbox, error) {
	return c.sandboxOp(ctx, ref, "lease/renew", api.RenewRequest{TTL: ttl})
}

// Exec runs a command in a sandbox through the guest agent and waits for it.
func (c *Client) Exec(ctx context.Context, ref string, req api.ExecRequest) (*api.ExecResult, error) {
	var out api.ExecResult
	err := c.Do(ctx, "POST", "/v1/sandboxes/"+url.PathEscape(ref)+"/exec", req, &out)
	return &out, err
}

// HostKey returns the sandbox's pinned SSH host key (pinned on first use).
func (c *Client) HostKey(ctx context.Context, ref string) (*api.HostKey, error) {
	var out api.HostKey
	err := c.Do(ctx, "GET", "/v1/sandboxes/"+url.PathEscape(ref)+"/hostkey", nil, &out)
	return &out, err
}

// Hibernate suspends a running sandbox to disk (SUSPENDED); Start resumes it.
func (c *Client) Hibernate(ctx context.Context, ref string) (*api.Sandbox, error) {
	return c.sandboxOp(ctx, ref, "hibernate", nil)
}

// Resume resumes a hibernated (SUSPENDED) sandbox; anything else is refused.
func (c *Client) Resume(ctx context.Context, ref string) (*api.Sandbox, error) {
	return c.sandboxOp(ctx, ref, "resume", nil)
}

// Revert rolls a sandbox back to its clean snapshot, keeping its workspace
// (asynchronous for a running one: returns BOOTING).
func (c *Client) Revert(ctx context.Context, ref string, req api.RevertRequest) (*api.Sandbox, error) {
	return c.sandboxOp(ctx, ref, "revert", req)
}

// Resize changes a sandbox's cores and memory and grows its root disk.
func (c *Client) Resize(ctx context.Context, ref string, req api.ResizeRequest) (*api.ResizeResult, error) {
	var out api.ResizeResult
	err := c.Do(ctx, "POST", "/v1/sandboxes/"+url.PathEscape(ref)+"/resize", req, &out)
	return &out, err
}

// Expose publishes a guest port of a sandbox on the host's uplink address.
func (c *Client) Expose(ctx context.Context, ref string, req api.ExposeRequest) (*api.ExposedPort, error) {
	var out api.ExposedPort
	err := c.Do(ctx, "POST", "/v1/sandboxes/"+url.PathEscape(ref)+"/ports", req, &out)
	return &out, err
}

// Unexpose withdraws an exposed port.
func (c *Client) Unexpose(ctx context.Context, ref string, port int) error {
	return c.Do(ctx, "DELETE", "/v1/sandboxes/"+url.PathEscape(ref)+"/ports/"+strconv.Itoa(port), nil, nil)
}

// ExposedPorts lists the exposed ports of a sandbox, or of all ("").
func (c *Client) ExposedPorts(ctx context.Context, ref string) ([]api.ExposedPort, error) {
	var out api.ExposedPortList
	path := "/v1/ports"
	if ref != "" {
		path = "/v1/sandboxes/" + url.PathEscape(ref) + "/ports"
	}
	err := c.Do(ctx, "GET", path, nil, &out)
	return out.Ports, err
}

// SandboxSnapshots lists a sandbox's snapshots, oldest first.
func (c *Client) SandboxSnapshots(ctx context.Context, ref string) ([]api.SandboxSnapshot, error) {
	var out api.SandboxSnapshotList
	err := c.Do(ctx, "GET", "/v1/sandboxes/"+url.PathEscape(ref)+"/snapshots", nil, &out)
	return out.Snapshots, err
}

// CreateSandboxSnapshot snapshots a sandbox.
func (c *Client) CreateSandboxSnapshot(ctx context.Context, ref string, req api.CreateSandboxSnapshotRequest) (*api.SandboxSnapshot, error) {
	var out api.SandboxSnapshot
	err := c.Do(ctx, "POST", "/v1/sandboxes/"+url.PathEscape(ref)+"/snapshots", req, &out)
	return &out, err
}

// RestoreSandboxSnapshot rolls a sandbox back to a snapshot and returns the
// sandbox (STOPPED after a disk-only snapshot).
func (c *Client) RestoreSandboxSnapshot(ctx context.Context, ref, name string) (*api.Sandbox, error) {
	return c.sandboxOp(ctx, ref, "snapshots/"+url.PathEscape(name)+"/restore", nil)
}

// DeleteSandboxSnapshot removes a snapshot of a sandbox.
func (c *Client) DeleteSandboxSnapshot(ctx context.Context, ref, name string) error {
	return c.Do(ctx, "DELETE", "/v1/sandboxes/"+url.PathEscape(ref)+"/snapshots/"+url.PathEscape(name), nil, nil)
}

// Prune destroys FAILED and TIMEOUT sandboxes.
func (c *Client) Prune(ctx context.Context) (*api.PruneResult, error) {
	var r api.PruneResult
	return &r, c.Do(ctx, "POST", "/v1/sandboxes/prune", nil, &r)
}

// eventsPath is the events of one sandbox, or of every sandbox; with a team
// set, of every sandbox of that team (?team=, the filter GET /v1/events
// offers), so that the filter does not rest on the header alone.
func (c *Client) eventsPath(ref string, q url.Values) string {
	path := "/v1/events"
	if ref != "" {
		path = "/v1/sandboxes/" + url.PathEscape(ref) + "/events"
	} else if c.team != "" {
		q.Set("team", c.team)
	}
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return path
}

// Events lists events (of one sandbox when ref is set): with after > 0 the
// page after that id (EventsAfter), otherwise the newest tail events.
func (c *Client) Events(ctx context.Context, ref string, after int64, tail int) (*api.EventList, error) {
	if after > 0 {
		return c.EventsAfter(ctx, ref, after, tail)
	}
	q := url.Values{}
	if tail > 0 {
		q.Set("tail", fmt.Sprint(tail))
	}
	var l api.EventList
	return &l, c.Do(ctx, "GET", c.eventsPath(ref, q), nil, &l)
}

// EventsAfter returns the first limit events after id after, in id order;
// More says that more follow (ask again with after = Last).
func (c *Client) EventsAfter(ctx context.Context, ref string, after int64, limit int) (*api.EventList, error) {
	q := url.Values{"after": {fmt.Sprint(after)}}
	if limit > 0 {
		q.Set("limit", fmt.Sprint(limit))
	}
	var l api.EventList
	return &l, c.Do(ctx, "GET", c.eventsPath(ref, q), nil, &l)
}

// WaitSandbox waits until agentd stops working on the sandbox (provisioning,
// start or destroy; or ctx ends) and returns its last view. It long-polls
// (GET ?wait=settled), so it returns as the change commits; every is the pause
// between requests only when an agent answers without waiting (an older one).
func (c *Client) WaitSandbox(ctx context.Context, ref string, every time.Duration) (*api.Sandbox, error) {
	if every <= 0 {
		every = 200 * time.Millisecond
	}
	var last *api.Sandbox
	for {
		asked := time.Now()
		sb, err := c.SandboxSettled(ctx, ref, 25*time.Second)
		switch {
		case err != nil && ctx.Err() != nil && last != nil:
			return last, StillSettling(last, ctx.Err())
		case err != nil:
			return nil, err
		case !sb.State.Settling():
			return sb, nil
		}
		last, ref = sb, sb.ID
		if time.Since(asked) < every {
			// An agent that answered at once (without long-polls): pace.
			select {
			case <-ctx.Done():
			case <-time.After(every):
			}
		}
		if ctx.Err() != nil {
			return last, StillSettling(last, ctx.Err())
		}
	}
}

// StillSettling is the error of a wait that ended (cause) while agentd was
// still working on sb.
func StillSettling(sb *api.Sandbox, cause error) error {
	return fmt.Errorf("sandbox %s still %s (step %s): %w", sb.Name, sb.State, sb.Step, cause)
}

// SandboxSettled is one long-poll: the sandbox once it settled, or its view
// after at most timeout (the agent caps it at 30s).
func (c *Client) SandboxSettled(ctx context.Context, ref string, timeout time.Duration) (*api.Sandbox, error) {
	q := url.Values{"wait": {"settled"}, "timeout": {timeout.String()}}
	var sb api.Sandbox
	if err := c.Do(ctx, "GET", "/v1/sandboxes/"+url.PathEscape(ref)+"?"+q.Encode(), nil, &sb); err != nil {
		return nil, err
	}
	return &sb, nil
}

// Workspaces lists workspaces.
func (c *Client) Workspaces(ctx context.Context) ([]api.Workspace, error) {
	return all(ctx, c, "/v1/workspaces", nil, func(l *api.WorkspaceList) ([]api.Workspace, string) { return l.Workspaces, l.Next })
}

// Storages lists the storages a workspace may be created on.
func (c *Client) Storages(ctx context.Context) (*api.StorageList, error) {
	var out api.StorageList
	return &out, c.Do(ctx, "GET", "/v1/storages", nil, &out)
}

func wsPath(ref string) string { return "/v1/workspaces/" + url.PathEscape(ref) }

// CreateWorkspace creates a workspace (synchronous: its holder VM exists on return).
func (c *Client) CreateWorkspace(ctx context.Context, req api.CreateWorkspaceRequest) (*api.Workspace, error) {
	var w api.Workspace
	return &w, c.Do(ctx, "POST", "/v1/workspaces", req, &w)
}

// Workspace returns one workspace.
func (c *Client) Workspace(ctx context.Context, ref string) (*api.Workspace, error) {
	var w api.Workspace
	return &w, c.Do(ctx, "GET", wsPath(ref), nil, &w)
}

// DeleteWorkspace destroys a workspace and its data.
func (c *Client) DeleteWorkspace(ctx context.Context, ref string) (*api.Workspace, error) {
	var w api.Workspace
	return &w, c.Do(ctx, "DELETE", wsPath(ref), nil, &w)
}

// AttachWorkspace attaches a workspace to a sandbox.
func (c *Client) AttachWorkspace(ctx context.Context, ref, sandbox string) (*api.Workspace, error) {
	var w api.Workspace
	return &w, c.Do(ctx, "POST", wsPath(ref)+"/attach", api.AttachRequest{Sandbox: sandbox}, &w)
}

// DetachWorkspace detaches a workspace from its sandbox.
func (c *Client) DetachWorkspace(ctx context.Context, ref string) (*api.Workspace, error) {
	var w api.Workspace
	return &w, c.Do(ctx, "POST", wsPath(ref)+"/detach", nil, &w)
}

// ResizeWorkspace grows a workspace.
func (c *Client) ResizeWorkspace(ctx context.Context, ref string, req api.ResizeWorkspaceRequest) (*api.Workspace, error) {
	var w api.Workspace
	return &w, c.Do(ctx, "POST", wsPath(ref)+"/resize", req, &w)
}

// ForkWorkspace copies a workspace (optionally at a snapshot) into a new one.
func (c *Client) ForkWorkspace(ctx context.Context, ref string, req api.ForkRequest) (*api.Workspace, error) {
	var w api.Workspace
	return &w, c.Do(ctx, "POST", wsPath(ref)+"/fork", req, &w)
}

// CheckWorkspace compares a workspace's row with Proxmox.
func (c *Client) CheckWorkspace(ctx context.Context, ref string) (*api.CheckResult, error) {
	var r api.CheckResult
	return &r, c.Do(ctx, "GET", wsPath(ref)+"/check", nil, &r)
}

// Snapshots lists a workspace's snapshots.
func (c *Client) Snapshots(ctx context.Context, ref string) ([]api.Snapshot, error) {
	var l api.SnapshotList
	err := c.Do(ctx, "GET", wsPath(ref)+"/snapshots", nil, &l)
	return l.Snapshots, err
}

// Snapshot returns one snapshot.
func (c *Client) Snapshot(ctx context.Context, ref, name string) (*api.Snapshot, error) {
	var s api.Snapshot
	return &s, c.Do(ctx, "GET", wsPath(ref)+"/snapshots/"+url.PathEscape(name), nil, &s)
}

// CreateSnapshot snapshots a detached workspace.
func (c *Client) CreateSnapshot(ctx context.Context, ref string, req api.CreateSnapshotRequest) (*api.Snapshot, error) {
	var s api.Snapshot
	return &s, c.Do(ctx, "POST", wsPath(ref)+"/snapshots", req, &s)
}

// RestoreSnapshot rolls a detached workspace back (destroys later changes).
func (c *Client) RestoreSnapshot(ctx context.Context, ref, name string) (*api.Snapshot, error) {
	var s api.Snapshot
	return &s, c.Do(ctx, "POST", wsPath(ref)+"/snapshots/"+url.PathEscape(name)+"/restore", nil, &s)
}

// DeleteSnapshot deletes a snapshot.
func (c *Client) DeleteSnapshot(ctx context.Context, ref, name string) error {
	return c.Do(ctx, "DELETE", wsPath(ref)+"/snapshots/"+url.PathEscape(name), nil, nil)
}

func sesPath(ref string) string { return "/v1/sessions/" + url.PathEscape(ref) }

// Sessions lists sessions.
func (c *Client) Sessions(ctx context.Context) ([]api.Session, error) {
	return all(ctx, c, "/v1/sessions", nil, func(l *api.SessionList) ([]api.Session, string) { return l.Sessions, l.Next })
}

// CreateSession creates a session (stopped; Resume starts it).
func (c *Client) CreateSession(ctx context.Context, req api.CreateSessionRequest) (*api.Session, error) {
	var s api.Session
	return &s, c.Do(ctx, "POST", "/v1/sessions", req, &s)
}

// Session returns one session.
func (c *Client) Session(ctx context.Context, ref string) (*api.Session, error) {
	var s api.Session
	return &s, c.Do(ctx, "GET", sesPath(ref), nil, &s)
}

func (c *Client) sessionOp(ctx context.Context, method, path string, body any) (*api.Session, error) {
	var s api.Session
	return &s, c.Do(ctx, method, path, body, &s)
}

// ResumeSession provisions a fresh sandbox for the session (asynchronous).
func (c *Client) ResumeSession(ctx context.Context, ref string) (*api.Session, error) {
	return c.sessionOp(ctx, "POST", sesPath(ref)+"/resume", nil)
}

// StopSession destroys the session's sandbox and keeps its workspace.
func (c *Client) StopSession(ctx context.Context, ref string) (*api.Session, error) {
	return c.sessionOp(ctx, "POST", sesPath(ref)+"/stop", nil)
}

// DeleteSession stops the session and releases its workspace.
func (c *Client) DeleteSession(ctx context.Context, ref string) (*api.Session, error) {
	return c.sessionOp(ctx, "DELETE", sesPath(ref), nil)
}

// ForkSession makes a new session on a fork of the workspace.
func (c *Client) ForkSession(ctx context.Context, ref string, req api.ForkSessionRequest) (*api.Session, error) {
	return c.sessionOp(ctx, "POST", sesPath(ref)+"/fork", req)
}

// WaitSession polls until the session's sandbox settles.
func (c *Client) WaitSession(ctx context.Context, ref string, every time.Duration) (*api.Session, error) {
	if every <= 0 {
		every = 200 * time.Millisecond
	}
	for {
		s, err := c.Session(ctx, ref)
		if err != nil {
			return nil, err
		}
		if !api.State(s.State).InFlight() {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return s, fmt.Errorf("session %s still %s: %w", s.Name, s.State, ctx.Err())
		case <-time.After(every):
		}
	}
}

// Reconcile runs one reconcile cycle now (dryRun: report only).
func (c *Client) Reconcile(ctx context.Context, dryRun bool) (*api.ReconcileReport, error) {
	var r api.ReconcileReport
	return &r, c.Do(ctx, "POST", "/v1/reconcile", api.ReconcileRequest{DryRun: dryRun}, &r)
}

// Orphans lists tagged VMs without a live row.
func (c *Client) Orphans(ctx context.Context) ([]api.Orphan, error) {
	var r struct {
		Orphans []api.Orphan `json:"orphans"`
	}
	err := c.Do(ctx, "GET", "/v1/orphans", nil, &r)
	return r.Orphans, err
}

// PruneWith destroys FAILED/TIMEOUT sandboxes and, with orphans, provable orphan VMs.
func (c *Client) PruneWith(ctx context.Context, req api.PruneRequest) (*api.PruneResult, error) {
	var r api.PruneResult
	return &r, c.Do(ctx, "POST", "/v1/sandboxes/prune", req, &r)
}

// RunJob starts a job (asynchronous: QUEUED).
func (c *Client) RunJob(ctx context.Context, req api.RunJobRequest) (*api.Job, error) {
	var j api.Job
	return &j, c.Do(ctx, "POST", "/v1/jobs", req, &j)
}

// Job returns a job.
func (c *Client) Job(ctx context.Context, id string) (*api.Job, error) {
	var j api.Job
	return &j, c.Do(ctx, "GET", "/v1/jobs/"+url.PathEscape(id), nil, &j)
}

// Jobs lists jobs.
func (c *Client) Jobs(ctx context.Context) ([]api.Job, error) {
	return all(ctx, c, "/v1/jobs", nil, func(l *api.JobList) ([]api.Job, string) { return l.Jobs, l.Next })
}

// CancelJob cancels a job.
func (c *Client) CancelJob(ctx context.Context, id string) (*api.Job, error) {
	var j api.Job
	return &j, c.Do(ctx, "POST", "/v1/jobs/"+url.PathEscape(id)+"/cancel", nil, &j)
}

// Artifacts lists a job's (ref "job-…") or a sandbox's artifacts.
func (c *Client) Artifacts(ctx context.Context, ref string) ([]api.Artifact, error) {
	p := "/v1/sandboxes/" + url.PathEscape(ref) + "/artifacts"
	if strings.HasPrefix(ref, "job-") {
		p = "/v1/jobs/" + url.PathEscape(ref) + "/artifacts"
	}
	return all(ctx, c, p, nil, func(l *api.ArtifactList) ([]api.Artifact, string) { return l.Artifacts, l.Next })
}

// Download streams an artifact into w and returns its recorded SHA-256.
func (c *Client) Download(ctx context.Context, id int64, w io.Writer) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/v1/artifacts/%d", c.base, id), nil)
	if err != nil {
		return "", err
	}
	c.authorize(req)
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("cannot reach agentd at %s: %w", c.where, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return "", fmt.Errorf("download artifact %d: %w", id, c.answerError(resp, b))
	}
	_, err = io.Copy(w, resp.Body)
	return resp.Header.Get("X-Artifact-SHA256"), err
}

// IsUnreachable reports whether err is a failure to connect to agentd (no
// agent answered), as opposed to an answer.
func IsUnreachable(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

func secPath(bundle string, parts ...string) string {
	p := "/v1/secrets/" + url.PathEscape(bundle)
	for _, s := range parts {
		p += "/" + url.PathEscape(s)
	}
	return p
}

// SecretsBundles lists the bundles (names only, never values).
func (c *Client) SecretsBundles(ctx context.Context) ([]api.SecretsBundle, error) {
	var out api.SecretsBundleList
	err := c.Do(ctx, "GET", "/v1/secrets", nil, &out)
	return out.Bundles, err
}

// SecretsBundle describes one bundle (names only; a missing bundle is empty).
func (c *Client) SecretsBundle(ctx context.Context, bundle string) (*api.SecretsBundle, error) {
	var out api.SecretsBundle
	return &out, c.Do(ctx, "GET", secPath(bundle), nil, &out)
}

func (c *Client) secretsEdit(ctx context.Context, method, path string, body any) (*api.SecretsBundle, error) {
	var out api.SecretsBundle
	return &out, c.Do(ctx, method, path, body, &out)
}

// SetSecretEnv sets an environment variable in a bundle.
func (c *Client) SetSecretEnv(ctx context.Context, bundle, name, value string) (*api.SecretsBundle, error) {
	return c.secretsEdit(ctx, "PUT", secPath(bundle, "env", name), api.SetSecretEnvRequest{Value: value})
}

// UnsetSecretEnv removes an environment variable from a bundle.
func (c *Client) UnsetSecretEnv(ctx context.Context, bundle, name string) (*api.SecretsBundle, error) {
	return c.secretsEdit(ctx, "DELETE", secPath(bundle, "env", name), nil)
}

// AddSSHKey authorizes an SSH public key in a bundle's sandboxes.
func (c *Client) AddSSHKey(ctx context.Context, bundle, name, publicKey string) (*api.SecretsBundle, error) {
	return c.secretsEdit(ctx, "PUT", secPath(bundle, "ssh-keys", name), api.AddSSHKeyRequest{PublicKey: publicKey})
}

// RemoveSSHKey removes an SSH key from a bundle.
func (c *Client) RemoveSSHKey(ctx context.Context, bundle, name string) (*api.SecretsBundle, error) {
	return c.secretsEdit(ctx, "DELETE", secPath(bundle, "ssh-keys", name), nil)
}

// SetGit sets a bundle's git credentials.
func (c *Client) SetGit(ctx context.Context, bundle string, req api.SetGitRequest) (*api.SecretsBundle, error) {
	return c.secretsEdit(ctx, "PUT", secPath(bundle, "git"), req)
}
