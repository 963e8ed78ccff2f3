// Package agent assembles agentd serve: configuration, state, Proxmox client,
// sandbox manager and the API listeners (Unix socket, optional TLS over TCP),
// and shuts them down in order.
package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/config"
	"github.com/agentlab/terraform-provider-agentlab/internal/conntrack"
	"github.com/agentlab/terraform-provider-agentlab/internal/guest"
	"github.com/agentlab/terraform-provider-agentlab/internal/jobs"
	"github.com/agentlab/terraform-provider-agentlab/internal/loops"
	"github.com/agentlab/terraform-provider-agentlab/internal/metrics"
	"github.com/agentlab/terraform-provider-agentlab/internal/netpolicy"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/placement"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/sandbox"
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets"
	"github.com/agentlab/terraform-provider-agentlab/internal/server"
	"github.com/agentlab/terraform-provider-agentlab/internal/session"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/vmid"
	"github.com/agentlab/terraform-provider-agentlab/internal/workspace"
)

// Info tells clients how to reach a started agent.
type Info struct {
	Socket   string // unix socket path
	Endpoint string // https://host:port when the TCP listener is on
	Token    string
	CACert   string // path of the PEM certificate clients should trust
	Metrics  string // http://host:port/metrics when metrics are on
	Guest    string // the guest listener's base URL
}

// Hooks replace the clock and the conntrack reader (tests), or switch the
// periodic loops off (tests that drive loops by hand).
type Hooks struct {
	Now       func() time.Time
	Conntrack conntrack.Lister
	NoLoops   bool
	// Addresses replaces the nftables mode-set updater.
	Addresses sandbox.AddressSets
	// IdleStopOff switches idle stop off with this reason (agentd dev
	// without an injected conntrack).
	IdleStopOff string
}

// Agent is a running agentd.
type Agent struct {
	Info    Info
	Manager *sandbox.Manager
	Store   *store.Store
	log     *slog.Logger
	servers []*http.Server
	// stopLoops cancels background loops before the database closes.
	stopLoops []context.CancelFunc
	Loops     *loops.Runner
	Metrics   *metrics.Metrics
	Jobs      *jobs.Manager
	Sessions  *session.Manager
	// API is the control API (tests walk its routes).
	API      *server.Server
	handlers sync.WaitGroup // API requests in progress
	wg       sync.WaitGroup
	errc     chan error
}

// Start opens the state, resumes interrupted work and starts the listeners.
func Start(ctx context.Context, cfg *config.Config, profiles profile.Set, log *slog.Logger, hooks ...Hooks) (*Agent, error) {
	var h Hooks
	if len(hooks) > 0 {
		h = hooks[0]
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	st, err := store.Open(ctx, filepath.Join(cfg.StateDir, "agentd.db"), h.Now)
	if err != nil {
		return nil, err
	}
	met := metrics.New(func() map[string]int {
		out := map[string]int{}
		counts, _ := st.Counts(context.Background())
		for k, v := range counts {
			out[string(k)] = v
		}
		return out
	})
	met.WatchTeams(func() []api.Team {
		ctx := context.Background()
		ts, _ := st.Teams(ctx)
		out := make([]api.Team, 0, len(ts))
		for _, t := range ts {
			if u, err := st.TeamUsage(ctx, t.Name); err == nil {
				t.Usage = &u
			}
			out = append(out, *t)
		}
		return out
	})
	pc, err := ProxmoxClient(cfg, met.Proxmox)
	if err != nil {
		st.Close()
		return nil, err
	}
	// The guest listener is bound first: its address goes into every snippet.
	guestLn, err := net.Listen("tcp", cfg.GuestListen)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("guest_listen %s: %w (is the agent bridge up with agent_host_address?)", cfg.GuestListen, err)
	}
	guestURL := "http://" + guestLn.Addr().String()
	addrs := h.Addresses
	if addrs == nil && cfg.ManageNftSets {
		addrs = netpolicy.Sets{}
	}
	instance, err := st.InstanceID(context.Background())
	if err != nil {
		st.Close()
		return nil, err
	}
	// Validated by config.Validate: agent_subnet holds agent_host_address.
	subnet, _ := netip.ParsePrefix(cfg.AgentSubnet)
	hostAddr, _ := netip.ParseAddr(cfg.AgentHostAddress)
	guard := owner.NewGuard(pc, instance)
	alloc := vmid.New(st, pc)
	wsm := workspace.New(st, pc, guard, alloc, cfg.WorkspaceStorage, cfg.WorkspaceStorages...)
	mgr := sandbox.New(st, pc, guard, alloc, wsm, profiles, sandbox.Options{Node: cfg.ProxmoxNode, SnippetsDir: cfg.SnippetsDir,
		SnippetsStorage: cfg.SnippetsStorage, SSHPublicKeys: cfg.SSHPublicKeys, SSHJumpHost: cfg.SSHJumpHost,
		ProvisioningTimeout: cfg.ProvisioningTimeout, ShutdownTimeout: cfg.ShutdownTimeout, Now: h.Now,
		LeaseCountsWhilePaused: cfg.LeaseCountsWhilePaused,
		IdleStopEnabled:        cfg.IdleStopEnabled, IdleStopMinutesDefault: cfg.IdleStopMinutesDefault,
		IdleStopCPUThreshold: cfg.IdleStopCPUThreshold, Conntrack: h.Conntrack, IdleStopOff: h.IdleStopOff, Metrics: met, Log: log,
		FirewallGroup: netpolicy.GroupName, GuestURL: guestURL, BootstrapTTL: cfg.BootstrapTTL, Addresses: addrs,
		Subnet: subnet, HostAddr: hostAddr, Expose: exposeOptions(cfg), PoolCloneConcurrency: cfg.PoolCloneConcurrency,
		AuditPerCycle: cfg.ReconcileAuditPerCycle,
		Nodes:         cfg.Nodes, Placement: placement.Caps{K: cfg.Placement.Sample, ReserveMB: cfg.Placement.MemoryReserveMB,
			CPUOvercommit: cfg.Placement.CPUOvercommit, MaxSandboxes: cfg.Placement.MaxSandboxesPerNode, MaxInFlight: cfg.Placement.MaxInFlightPerNode},
		Limits: sandbox.Limits{MaxTTL: cfg.MaxTTL, MaxSandboxes: cfg.MaxSandboxes, MaxSandboxesPerProfile: cfg.MaxSandboxesPerProfile}})
	a := &Agent{Manager: mgr, Store: st, log: log, errc: make(chan error, 2), Loops: loops.New(h.Now), Metrics: met}
	a.Loops.Observe = met.Loop
	sessions := session.New(st, mgr)
	a.Sessions = sessions
	a.Jobs = jobs.New(st, mgr)
	api := server.New(mgr, sessions, cfg.ProxmoxNode, log)
	a.API = api
	api.SetLoops(a.Loops)
	api.SetJobs(a.Jobs)
	api.SetSecrets(secrets.Store{Dir: cfg.SecretsDir, KeyFile: cfg.SecretsKeyFile})
	api.SetNodeDuties(nodeDuties(cfg, profiles, mgr))
	a.Info.Guest = guestURL
	gs := guest.New(st, a.Jobs, secrets.Store{Dir: cfg.SecretsDir, KeyFile: cfg.SecretsKeyFile}, profiles, guest.Options{
		BaseURL: guestURL, ArtifactDir: filepath.Join(cfg.StateDir, "artifacts"), MaxBytes: cfg.ArtifactMaxBytes,
		ArtifactTokenTTL: cfg.ArtifactTokenTTL, CheckSourceIP: cfg.GuestCheckSourceIP, Now: h.Now,
		SandboxQuotaBytes: cfg.ArtifactQuotaSandboxBytes, JobQuotaBytes: cfg.ArtifactQuotaJobBytes, MaxArtifacts: cfg.ArtifactMaxCount,
		RefusalInterval: cfg.GuestRefusalInterval, RefusalBurst: cfg.GuestRefusalBurst, HeaderTimeout: cfg.GuestHeaderTimeout,
		ReadTimeout: cfg.GuestReadTimeout, IdleTimeout: cfg.GuestIdleTimeout, UploadMinRate: cfg.GuestUploadMinRate,
		UploadRateWindow: cfg.GuestUploadRateWindow}, log, met)
	api.SetGuestRelay(gs)
	guestSrv := a.newServer(gs)
	gs.Configure(guestSrv)
	a.serve(guestSrv, guestLn)
	// The API listens at once (the socket also proves no other agentd runs
	// on this state) but answers only after the startup resume: a request
	// racing the resume would otherwise redo, or undo, work in flight.
	ready := make(chan struct{})
	gated := gate(ready, api)
	if err := a.listenUnix(cfg.SocketPath, gated); err != nil {
		a.Close()
		return nil, err
	}
	if cfg.Listen != "" {
		if err := a.listenTCP(cfg, api, ready); err != nil {
			a.Close()
			return nil, err
		}
	}
	if cfg.MetricsListen != "" {
		ln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("metrics_listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", met.Handler())
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		a.Info.Metrics = "http://" + ln.Addr().String() + "/metrics"
		a.serve(a.newServer(mux), ln)
	}
	if err := EnsureFirewallGroups(ctx, cfg, profiles, pc); err != nil {
		// Not fatal: Proxmox may be down now; provisioning names the cause.
		log.Warn("security groups not applied", "err", err)
	}
	if err := wsm.Resume(ctx); err != nil {
		a.Close()
		return nil, fmt.Errorf("resume interrupted workspace operations: %w", err)
	}
	n, err := mgr.Resume(ctx)
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("resume interrupted work: %w", err)
	}
	if adopted, err := sessions.Recover(ctx); err != nil {
		log.Warn("recover sessions", "err", err)
	} else if len(adopted) > 0 {
		log.Info("sessions adopted their sandboxes after an interrupted resume", "sessions", adopted)
	}
	if n > 0 {
		log.Info("resumed interrupted sandboxes", "count", n)
	}
	close(ready)
	a.addLoops(cfg)
	if !h.NoLoops {
		lctx, stop := context.WithCancel(context.Background())
		a.stopLoops = append(a.stopLoops, stop)
		a.Loops.Start(lctx)
	}
	log.Info("agentd serving", "socket", a.Info.Socket, "endpoint", a.Info.Endpoint, "node", cfg.ProxmoxNode,
		"profiles", strings.Join(profiles.Names(), ","))
	return a, nil
}

// gate holds requests until ready is closed (or the client gives up).
func gate(ready <-chan struct{}, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-ready:
			h.ServeHTTP(w, r)
		case <-r.Context().Done():
		}
	})
}

func (a *Agent) serve(srv *http.Server, ln net.Listener) {
	a.servers = append(a.servers, srv)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.errc <- err
		}
	}()
}

func (a *Agent) newServer(h http.Handler) *http.Server {
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.handlers.Add(1)
		defer a.handlers.Done()
		h.ServeHTTP(w, r)
	})
	return &http.Server{Handler: counted, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
}

// listenUnix binds the socket, refusing to steal it from a running agentd.
func (a *Agent) listenUnix(path string, h http.Handler) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("socket_path: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("socket_path: another agentd is already serving %s", path)
	}
	_ = os.Remove(path)
	old := syscall.Umask(0o117)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return fmt.Errorf("socket_path: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return fmt.Errorf("socket_path: %w", err)
	}
	a.Info.Socket = path
	srv := a.newServer(h)
	srv.ConnContext = socketPeer
	a.serve(srv, ln)
	return nil
}

// socketPeer names the socket's caller (events record "socket:<uid>"): the
// kernel's SO_PEERCRED, which the peer cannot forge.
func socketPeer(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *syscall.Ucred
	_ = raw.Control(func(fd uintptr) {
		cred, _ = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if cred == nil {
		return ctx
	}
	return server.WithSocketPeer(ctx, int(cred.Uid))
}

func (a *Agent) listenTCP(cfg *config.Config, s *server.Server, ready <-chan struct{}) error {
	token, err := loadOrCreateToken(cfg.TokenFile)
	if err != nil {
		return err
	}
	certFile, keyFile := cfg.TLSCert, cfg.TLSKey
	if certFile == "" {
		certFile, keyFile = filepath.Join(cfg.StateDir, "tls.crt"), filepath.Join(cfg.StateDir, "tls.key")
		if err := ensureSelfSigned(certFile, keyFile, cfg.Listen); err != nil {
			return err
		}
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("tls_cert/tls_key: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := a.newServer(gate(ready, s.WithToken(token)))
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	a.Info.Endpoint = "https://" + ln.Addr().String()
	a.Info.Token, a.Info.CACert = token, certFile
	a.serve(srv, tls.NewListener(ln, srv.TLSConfig))
	return nil
}

// loadOrCreateToken reads the API token, creating a random one (0600) first.
func loadOrCreateToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		t := strings.TrimSpace(string(b))
		if len(t) < 32 {
			return "", fmt.Errorf("token_file %s: token is shorter than 32 characters", path)
		}
		return t, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("token_file: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	t := hex.EncodeToString(raw)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return "", fmt.Errorf("token_file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("token_file: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(t + "\n"); err != nil {
		return "", fmt.Errorf("token_file: %w", err)
	}
	return t, nil
}

// ensureSelfSigned creates a certificate for the listen host, loopback and this
// host's name, kept across restarts so clients keep trusting it.
func ensureSelfSigned(certFile, keyFile, listen string) error {
	if _, err := os.Stat(certFile); err == nil {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(listen)
	hostname, _ := os.Hostname()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "agentd"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}}
	if hostname != "" {
		tmpl.DNSNames = append(tmpl.DNSNames, hostname)
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	} else if host != "" && ip == nil {
		tmpl.DNSNames = append(tmpl.DNSNames, host)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		return fmt.Errorf("write TLS key: %w", err)
	}
	return os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// ProxmoxClient builds the Proxmox client the config describes (token secret
// and CA read from their files); observe may be nil. It makes no request.
func ProxmoxClient(cfg *config.Config, observe func(method, endpoint string, d time.Duration, failed bool)) (*pve.Client, error) {
	secret, err := cfg.ProxmoxSecret()
	if err != nil {
		return nil, err
	}
	ca, err := cfg.ProxmoxCA()
	if err != nil {
		return nil, err
	}
	return pve.New(pve.Config{URL: cfg.ProxmoxURL, TokenID: cfg.ProxmoxTokenID, Secret: secret, Node: cfg.ProxmoxNode,
		CAPEM: ca, Insecure: cfg.ProxmoxInsecure, Timeout: cfg.ProxmoxCommandTimeout, TaskTimeout: cfg.ProxmoxTaskTimeout, Observe: observe})
}

// EnsureFirewallGroups creates or updates the Proxmox security groups of the
// network modes the profiles use (idempotent).
func EnsureFirewallGroups(ctx context.Context, cfg *config.Config, profiles profile.Set, pc *pve.Client) error {
	host, err := netip.ParseAddr(cfg.AgentHostAddress)
	if err != nil {
		return err
	}
	groups, err := netpolicy.Groups(profiles, host, cfg.GuestPort)
	if err != nil {
		return err
	}
	for _, g := range groups {
		if _, err := pc.EnsureGroup(ctx, g.Name, g.Comment, g.Rules); err != nil {
			return err
		}
	}
	return nil
}

// addLoops registers the runtime loops.
func (a *Agent) addLoops(cfg *config.Config) {
	m := a.Manager
	a.Loops.Add(loops.Loop{Name: "lease_gc", Every: cfg.LeaseGCInterval, Run: m.LeaseGC})
	a.Loops.Add(loops.Loop{Name: "provisioning_timeout", Every: cfg.LeaseGCInterval, Run: m.ProvisioningTimeouts})
	a.Loops.Add(loops.Loop{Name: "reconcile", Every: cfg.ReconcileInterval, Run: func(ctx context.Context) error {
		rep, err := m.Reconcile(ctx, false)
		if _, serr := a.Sessions.Recover(ctx); serr != nil && err == nil {
			err = serr
		}
		if err == nil && len(rep.Actions) > 0 {
			a.log.Info("reconcile repaired drift", "actions", len(rep.Actions), "orphans", len(rep.Orphans))
		}
		return err
	}})
	a.Loops.Add(loops.Loop{Name: "port_expiry", Every: cfg.LeaseGCInterval, Run: m.PortGC})
	a.Loops.Add(loops.Loop{Name: "idle_stop", Every: cfg.IdleStopInterval, Run: m.IdleStop})
	a.Loops.Add(loops.Loop{Name: "pool", Every: cfg.PoolInterval, Run: m.PoolFill})
	a.Loops.Add(loops.Loop{Name: "job_finalize", Every: cfg.LeaseGCInterval, Run: a.Jobs.Finalize})
	a.Loops.Add(loops.Loop{Name: "prune_state", Every: time.Hour, Run: func(ctx context.Context) error {
		ev, sb, err := a.Store.Prune(ctx, cfg.EventRetention, cfg.DestroyedRetention)
		if ev+sb > 0 {
			a.log.Info("pruned state", "events", ev, "destroyed_sandboxes", sb)
		}
		old, aerr := a.Store.OldArtifacts(ctx, cfg.ArtifactRetention)
		for _, art := range old {
			if rerr := os.Remove(art.Path); rerr == nil || os.IsNotExist(rerr) {
				_ = a.Store.DeleteArtifact(ctx, art.ID)
			}
		}
		return errors.Join(err, aerr)
	}})
}

// Err reports a listener that failed while serving.
func (a *Agent) Err() <-chan error { return a.errc }

// Close stops accepting requests, finishes in-flight requests, stops
// background work (which stays resumable), then closes the database.
func (a *Agent) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if a.Manager != nil {
		a.Manager.EndWaits()
	}
	// Idle keep-alive connections close at once; a connection that never sent
	// a request counts as busy for 5 s in net/http, so do not wait for it.
	sctx, scancel := context.WithTimeout(ctx, time.Second)
	for _, s := range a.servers {
		if err := s.Shutdown(sctx); err != nil {
			_ = s.Close()
		}
	}
	scancel()
	// Requests already running finish (they work on the agent's context).
	a.handlers.Wait()
	for _, stop := range a.stopLoops {
		stop()
	}
	if a.Loops != nil {
		a.Loops.Wait()
	}
	a.wg.Wait()
	if a.Manager != nil {
		a.Manager.Close()
	}
	if a.Store != nil {
		_ = a.Store.Close()
	}
	if a.Info.Socket != "" {
		_ = os.Remove(a.Info.Socket)
	}
}

// exposeOptions are the exposed-port settings (validated by config.Validate).
func exposeOptions(cfg *config.Config) sandbox.ExposeOptions {
	o := sandbox.ExposeOptions{Uplink: cfg.Uplink}
	o.PortLow, o.PortHigh, _ = cfg.ExposePorts()
	for _, s := range cfg.ExposeDefaultSources {
		if p, err := netip.ParsePrefix(s); err == nil {
			o.DefaultSources = append(o.DefaultSources, p.Masked())
		}
	}
	return o
}
