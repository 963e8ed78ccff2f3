// Package config loads and validates agentd's configuration file.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/strictyaml"
	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

// DefaultPath is where agentd looks without --config.
const DefaultPath = "/etc/agentd/config.yaml"

// Sample is the documented default configuration (every key with its default).
//
//go:embed default.yaml
var Sample string

// Config is agentd's configuration.
type Config struct {
	StateDir    string `yaml:"state_dir"`
	SocketPath  string `yaml:"socket_path"`
	Listen      string `yaml:"listen"`
	TLSCert     string `yaml:"tls_cert"`
	TLSKey      string `yaml:"tls_key"`
	TokenFile   string `yaml:"token_file"`
	ProfilesDir string `yaml:"profiles_dir"`

	MetricsListen      string `yaml:"metrics_listen"`
	MetricsAllowRemote bool   `yaml:"metrics_allow_remote"`
	LogFormat          string `yaml:"log_format"`

	ProxmoxURL             string        `yaml:"proxmox_url"`
	ProxmoxTokenID         string        `yaml:"proxmox_token_id"`
	ProxmoxTokenSecretFile string        `yaml:"proxmox_token_secret_file"`
	ProxmoxNode            string        `yaml:"proxmox_node"`
	ProxmoxCAFile          string        `yaml:"proxmox_ca_file"`
	ProxmoxInsecure        bool          `yaml:"proxmox_insecure"`
	ProxmoxCommandTimeout  time.Duration `yaml:"proxmox_command_timeout"`
	ProxmoxTaskTimeout     time.Duration `yaml:"proxmox_task_timeout"`

	SnippetsDir      string `yaml:"snippets_dir"`
	SnippetsStorage  string `yaml:"snippets_storage"`
	WorkspaceStorage string `yaml:"workspace_storage"`
	AgentBridge      string `yaml:"agent_bridge"`
	AgentSubnet      string `yaml:"agent_subnet"`
	AgentHostAddress string `yaml:"agent_host_address"`
	Uplink           string `yaml:"uplink"`
	GuestPort        int    `yaml:"guest_port"`
	IsolateSandboxes bool   `yaml:"isolate_sandboxes"`
	ManageNftSets    bool   `yaml:"manage_nft_sets"`
	// ExposeDefaultSources limit an exposed port when the request names no
	// source (the host's LAN); ExposePortRange is where free host ports are
	// taken from ("20000-20999").
	ExposeDefaultSources []string `yaml:"expose_default_sources"`
	ExposePortRange      string   `yaml:"expose_port_range"`

	// WorkspaceStorages are the other storages a request may name for a
	// workspace; anything else is refused before it reaches Proxmox.
	WorkspaceStorages []string `yaml:"workspace_storages"`

	GuestListen        string        `yaml:"guest_listen"`
	GuestCheckSourceIP bool          `yaml:"guest_check_source_ip"`
	BootstrapTTL       time.Duration `yaml:"bootstrap_ttl"`
	ArtifactTokenTTL   time.Duration `yaml:"artifact_token_ttl"`
	ArtifactRetention  time.Duration `yaml:"artifact_retention"`
	SecretsDir         string        `yaml:"secrets_dir"`
	SecretsKeyFile     string        `yaml:"secrets_key_file"`
	SSHPublicKeys      []string      `yaml:"ssh_public_keys"`
	SSHJumpHost        string        `yaml:"ssh_jump_host"`

	ProvisioningTimeout time.Duration `yaml:"provisioning_timeout"`
	ShutdownTimeout     time.Duration `yaml:"shutdown_timeout"`
	ArtifactMaxBytes    int64         `yaml:"artifact_max_bytes"`

	// Limits (0: none, except where Validate says otherwise).
	MaxTTL                    time.Duration `yaml:"max_ttl"`
	MaxSandboxes              int           `yaml:"max_sandboxes"`
	MaxSandboxesPerProfile    int           `yaml:"max_sandboxes_per_profile"`
	ArtifactQuotaSandboxBytes int64         `yaml:"artifact_quota_sandbox_bytes"`
	ArtifactQuotaJobBytes     int64         `yaml:"artifact_quota_job_bytes"`
	ArtifactMaxCount          int           `yaml:"artifact_max_count"`

	// Guest listener hygiene.
	GuestRefusalInterval  time.Duration `yaml:"guest_refusal_interval"`
	GuestRefusalBurst     int           `yaml:"guest_refusal_burst"`
	GuestHeaderTimeout    time.Duration `yaml:"guest_header_timeout"`
	GuestReadTimeout      time.Duration `yaml:"guest_read_timeout"`
	GuestIdleTimeout      time.Duration `yaml:"guest_idle_timeout"`
	GuestUploadMinRate    int64         `yaml:"guest_upload_min_rate"`
	GuestUploadRateWindow time.Duration `yaml:"guest_upload_rate_window"`

	IdleStopEnabled        bool          `yaml:"idle_stop_enabled"`
	IdleStopInterval       time.Duration `yaml:"idle_stop_interval"`
	IdleStopMinutesDefault int           `yaml:"idle_stop_minutes_default"`
	IdleStopCPUThreshold   float64       `yaml:"idle_stop_cpu_threshold"`

	ReconcileInterval time.Duration `yaml:"reconcile_interval"`
	// ReconcileAuditPerCycle is how many rows whose listing looks unchanged
	// a reconcile cycle re-proves against their VM's config (round-robin);
	// 0 proves only rows whose listing changed, so a cycle is one request.
	ReconcileAuditPerCycle int `yaml:"reconcile_audit_per_cycle"`
	// Warm pools: how often the pool loop refills and checks members, and
	// how many pool clones may run at once on a node (more hit PVE's
	// per-template lock timeouts).
	PoolInterval         time.Duration `yaml:"pool_interval"`
	PoolCloneConcurrency int           `yaml:"pool_clone_concurrency"`
	LeaseGCInterval      time.Duration `yaml:"lease_gc_interval"`

	// Nodes limits agentd to these cluster nodes (empty: every node).
	Nodes []string `yaml:"nodes"`
	// Placement bounds what agentd puts on each node.
	Placement Placement `yaml:"placement"`
	// SDN carries the agent network across the cluster's nodes.
	SDN SDN `yaml:"sdn"`
	// LeaseCountsWhilePaused: a hibernated (SUSPENDED) sandbox's lease runs
	// on; false (the default) stops the clock until it is resumed.
	LeaseCountsWhilePaused bool          `yaml:"lease_counts_while_paused"`
	EventRetention         time.Duration `yaml:"event_retention"`
	DestroyedRetention     time.Duration `yaml:"destroyed_retention"`

	// Set in code only (agentd dev): the secret itself and the CA as PEM.
	ProxmoxTokenSecret string `yaml:"-"`
	ProxmoxCAPEM       []byte `yaml:"-"`
	// File is the path the config was loaded from, for error messages.
	File string `yaml:"-"`
}

// Default returns the configuration with every default applied.
// Placement is the placement section: per-node caps and the sample size.
type Placement struct {
	// Sample is how many eligible nodes a decision compares (best of K).
	Sample int `yaml:"sample"`
	// MemoryReserveMB stays free on every node for the host itself.
	MemoryReserveMB int64 `yaml:"memory_reserve_mb"`
	// CPUOvercommit is the most cores committed per physical CPU.
	CPUOvercommit float64 `yaml:"cpu_overcommit"`
	// MaxSandboxesPerNode (0: no limit).
	MaxSandboxesPerNode int `yaml:"max_sandboxes_per_node"`
	// MaxInFlightPerNode is the clones run at once on a node (more hit
	// Proxmox's `can't lock file … got timeout`), and apart from them the
	// starts.
	MaxInFlightPerNode int `yaml:"max_inflight_per_node"`
}

// SDN is the Proxmox SDN VXLAN zone and VNet that agentd host network apply
// creates so that the agent network spans the nodes: with a zone set, the
// VNet is the agent bridge of every profile.
type SDN struct {
	// Zone is the VXLAN zone's id; "" turns SDN off (one node, or per-node
	// bridges set up by hand).
	Zone string `yaml:"zone"`
	// VNet is the VNet's id, which is the bridge name on every node.
	VNet string `yaml:"vnet"`
	// Tag is the VXLAN network identifier (VNI), unique in the cluster.
	Tag int `yaml:"tag"`
	// MTU of the VNet (0: Proxmox's default, the underlay's MTU - 50).
	MTU int `yaml:"mtu"`
	// Peers are the nodes' VXLAN underlay addresses; empty: the addresses
	// /cluster/status reports for the nodes agentd uses.
	Peers []string `yaml:"peers"`
}

// Enabled reports whether the agent network is an SDN VNet.
func (s SDN) Enabled() bool { return s.Zone != "" }

// sdnIDRE is pve-sdn-zone-id and pve-sdn-vnet-id (2 to 8 characters).
var sdnIDRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9]*[a-zA-Z0-9]$`)

// defaultBridge is agent_bridge's default, which sdn.vnet replaces.
const defaultBridge = "vmbr1"

func Default() *Config {
	return &Config{
		StateDir:                  "/var/lib/agentd",
		SocketPath:                "/run/agentd/agentd.sock",
		ProfilesDir:               "/etc/agentd/profiles",
		MetricsListen:             "127.0.0.1:9464",
		LogFormat:                 "text",
		ProxmoxURL:                "https://127.0.0.1:8006/api2/json",
		ProxmoxTokenSecretFile:    "/etc/agentd/proxmox-token-secret",
		ProxmoxCAFile:             "/etc/pve/pve-root-ca.pem",
		ProxmoxCommandTimeout:     2 * time.Minute,
		ProxmoxTaskTimeout:        10 * time.Minute,
		SnippetsDir:               "/var/lib/vz/snippets",
		SnippetsStorage:           "local",
		WorkspaceStorage:          "local-lvm",
		WorkspaceStorages:         []string{},
		AgentBridge:               defaultBridge,
		AgentSubnet:               "10.77.0.0/16",
		AgentHostAddress:          "10.77.0.1",
		Uplink:                    "vmbr0",
		GuestPort:                 8844,
		IsolateSandboxes:          true,
		ManageNftSets:             true,
		ExposeDefaultSources:      []string{"192.168.0.0/16"},
		ExposePortRange:           "20000-20999",
		GuestCheckSourceIP:        true,
		BootstrapTTL:              10 * time.Minute,
		ArtifactTokenTTL:          24 * time.Hour,
		ArtifactRetention:         720 * time.Hour,
		SecretsDir:                "/etc/agentd/secrets",
		SecretsKeyFile:            "/etc/agentd/secrets/age.key",
		SSHPublicKeys:             []string{},
		ProvisioningTimeout:       10 * time.Minute,
		ShutdownTimeout:           30 * time.Second,
		ArtifactMaxBytes:          268435456,
		MaxSandboxes:              100,
		ArtifactQuotaSandboxBytes: 1 << 30,
		ArtifactQuotaJobBytes:     1 << 30,
		ArtifactMaxCount:          1000,
		GuestRefusalInterval:      time.Minute,
		GuestRefusalBurst:         20,
		GuestHeaderTimeout:        10 * time.Second,
		GuestReadTimeout:          30 * time.Second,
		GuestIdleTimeout:          time.Minute,
		GuestUploadMinRate:        4096,
		GuestUploadRateWindow:     10 * time.Second,
		IdleStopEnabled:           true,
		IdleStopInterval:          time.Minute,
		IdleStopMinutesDefault:    30,
		IdleStopCPUThreshold:      0.05,
		ReconcileInterval:         30 * time.Second,
		ReconcileAuditPerCycle:    100,
		PoolInterval:              10 * time.Second,
		PoolCloneConcurrency:      2,
		Nodes:                     []string{},
		Placement:                 Placement{Sample: 3, MemoryReserveMB: 2048, CPUOvercommit: 4, MaxInFlightPerNode: 2},
		SDN:                       SDN{VNet: "agentnet", Tag: 7700, Peers: []string{}},
		LeaseGCInterval:           30 * time.Second,
		EventRetention:            720 * time.Hour,
		DestroyedRetention:        720 * time.Hour,
	}
}

// Load reads path over the defaults and validates the result. A missing file at
// the default path is not an error (everything has a default but the token).
func Load(path string) (*Config, error) {
	c := Default()
	c.File = path
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && path == DefaultPath {
			return c, c.Validate()
		}
		return nil, fmt.Errorf("read config: %w", err)
	}
	if err := strictyaml.Decode(path, data, c); err != nil {
		return nil, err
	}
	return c, c.Validate()
}

// fieldErr names the file and key of a bad value.
func (c *Config) fieldErr(key, format string, args ...any) error {
	f := c.File
	if f == "" {
		f = "config"
	}
	return fmt.Errorf("%s: %s: %s", f, key, fmt.Sprintf(format, args...))
}

// Validate checks values that each key alone cannot (ranges, combinations).
func (c *Config) Validate() error {
	if c.TokenFile == "" {
		c.TokenFile = filepath.Join(c.StateDir, "api-token")
	}
	if c.ProxmoxNode == "" {
		h, err := os.Hostname()
		if err != nil {
			return c.fieldErr("proxmox_node", "not set and the host name is unknown: %v", err)
		}
		c.ProxmoxNode = strings.SplitN(h, ".", 2)[0]
	}
	for _, kv := range [][2]string{{"state_dir", c.StateDir}, {"socket_path", c.SocketPath},
		{"profiles_dir", c.ProfilesDir}, {"snippets_dir", c.SnippetsDir}, {"token_file", c.TokenFile}} {
		if kv[1] == "" || !filepath.IsAbs(kv[1]) {
			return c.fieldErr(kv[0], "must be an absolute path, got %q", kv[1])
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return c.fieldErr("tls_cert", "tls_cert and tls_key must be set together")
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return c.fieldErr("listen", "want host:port such as 127.0.0.1:8845, got %q", c.Listen)
		}
	}
	if c.MetricsListen != "" {
		host, _, err := net.SplitHostPort(c.MetricsListen)
		if err != nil {
			return c.fieldErr("metrics_listen", "want host:port such as 127.0.0.1:9464, got %q", c.MetricsListen)
		}
		ip := net.ParseIP(host)
		if !c.MetricsAllowRemote && host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return c.fieldErr("metrics_listen", "%q is not a loopback address; set metrics_allow_remote: true to expose metrics beyond this host", c.MetricsListen)
		}
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return c.fieldErr("log_format", "must be text or json, got %q", c.LogFormat)
	}
	u, err := url.Parse(c.ProxmoxURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return c.fieldErr("proxmox_url", "want https://host:8006/api2/json, got %q", c.ProxmoxURL)
	}
	if !strings.HasSuffix(u.Path, "/api2/json") {
		c.ProxmoxURL = strings.TrimRight(c.ProxmoxURL, "/") + "/api2/json"
	}
	if c.ProxmoxTokenID != "" && (!strings.Contains(c.ProxmoxTokenID, "@") || !strings.Contains(c.ProxmoxTokenID, "!")) {
		return c.fieldErr("proxmox_token_id", "want user@realm!name, got %q", c.ProxmoxTokenID)
	}
	for _, kd := range []struct {
		key string
		d   time.Duration
	}{{"proxmox_command_timeout", c.ProxmoxCommandTimeout}, {"proxmox_task_timeout", c.ProxmoxTaskTimeout}, {"provisioning_timeout", c.ProvisioningTimeout},
		{"shutdown_timeout", c.ShutdownTimeout}, {"idle_stop_interval", c.IdleStopInterval},
		{"reconcile_interval", c.ReconcileInterval}, {"lease_gc_interval", c.LeaseGCInterval}, {"pool_interval", c.PoolInterval},
		{"event_retention", c.EventRetention}, {"destroyed_retention", c.DestroyedRetention},
		{"bootstrap_ttl", c.BootstrapTTL}, {"artifact_token_ttl", c.ArtifactTokenTTL}, {"artifact_retention", c.ArtifactRetention},
		{"guest_refusal_interval", c.GuestRefusalInterval}, {"guest_header_timeout", c.GuestHeaderTimeout},
		{"guest_read_timeout", c.GuestReadTimeout}, {"guest_idle_timeout", c.GuestIdleTimeout},
		{"guest_upload_rate_window", c.GuestUploadRateWindow}} {
		if kd.d <= 0 {
			return c.fieldErr(kd.key, "must be greater than zero")
		}
	}
	if c.ArtifactMaxBytes <= 0 {
		return c.fieldErr("artifact_max_bytes", "must be greater than zero, got %d", c.ArtifactMaxBytes)
	}
	if c.MaxTTL < 0 || c.MaxTTL%time.Second != 0 || c.MaxTTL > 0 && c.MaxTTL < time.Minute {
		return c.fieldErr("max_ttl", "must be 0 (no maximum) or whole seconds of at least 1m, got %s", c.MaxTTL)
	}
	if c.MaxSandboxes < 1 {
		return c.fieldErr("max_sandboxes", "must be at least 1, got %d", c.MaxSandboxes)
	}
	if c.ReconcileAuditPerCycle < 0 || c.ReconcileAuditPerCycle > 10000 {
		return c.fieldErr("reconcile_audit_per_cycle", "must be between 0 (prove only rows whose listing changed) and 10000, got %d", c.ReconcileAuditPerCycle)
	}
	if c.PoolCloneConcurrency < 1 || c.PoolCloneConcurrency > 16 {
		return c.fieldErr("pool_clone_concurrency", "must be between 1 and 16 clones at a time per node, got %d", c.PoolCloneConcurrency)
	}
	if p := c.Placement; p.Sample < 1 || p.Sample > 64 {
		return c.fieldErr("placement.sample", "must be between 1 and 64 nodes, got %d", p.Sample)
	} else if p.MemoryReserveMB < 0 {
		return c.fieldErr("placement.memory_reserve_mb", "must be 0 or more, got %d", p.MemoryReserveMB)
	} else if p.CPUOvercommit < 0.1 || p.CPUOvercommit > 64 {
		return c.fieldErr("placement.cpu_overcommit", "must be between 0.1 and 64 cores per CPU, got %g", p.CPUOvercommit)
	} else if p.MaxSandboxesPerNode < 0 {
		return c.fieldErr("placement.max_sandboxes_per_node", "must be 0 (no limit) or more, got %d", p.MaxSandboxesPerNode)
	} else if p.MaxInFlightPerNode < 1 || p.MaxInFlightPerNode > 16 {
		return c.fieldErr("placement.max_inflight_per_node", "must be between 1 and 16, got %d", p.MaxInFlightPerNode)
	}
	for i, n := range c.Nodes {
		if n == "" || strings.ContainsAny(n, "/ \t") {
			return c.fieldErr(fmt.Sprintf("nodes[%d]", i), "%q is not a node name", n)
		}
	}
	if c.MaxSandboxesPerProfile < 0 {
		return c.fieldErr("max_sandboxes_per_profile", "must be 0 (only max_sandboxes) or more, got %d", c.MaxSandboxesPerProfile)
	}
	for _, kv := range []struct {
		key string
		v   int64
	}{{"artifact_quota_sandbox_bytes", c.ArtifactQuotaSandboxBytes}, {"artifact_quota_job_bytes", c.ArtifactQuotaJobBytes},
		{"artifact_max_count", int64(c.ArtifactMaxCount)}, {"guest_refusal_burst", int64(c.GuestRefusalBurst)},
		{"guest_upload_min_rate", c.GuestUploadMinRate}} {
		if kv.v <= 0 {
			return c.fieldErr(kv.key, "must be greater than zero, got %d", kv.v)
		}
	}
	if c.IdleStopMinutesDefault < 0 {
		return c.fieldErr("idle_stop_minutes_default", "must be 0 (off) or more, got %d", c.IdleStopMinutesDefault)
	}
	if c.IdleStopCPUThreshold < 0 || c.IdleStopCPUThreshold > 1 {
		return c.fieldErr("idle_stop_cpu_threshold", "must be between 0 and 1, got %g", c.IdleStopCPUThreshold)
	}
	if err := c.validateSDN(); err != nil {
		return err
	}
	if c.AgentBridge == "" {
		return c.fieldErr("agent_bridge", "must not be empty")
	}
	subnet, err := netip.ParsePrefix(c.AgentSubnet)
	if err != nil || !subnet.Addr().Is4() || subnet.Masked() != subnet {
		return c.fieldErr("agent_subnet", "want an IPv4 network such as 10.77.0.0/16, got %q", c.AgentSubnet)
	}
	host, err := netip.ParseAddr(c.AgentHostAddress)
	if err != nil || !subnet.Contains(host) {
		return c.fieldErr("agent_host_address", "want an address inside agent_subnet %s, got %q", c.AgentSubnet, c.AgentHostAddress)
	}
	if c.Uplink == "" || c.Uplink == c.AgentBridge {
		return c.fieldErr("uplink", "must name the host's outgoing interface, not %q", c.Uplink)
	}
	for i, src := range c.ExposeDefaultSources {
		p, err := netip.ParsePrefix(src)
		if err != nil || !p.Addr().Is4() || p.Bits() == 0 {
			return c.fieldErr(fmt.Sprintf("expose_default_sources[%d]", i), "want the host's LAN as an IPv4 network such as 192.168.1.0/24 (never 0.0.0.0/0), got %q", src)
		}
	}
	if _, _, err := c.ExposePorts(); err != nil {
		return c.fieldErr("expose_port_range", "%v", err)
	}
	if c.GuestPort < 1 || c.GuestPort > 65535 {
		return c.fieldErr("guest_port", "must be a TCP port, got %d", c.GuestPort)
	}
	if c.GuestListen == "" {
		c.GuestListen = net.JoinHostPort(c.AgentHostAddress, strconv.Itoa(c.GuestPort))
	} else if _, _, err := net.SplitHostPort(c.GuestListen); err != nil {
		return c.fieldErr("guest_listen", "want host:port, got %q", c.GuestListen)
	}
	if c.WorkspaceStorage == "" {
		return c.fieldErr("workspace_storage", "must not be empty")
	}
	if c.SnippetsStorage == "" {
		return c.fieldErr("snippets_storage", "must not be empty")
	}
	storages := [][2]string{{"workspace_storage", c.WorkspaceStorage}, {"snippets_storage", c.SnippetsStorage}}
	for i, s := range c.WorkspaceStorages {
		storages = append(storages, [2]string{fmt.Sprintf("workspace_storages[%d]", i), s})
	}
	for _, kv := range storages {
		if err := validate.StorageID(kv[0], kv[1]); err != nil {
			return c.fieldErr(kv[0], "%s", err.(*validate.Error).Reason)
		}
	}
	if h := c.SSHJumpHost; h != "" && !JumpHostRE.MatchString(h) {
		return c.fieldErr("ssh_jump_host", "want USER@HOST or HOST (optionally :PORT), e.g. root@pve1.lan, got %q", h)
	}
	for i, k := range c.SSHPublicKeys {
		if f := strings.Fields(k); len(f) < 2 || !strings.HasPrefix(f[0], "ssh-") && !strings.HasPrefix(f[0], "ecdsa-") {
			return c.fieldErr(fmt.Sprintf("ssh_public_keys[%d]", i), "not an OpenSSH public key (want \"ssh-ed25519 AAAA… comment\")")
		}
	}
	return nil
}

// validateSDN checks the sdn section and, with a zone, makes the VNet the
// agent bridge.
func (c *Config) validateSDN() error {
	s := c.SDN
	if !s.Enabled() {
		return nil
	}
	for _, kv := range [][2]string{{"sdn.zone", s.Zone}, {"sdn.vnet", s.VNet}} {
		if len(kv[1]) < 2 || len(kv[1]) > 8 || !sdnIDRE.MatchString(kv[1]) {
			return c.fieldErr(kv[0], "want 2 to 8 letters and digits starting with a letter (a Proxmox SDN id), got %q", kv[1])
		}
	}
	if s.Tag < 1 || s.Tag > 16777215 {
		return c.fieldErr("sdn.tag", "want a VXLAN network identifier from 1 to 16777215, got %d", s.Tag)
	}
	if s.MTU != 0 && (s.MTU < 576 || s.MTU > 65520) {
		return c.fieldErr("sdn.mtu", "want 0 (Proxmox's default) or an MTU from 576 to 65520, got %d", s.MTU)
	}
	for i, p := range s.Peers {
		if _, err := netip.ParseAddr(p); err != nil {
			return c.fieldErr(fmt.Sprintf("sdn.peers[%d]", i), "want a node's IP address, got %q", p)
		}
	}
	if c.AgentBridge != defaultBridge && c.AgentBridge != s.VNet {
		return c.fieldErr("agent_bridge", "is %q but sdn.zone is set: the agent bridge is the VNet sdn.vnet (%q); leave agent_bridge out", c.AgentBridge, s.VNet)
	}
	c.AgentBridge = s.VNet
	return nil
}

// ProxmoxSecret returns the API token secret, reading the secret file when the
// secret was not set in code.
func (c *Config) ProxmoxSecret() (string, error) {
	if c.ProxmoxTokenSecret != "" {
		return c.ProxmoxTokenSecret, nil
	}
	if c.ProxmoxTokenID == "" {
		return "", c.fieldErr("proxmox_token_id", "not set: agentd needs a Proxmox API token (user@realm!name)")
	}
	b, err := os.ReadFile(c.ProxmoxTokenSecretFile)
	if err != nil {
		return "", c.fieldErr("proxmox_token_secret_file", "%v", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", c.fieldErr("proxmox_token_secret_file", "%s is empty", c.ProxmoxTokenSecretFile)
	}
	return s, nil
}

// ProxmoxCA returns the PEM CA to trust, or nil for the system pool.
func (c *Config) ProxmoxCA() ([]byte, error) {
	if len(c.ProxmoxCAPEM) > 0 || c.ProxmoxInsecure {
		return c.ProxmoxCAPEM, nil
	}
	if c.ProxmoxCAFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(c.ProxmoxCAFile)
	if err != nil {
		return nil, c.fieldErr("proxmox_ca_file", "%v", err)
	}
	return b, nil
}

// ExposePorts parses expose_port_range ("20000-20999").
func (c *Config) ExposePorts() (lo, hi int, err error) {
	a, b, ok := strings.Cut(c.ExposePortRange, "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	if !ok || err1 != nil || err2 != nil || lo < 1024 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("want a range of TCP ports from 1024 up such as 20000-20999, got %q", c.ExposePortRange)
	}
	return lo, hi, nil
}

// JumpHostRE is what ssh -J takes here: [USER@]HOST[:PORT], nothing that ssh
// could read as an option or a second destination.
var JumpHostRE = regexp.MustCompile(`^([A-Za-z0-9_][A-Za-z0-9._-]*@)?([A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$`)
