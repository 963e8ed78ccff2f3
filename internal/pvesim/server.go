// Package pvesim is a Proxmox VE API simulator: a real HTTPS server speaking
// /api2/json the way pveproxy does (status lines carrying the error text, the
// {"data":…} envelope with PVE's JSON types, UPID tasks, locks, storages with their
// feature matrix), so that go-proxmox and agentd behave against it as against PVE.
//
// What the simulator assumes about Proxmox, and what it leaves out, is listed in
// docs/guides/simulator.md; every assumption there cites the PVE source it came from.
package pvesim

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim/apischema"
)

// Options configures a simulator. The zero value is usable: one node "pve",
// the default storages, one API token and instant tasks.
type Options struct {
	Addr      string   // listen address; default 127.0.0.1:0
	Nodes     []string // default ["pve"]
	TokenID   string   // default "agentd@pve!agentd"
	Secret    string   // default random UUID
	User      string   // ticket login user; default "root@pam"
	Password  string   // default random
	Durations Durations
	// StorageLockTimeout is how long a disk allocation, clone or free waits
	// for its storage lock (storagelock.go); default 10 s, PVE's.
	StorageLockTimeout time.Duration
	// AuthFailDelay is pveproxy's penalty before answering a failed login (3 s on PVE).
	AuthFailDelay time.Duration
	// AgentBootDelay is how long after start the guest agent answers; DHCPDelay how
	// much later the guest reports an IPv4 address.
	AgentBootDelay time.Duration
	DHCPDelay      time.Duration
	Seed           int64  // MAC/pid randomness; 0 means 1
	Version        string // PVE version string; default 9.1.2
	// Fixtures adds a cloud-init template VM (9000) and an extra dir/raw storage.
	Fixtures bool
	// TemplatePerNode (with Fixtures, several nodes) adds a copy of the
	// template on every node: VMID 9000+i on the i-th node (0-based), each
	// on that node's local-lvm, as a linked clone needs its base there.
	TemplatePerNode bool
	// SharedTemplate (with Fixtures, several nodes) puts template 9000's
	// disks on the shared storage, so any node can clone it.
	SharedTemplate bool
	// OfflineReason is the reason phrase of pveproxy's 595 for a node that
	// is offline (SetNodeOnline); default "No route to host" (a host that is
	// down). "Connection refused" is a host up with pveproxy stopped.
	OfflineReason string
	// LocalDir backs the "local" dir storage of the first node with a real
	// directory, as /var/lib/vz is on a PVE host: snippets are files in
	// LocalDir/snippets, so agentd writes them the way it does on a real host.
	LocalDir string
	// SharedDir backs the cluster's shared storage with a real directory,
	// as an NFS mount is on every node: snippets agentd writes to
	// SharedDir/snippets are seen from every node.
	SharedDir string
	// StateDir persists the simulated cluster across restarts (persist.go);
	// empty: the state lives in memory only.
	StateDir string
	// RequestLog receives one JSON line per request (reqlog.go); nil: no log.
	RequestLog io.Writer
	Now        func() time.Time
	// ExecOutputLimit is the guest agent's capture limit per output stream of
	// agent/exec (qga's 16 MiB when 0); tests lower it to see truncation.
	ExecOutputLimit int
}

// Sim is a running simulator.
type Sim struct {
	opts     Options
	mu       simMutex
	now      func() time.Time
	rnd      *rand.Rand
	nodes    map[string]*node
	vms      map[int]*vm
	fwGroups map[string]*fwGroup // cluster security groups
	pools    map[string]*pool    // user.cfg pools
	tasks    map[string]*task
	// storeLocks are the storage locks held now (storagelock.go).
	storeLocks map[string]*storeLock
	taskList   []*task
	tickets    map[string]string // ticket → user
	csrf       map[string]string // ticket → CSRF token
	faults     faults
	nextPID    int
	srv        *http.Server
	ln         net.Listener
	url        string
	caPEM      []byte
	stats      Stats
	wg         sync.WaitGroup
	closing    chan struct{}
	reqLog     *reqLogger
	// clusterFw holds the datacenter firewall options (clusterfw.go).
	clusterFw map[string]string
	// sdn holds /etc/pve/sdn (sdn.go): the edited and the applied config.
	sdn sdnState
	// Persistence (persist.go): load count, last written state's checksum,
	// last write error, and writes switched off while closing.
	generation int64
	persistSum [32]byte
	persistErr error
	persistOff bool
}

// simMutex is the state lock. With a state dir, releasing it first writes the
// state when it changed, so whatever a client observed is on disk.
type simMutex struct {
	sync.Mutex
	onUnlock func()
}

func (m *simMutex) Unlock() {
	if m.onUnlock != nil {
		m.onUnlock()
	}
	m.Mutex.Unlock()
}

// Stats counts requests for benchmarks and tests.
type Stats struct {
	Requests int64
	ByPath   map[string]int64
	// StorageLockTimeouts counts storage lock waits that gave up
	// (storagelock.go), whether the task then failed or only warned.
	StorageLockTimeouts int64
}

// Error is a PVE API error: the code and first message line go into the status line.
type Error struct {
	Code   int
	Msg    string
	Errors map[string]string
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s", e.Code, e.Msg) }

func errf(format string, a ...any) *Error {
	return &Error{Code: 500, Msg: fmt.Sprintf(format, a...)}
}

func paramErr(errs map[string]string) *Error {
	return &Error{Code: 400, Msg: "Parameter verification failed.", Errors: errs}
}

// New builds a simulator and starts serving HTTPS.
func New(opts Options) (*Sim, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if len(opts.Nodes) == 0 {
		opts.Nodes = []string{"pve"}
	}
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	if opts.Version == "" {
		opts.Version = "9.1.2"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Sim{
		opts:       opts,
		now:        opts.Now,
		rnd:        rand.New(rand.NewSource(opts.Seed)),
		nodes:      map[string]*node{},
		vms:        map[int]*vm{},
		fwGroups:   map[string]*fwGroup{},
		pools:      map[string]*pool{},
		tasks:      map[string]*task{},
		storeLocks: map[string]*storeLock{},
		tickets:    map[string]string{},
		csrf:       map[string]string{},
		nextPID:    0x1A2B0,
		closing:    make(chan struct{}),
		stats:      Stats{ByPath: map[string]int64{}},
	}
	if opts.RequestLog != nil {
		s.reqLog = &reqLogger{w: opts.RequestLog}
	}
	if opts.OfflineReason == "" {
		s.opts.OfflineReason = "No route to host"
	}
	var shared *storage
	if len(opts.Nodes) > 1 {
		shared = newSharedStorage()
		shared.dir = opts.SharedDir
	}
	for i, n := range opts.Nodes {
		s.nodes[n] = newNode(n)
		if i == 0 && opts.LocalDir != "" {
			s.nodes[n].storages["local"].dir = opts.LocalDir
		}
		if shared != nil {
			s.nodes[n].storages[shared.id] = shared
		}
	}
	loaded := false
	if opts.StateDir != "" {
		var err error
		if loaded, err = s.loadState(); err != nil {
			return nil, err
		}
	}
	if s.opts.TokenID == "" {
		s.opts.TokenID = "agentd@pve!agentd"
	}
	if s.opts.Secret == "" {
		s.opts.Secret = s.uuid()
	}
	if s.opts.User == "" {
		s.opts.User = "root@pam"
	}
	if s.opts.Password == "" {
		s.opts.Password = s.uuid()[:18]
	}
	if opts.StateDir != "" {
		s.mu.onUnlock = s.persistLocked
	}
	if opts.Fixtures && !loaded {
		if err := s.addFixtures(); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	//lint:ignore SA2001 unlocking runs onUnlock (persistLocked): the first write
	s.mu.Unlock() // the first write: fixtures, or the new generation
	if s.persistErr != nil {
		return nil, s.persistErr
	}
	var cert tls.Certificate
	var err error
	if opts.StateDir != "" {
		certPEM, keyPEM, err := stateCert(opts.StateDir)
		if err != nil {
			return nil, err
		}
		if cert, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
			return nil, fmt.Errorf("pvesim: certificate in %s: %w", opts.StateDir, err)
		}
		s.caPEM = certPEM
	} else {
		var caPEM []byte
		if cert, caPEM, err = selfSigned(); err != nil {
			return nil, err
		}
		s.caPEM = caPEM
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", opts.Addr, err)
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler: s,
		// pveproxy is HTTP/1.1 only, and custom reason phrases need it.
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}},
		ReadHeaderTimeout: 10 * time.Second,
	}
	s.url = "https://" + ln.Addr().String() + "/api2/json"
	go func() { _ = s.srv.ServeTLS(ln, "", "") }()
	return s, nil
}

// URL is the API base, e.g. https://127.0.0.1:8006/api2/json.
func (s *Sim) URL() string { return s.url }

// Token returns the API token id and secret.
func (s *Sim) Token() (id, secret string) { return s.opts.TokenID, s.opts.Secret }

// Login returns the ticket-login user and password.
func (s *Sim) Login() (user, password string) { return s.opts.User, s.opts.Password }

// Node is the first node's name.
func (s *Sim) Node() string { return s.opts.Nodes[0] }

// CAPEM is the PEM of the self-signed certificate, for clients that verify TLS.
func (s *Sim) CAPEM() []byte { return s.caPEM }

// CertPool returns a pool trusting the simulator's certificate.
func (s *Sim) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(s.caPEM)
	return p
}

// Close stops serving, aborts running tasks and waits for them.
func (s *Sim) Close() error {
	select {
	case <-s.closing:
		return nil
	default:
	}
	// Tasks aborted by the shutdown are not written as failed: the state
	// keeps them running, and the next load reports what PVE reports for a
	// worker that vanished (see persist.go).
	s.mu.Lock()
	s.persistLocked()
	s.persistOff = true
	s.mu.Unlock()
	close(s.closing)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	s.wg.Wait()
	return err
}

// ServeHTTP routes /api2/json to the API and /_sim to the test hooks.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.reqLog != nil {
		s.serveLogged(w, r, s.route)
		return
	}
	s.route(w, r)
}

func (s *Sim) route(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/api2/json/"):
		s.serveAPI(w, r, strings.TrimPrefix(r.URL.Path, "/api2/json"))
	case strings.HasPrefix(r.URL.Path, "/_sim/"):
		s.serveHooks(w, r)
	default:
		writeError(w, &Error{Code: 501, Msg: "Unsupported format"})
	}
}

// request is what a handler sees.
type request struct {
	method   string
	path     string            // decoded, relative to /api2/json
	template string            // route pattern
	vars     map[string]string // path variables
	params   map[string]any    // path + query + body, merged
	user     string            // authenticated user (user@realm)
	tokenID  string            // token name when authenticated with a token
}

func (r *request) str(k string) string {
	v, ok := r.params[k]
	if !ok || v == nil {
		return ""
	}
	s, _ := apischema.Scalar(v)
	return s
}

func (r *request) has(k string) bool { _, ok := r.params[k]; return ok }

func (r *request) intv(k string) int {
	var n int
	fmt.Sscan(r.str(k), &n)
	return n
}

func (r *request) boolv(k string) bool {
	v := r.str(k)
	return v == "1" || v == "true"
}

// owner is the task owner string: the full token id for tokens, as PVE records it.
func (r *request) owner() string {
	if r.tokenID != "" {
		return r.user + "!" + r.tokenID
	}
	return r.user
}

func (s *Sim) serveAPI(w http.ResponseWriter, r *http.Request, path string) {
	s.mu.Lock()
	s.stats.Requests++
	s.mu.Unlock()

	rt, vars := match(r.Method, path)
	if rt == nil {
		writeError(w, &Error{Code: 501, Msg: fmt.Sprintf("Method '%s %s' not implemented", r.Method, path)})
		return
	}
	s.mu.Lock()
	before := s.faults.beforeHook(r.Method, path)
	s.mu.Unlock()
	if before != nil {
		// Before the faults are looked up: the hook may aim one at this
		// very request.
		before()
	}
	s.mu.Lock()
	s.stats.ByPath[r.Method+" "+rt.pattern]++
	f := s.faults.endpointFault(r.Method, path)
	s.mu.Unlock()

	if r.Method == http.MethodGet || r.Method == http.MethodDelete {
		if r.ContentLength > 0 {
			writeError(w, &Error{Code: 501, Msg: fmt.Sprintf("Unexpected content for method '%s'", r.Method)})
			return
		}
	}
	req := &request{method: r.Method, path: path, template: rt.pattern, vars: vars}
	if rt.pattern != "/access/ticket" {
		if e := s.authenticate(r, req); e != nil {
			if s.opts.AuthFailDelay > 0 && e.Msg == "Authentication failed!" {
				time.Sleep(s.opts.AuthFailDelay)
			}
			writeError(w, e)
			return
		}
	}
	if e := s.proxyCheck(vars); e != nil {
		writeError(w, e)
		return
	}
	if f != nil {
		if f.hang {
			select {
			case <-r.Context().Done():
			case <-s.closing:
			}
			return
		}
		writeError(w, &Error{Code: f.code, Msg: f.msg})
		return
	}
	params, e := parseParams(r, vars)
	if e != nil {
		writeError(w, e)
		return
	}
	req.params = params
	if ss, ok := w.(statusSetter); ok {
		ss.setRequest(req)
	}
	// Fail closed: a route without its schema entry is not served unvalidated
	// (routes_test.go makes it a test failure too).
	schema, ok := apischema.Lookup(rt.pattern, r.Method)
	if !ok {
		writeError(w, &Error{Code: 501, Msg: fmt.Sprintf("Method '%s %s' not implemented", r.Method, path)})
		return
	}
	if errs := schema.Validate(params); len(errs) > 0 {
		writeError(w, paramErr(errs))
		return
	}
	data, err := rt.handler(s, req)
	s.mu.Lock()
	lost := s.faults.replyFault(r.Method, path)
	if s.persistErr != nil && err == nil && r.Method != http.MethodGet {
		err = errf("%v", s.persistErr) // the change may not survive a restart
	}
	s.mu.Unlock()
	if lost != nil {
		s.loseReply(w, r, lost)
		return
	}
	if err != nil {
		var pe *Error
		if !errors.As(err, &pe) {
			pe = &Error{Code: 500, Msg: err.Error()}
		}
		writeError(w, pe)
		return
	}
	writeData(w, data)
}

func parseParams(r *http.Request, vars map[string]string) (map[string]any, *Error) {
	params := map[string]any{}
	for k, vs := range r.URL.Query() {
		params[k] = vs[len(vs)-1]
	}
	if r.Body != nil {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			return nil, &Error{Code: 400, Msg: "Bad Request"}
		}
		ct := r.Header.Get("Content-Type")
		switch {
		case len(body) == 0:
		case strings.HasPrefix(ct, "application/json"):
			var m map[string]any
			dec := json.NewDecoder(strings.NewReader(string(body)))
			dec.UseNumber()
			if err := dec.Decode(&m); err != nil {
				return nil, &Error{Code: 400, Msg: "Bad Request", Errors: map[string]string{"body": "unable to parse JSON body"}}
			}
			for k, v := range m {
				if n, ok := v.(json.Number); ok {
					params[k] = n.String()
				} else {
					params[k] = v
				}
			}
		default:
			vals, err := url.ParseQuery(string(body))
			if err != nil {
				return nil, &Error{Code: 400, Msg: "Bad Request"}
			}
			for k, vs := range vals {
				params[k] = vs[len(vs)-1]
			}
		}
	}
	for k, v := range vars {
		params[k] = v
	}
	return params, nil
}

type envelope struct {
	Data  any  `json:"data"`
	Total *int `json:"total,omitempty"`
}

func writeData(w http.ResponseWriter, data any) {
	env := envelope{Data: data}
	if tl, ok := data.(taskLog); ok {
		env.Data = tl.lines
		env.Total = &tl.total
	}
	b, err := json.Marshal(env)
	if err != nil {
		writeError(w, errf("internal error: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.Header().Set("Cache-Control", "max-age=0")
	_, _ = w.Write(b)
}

// writeError writes PVE's error response: the message's first line as the HTTP
// reason phrase (net/http cannot, so the connection is hijacked), the body
// {"data":null,"message":…[,"errors":…]} and Connection: close.
func writeError(w http.ResponseWriter, e *Error) {
	body := map[string]any{"data": nil}
	if e.Code < 590 {
		msg := e.Msg
		if !strings.HasSuffix(msg, "\n") {
			msg += "\n"
		}
		body["message"] = msg
		if len(e.Errors) > 0 {
			body["errors"] = e.Errors
		}
	}
	b, _ := json.Marshal(body)
	if e.Code >= 590 {
		b = nil // pveproxy's proxy errors carry no body
	}
	reason := strings.SplitN(strings.TrimRight(e.Msg, "\n"), "\n", 2)[0]
	if ss, ok := w.(statusSetter); ok {
		ss.setStatus(e.Code, reason)
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		w.WriteHeader(e.Code)
		_, _ = w.Write(b)
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	writeRaw(buf, e.Code, reason, b)
}

func writeRaw(buf *bufio.ReadWriter, code int, reason string, body []byte) {
	fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\n", code, reason)
	fmt.Fprintf(buf, "Content-Type: application/json;charset=UTF-8\r\n")
	fmt.Fprintf(buf, "Content-Length: %d\r\nConnection: close\r\n", len(body))
	fmt.Fprintf(buf, "Date: %s\r\n\r\n", time.Now().UTC().Format(http.TimeFormat))
	_, _ = buf.Write(body)
	_ = buf.Flush()
}

func (s *Sim) uuid() string {
	b := make([]byte, 16)
	s.rnd.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
