// Package pve is the only code that talks to Proxmox VE. It wraps go-proxmox and
// handles its pitfalls in one place: tasks that fail but Wait reports nil, nil
// tasks, 595 proxy errors swallowed on calls without a result, options the
// library cannot express, and errors that are only text.
package pve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"
)

// Config says how to reach Proxmox.
type Config struct {
	URL      string // https://host:8006/api2/json
	TokenID  string // user@realm!name
	Secret   string
	Node     string
	CAPEM    []byte // trust this certificate (PVE's self-signed one); empty uses the system pool
	Insecure bool
	// Timeout bounds each HTTP request (proxmox_command_timeout).
	Timeout time.Duration
	// TaskTimeout bounds the wait for one task (0: only the caller's ctx).
	TaskTimeout time.Duration
	// PollMin/PollMax bound the task polling interval, which backs off from min to max.
	PollMin, PollMax time.Duration
	// Observe, when set, is told about every request (metrics).
	Observe func(method, endpoint string, d time.Duration, failed bool)
}

// Client talks to one Proxmox node.
type Client struct {
	api  *proxmox.Client
	node string
	cfg  Config
}

// New builds a client; it makes no request.
func New(cfg Config) (*Client, error) {
	if cfg.URL == "" || cfg.TokenID == "" || cfg.Secret == "" || cfg.Node == "" {
		return nil, fmt.Errorf("pve: url, token id, secret and node are required")
	}
	if !strings.Contains(cfg.TokenID, "!") {
		return nil, fmt.Errorf("pve: token id %q must look like user@realm!name", cfg.TokenID)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.PollMin == 0 {
		cfg.PollMin = 20 * time.Millisecond
	}
	if cfg.PollMax == 0 {
		cfg.PollMax = time.Second
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(cfg.CAPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.CAPEM) {
			return nil, fmt.Errorf("pve: CA certificate is not valid PEM")
		}
		tlsCfg.RootCAs = pool
	}
	tlsCfg.InsecureSkipVerify = cfg.Insecure
	// Every clone slot, start slot, lock wait and task poll of a busy agentd
	// has a request open at once: with fewer idle connections kept than
	// that, each burst closes some and the next pays a TLS handshake on
	// both ends (a third of agentd's CPU in BenchmarkClusterCreates).
	transport := &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}
	hc := &http.Client{Transport: proxyErrors{rt: transport, observe: cfg.Observe}, Timeout: cfg.Timeout}
	api := proxmox.NewClient(cfg.URL, proxmox.WithHTTPClient(hc), proxmox.WithAPIToken(cfg.TokenID, cfg.Secret))
	return &Client{api: api, node: cfg.Node, cfg: cfg}, nil
}

// Node is the node this client manages.
func (c *Client) Node() string { return c.node }

// On is the client for another node of the same cluster: the same API
// connection (any node's pveproxy forwards /nodes/{n}/… to node n), with
// node-scoped calls addressed to node. "" is this client's own node.
func (c *Client) On(node string) *Client {
	if node == "" || node == c.node {
		return c
	}
	cp := *c
	cp.node = node
	return &cp
}

// proxyErrors turns pveproxy's 595/596/599 answers into errors: go-proxmox treats
// them as success when a call has no result to decode.
// It also reports each request to observe.
type proxyErrors struct {
	rt      http.RoundTripper
	observe func(method, endpoint string, d time.Duration, failed bool)
}

func (p proxyErrors) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	res, err := p.rt.RoundTrip(r)
	if p.observe != nil {
		p.observe(r.Method, Endpoint(r.URL.Path), time.Since(start), err != nil || res.StatusCode >= 400)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if res.StatusCode >= 590 {
		res.Body.Close()
		return nil, fmt.Errorf("%w: %s", ErrUnavailable, res.Status)
	}
	return res, nil
}

var (
	nodeSeg = regexp.MustCompile(`/nodes/[^/]+`)
	upidSeg = regexp.MustCompile(`/UPID:[^/]+`)
	numSeg  = regexp.MustCompile(`/\d+(/|$)`)
	snapSeg = regexp.MustCompile(`/snapshot/[^/]+`)
	volSeg  = regexp.MustCompile(`/content/[^/]+`)
)

// Endpoint turns a request path into a low-cardinality label:
// /api2/json/nodes/pve/qemu/101/status/start → /nodes/{node}/qemu/{vmid}/status/start.
func Endpoint(path string) string {
	p := strings.TrimPrefix(path, "/api2/json")
	p = upidSeg.ReplaceAllString(p, "/{upid}")
	p = nodeSeg.ReplaceAllString(p, "/nodes/{node}")
	p = snapSeg.ReplaceAllString(p, "/snapshot/{name}")
	p = volSeg.ReplaceAllString(p, "/content/{volume}")
	for numSeg.MatchString(p) {
		p = numSeg.ReplaceAllString(p, "/{vmid}$1")
	}
	return p
}

func (c *Client) vmPath(vmid int, suffix string) string {
	return fmt.Sprintf("/nodes/%s/qemu/%d%s", c.node, vmid, suffix)
}

// vm is a cheap handle that fetches nothing.
func (c *Client) vm(vmid int) *proxmox.VirtualMachine {
	v := &proxmox.VirtualMachine{}
	v.New(c.api, c.node, vmid)
	return v
}

// wait polls a task until it stops and reports failure as an error: go-proxmox's
// Wait returns nil for failed tasks and flags "WARNINGS: n" (a success) as failed.
func (c *Client) wait(ctx context.Context, op string, task *proxmox.Task) error {
	if task == nil {
		return nil // the endpoint finished synchronously (null instead of a UPID)
	}
	if task.Node == "" {
		return &Error{Op: op, Msg: fmt.Sprintf("malformed UPID %q", task.UPID), Kind: errTaskWithoutIdentity}
	}
	if c.cfg.TaskTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.TaskTimeout)
		defer cancel()
	}
	begun := time.Now()
	for {
		if err := task.Ping(ctx); err != nil {
			return wrap(op+": poll task", err)
		}
		if task.IsCompleted {
			status := task.ExitStatus
			if status == "OK" || strings.HasPrefix(status, "WARNINGS:") {
				return nil
			}
			return &Error{Op: op, Msg: status, UPID: string(task.UPID), Kind: kindOf(status)}
		}
		select {
		case <-ctx.Done():
			return &Error{Op: op, Msg: "gave up waiting: " + ctx.Err().Error(), UPID: string(task.UPID), Kind: ErrTimeout}
		case <-time.After(pollInterval(time.Since(begun), c.cfg.PollMin, c.cfg.PollMax)):
		}
	}
}

// pollInterval is the pause before the next task status poll: a quarter
// of the time the task has run so far, within [min, max]. A task is then
// seen done at most about 25% after it ended, where doubling the pause
// (20, 40 … 320 ms) let a 200 ms task wait until 300 ms and a 700 ms one
// until 1.3 s; a long task is still polled about once per max.
func pollInterval(elapsed, lo, hi time.Duration) time.Duration {
	return max(lo, min(elapsed/4, hi))
}

// run starts a go-proxmox call that returns a task and waits for it.
func (c *Client) run(ctx context.Context, op string, start func() (*proxmox.Task, error)) error {
	task, err := start()
	if err != nil {
		return wrap(op, err)
	}
	return c.wait(ctx, op, task)
}

// postTask sends a raw POST that returns a UPID and waits for the task. It is
// used where go-proxmox has no way to express an option (full=0, forceStop, …).
func (c *Client) postTask(ctx context.Context, op, path string, body map[string]any) error {
	var upid proxmox.UPID
	if err := c.api.Post(ctx, path, body, &upid); err != nil {
		return wrap(op, err)
	}
	return c.wait(ctx, op, proxmox.NewTask(upid, c.api))
}

func (c *Client) deleteTask(ctx context.Context, op, path string, params map[string]any) error {
	var upid proxmox.UPID
	if err := c.api.DeleteWithParams(ctx, path, params, &upid); err != nil {
		return wrap(op, err)
	}
	return c.wait(ctx, op, proxmox.NewTask(upid, c.api))
}
