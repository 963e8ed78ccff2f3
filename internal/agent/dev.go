package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/config"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// DevOptions configures `agentd dev`.
type DevOptions struct {
	StateDir string // empty: a temporary directory removed on Close
	Listen   string // TCP listener; default 127.0.0.1:0
	SimAddr  string // simulator address; default 127.0.0.1:0
	// PersistSim keeps the simulated Proxmox host in StateDir/pve across
	// restarts (`agentd dev --state-dir`); tests leave it off (a write per
	// change costs an fsync).
	PersistSim bool
	// Nodes is the size of the simulated cluster: 0 or 1 is the standalone
	// node "pve"; N > 1 are nodes pve1..pveN sharing the storage "shared"
	// (the template 9000 lives on pve1, which the agent is configured with).
	Nodes int
	// LogRequests appends the simulator's request log (JSON lines) to this file.
	LogRequests string
	Speed       float64 // divides the realistic task and boot times; 0 makes everything instant
	// ProvisioningTimeout overrides the default (10m) for tests.
	ProvisioningTimeout time.Duration
	Log                 *slog.Logger
	// Hooks: injected clock and conntrack, loops off (tests).
	Hooks Hooks
	// Configure adjusts the generated configuration before the agent starts.
	Configure func(*config.Config)
	// ConfigureSim adjusts the simulator's options before it starts (tests:
	// storage lock hold and timeout).
	ConfigureSim func(*pvesim.Options)
}

// Dev is agentd running against the embedded Proxmox simulator.
type Dev struct {
	*Agent
	Sim      *pvesim.Sim
	StateDir string
	Config   *config.Config
	profiles profile.Set
	log      *slog.Logger
	hooks    Hooks
	temp     bool
	reqLog   *os.File
}

// Restart stops the agent (in-flight provisioning stays at its persisted step)
// and starts it again on the same state and simulator, re-reading the
// profiles directory, as a service restart does.
func (d *Dev) Restart(ctx context.Context) error {
	d.Stop()
	profiles, err := profile.LoadDir(d.Config.ProfilesDir, d.Config.AgentBridge)
	if err != nil {
		return err
	}
	d.profiles = profiles
	a, err := Start(ctx, d.Config, d.profiles, d.log, d.hooks)
	if err != nil {
		return err
	}
	d.Agent = a
	return nil
}

// StartDev starts the simulator (node pve, storages local, local-lvm,
// local-zfs, template 9000) and an agent using the shipped profiles.
func StartDev(ctx context.Context, o DevOptions) (*Dev, error) {
	if o.Speed < 0 {
		return nil, fmt.Errorf("--speed must be positive (or 0 for instant tasks), got %g", o.Speed)
	}
	d := &Dev{StateDir: o.StateDir}
	if d.StateDir == "" {
		dir, err := os.MkdirTemp("", "agentd-dev-")
		if err != nil {
			return nil, err
		}
		d.StateDir, d.temp = dir, true
	}
	fail := func(err error) (*Dev, error) {
		d.Close()
		return nil, err
	}
	pveLocal := filepath.Join(d.StateDir, "pve", "local")
	simOpts := pvesim.Options{Addr: o.SimAddr, Nodes: pvesim.NodeNames(o.Nodes), Fixtures: true, LocalDir: pveLocal, Now: o.Hooks.Now}
	pveShared := filepath.Join(d.StateDir, "pve", "shared")
	if o.Nodes > 1 {
		// A cluster as agentd expects one: a template on every node (the
		// profiles name them), snippets on the shared storage every node
		// reads.
		simOpts.TemplatePerNode, simOpts.SharedDir = true, pveShared
	}
	if o.PersistSim && !d.temp {
		// The simulated host keeps its VMs across restarts, so a restarted
		// dev instance finds its sandboxes as a restarted agentd on a real
		// host does (a temporary dir is removed on exit: nothing to keep).
		simOpts.StateDir = filepath.Join(d.StateDir, "pve")
	}
	if o.Speed > 0 {
		scale := func(t time.Duration) time.Duration { return time.Duration(float64(t) / o.Speed) }
		rd := pvesim.RealisticDurations()
		simOpts.Durations.Default = scale(rd.Default)
		simOpts.Durations.ByType = map[string]time.Duration{}
		for k, v := range rd.ByType {
			simOpts.Durations.ByType[k] = scale(v)
		}
		simOpts.AgentBootDelay, simOpts.DHCPDelay = scale(20*time.Second), scale(5*time.Second)
		// The storage lock's hold and PVE's 10 s timeout are compressed
		// alike, so that contention fails at the speed it would on a host.
		simOpts.Durations.StorageLock = scale(rd.StorageLock)
		simOpts.StorageLockTimeout = scale(pvesim.DefaultStorageLockTimeout)
	}
	if o.ConfigureSim != nil {
		o.ConfigureSim(&simOpts)
	}
	if o.LogRequests != "" {
		f, err := pvesim.OpenRequestLog(o.LogRequests)
		if err != nil {
			return fail(err)
		}
		d.reqLog, simOpts.RequestLog = f, f
	}
	sim, err := pvesim.New(simOpts)
	if err != nil {
		return fail(err)
	}
	d.Sim = sim
	id, secret := sim.Token()
	cfg := config.Default()
	cfg.File = "agentd dev"
	cfg.StateDir = d.StateDir
	// Unix socket paths are limited to ~100 bytes; keep it short.
	cfg.SocketPath = filepath.Join(d.StateDir, "agentd.sock")
	cfg.Listen = o.Listen
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	cfg.ProfilesDir = filepath.Join(d.StateDir, "profiles")
	cfg.MetricsListen = "127.0.0.1:0"
	// Guests are processes on this machine in dev mode: loopback, and their
	// source address is not the sandbox's.
	cfg.GuestListen, cfg.GuestCheckSourceIP = "127.0.0.1:0", false
	cfg.ManageNftSets = false // never touch this machine's firewall
	cfg.SecretsDir = filepath.Join(d.StateDir, "secrets")
	cfg.SecretsKeyFile = filepath.Join(d.StateDir, "secrets", "age.key")
	cfg.ProxmoxURL, cfg.ProxmoxTokenID, cfg.ProxmoxTokenSecret = sim.URL(), id, secret
	cfg.ProxmoxNode, cfg.ProxmoxCAPEM, cfg.ProxmoxCAFile = sim.Node(), sim.CAPEM(), ""
	cfg.SnippetsDir = filepath.Join(pveLocal, "snippets")
	if o.Nodes > 1 {
		cfg.SnippetsDir, cfg.SnippetsStorage = filepath.Join(pveShared, "snippets"), pvesim.SharedStorageID
		// The agent network spans the simulated nodes as on a real
		// cluster: a VXLAN VNet, set up below as host network apply does.
		cfg.SDN.Zone = "agentlab"
	}
	// Every simulated storage that holds images, so each storage's rules can
	// be tried.
	cfg.WorkspaceStorages = []string{"local-zfs", "local", "local-raw"}
	if o.Nodes > 1 {
		cfg.WorkspaceStorages = append(cfg.WorkspaceStorages, pvesim.SharedStorageID)
	}
	if o.ProvisioningTimeout > 0 {
		cfg.ProvisioningTimeout = o.ProvisioningTimeout
	}
	if o.Speed > 0 {
		cfg.ShutdownTimeout = time.Duration(float64(30*time.Second) / o.Speed)
	} else {
		cfg.ShutdownTimeout = 5 * time.Second
	}
	// No host firewall tracking here: SSH activity is unknowable, so idle stop
	// must not act unless a test injects a conntrack listing.
	if o.Configure != nil {
		o.Configure(cfg)
	}
	if err := cfg.Validate(); err != nil {
		return fail(err)
	}
	d.Config = cfg
	if o.Hooks.Conntrack == nil && cfg.IdleStopEnabled {
		// There is no conntrack table of simulated guests' SSH sessions:
		// say so once instead of an idle_stop error every minute.
		o.Hooks.IdleStopOff = "off in agentd dev: SSH sessions to simulated sandboxes cannot be seen (no conntrack), so idle stop stops nothing"
		if o.Log != nil {
			o.Log.Info("idle stop is off in agentd dev: SSH sessions to simulated sandboxes cannot be seen (no conntrack); tests inject a conntrack listing")
		}
	}
	d.hooks = o.Hooks
	if cfg.SDN.Enabled() {
		pc, err := ProxmoxClient(cfg, nil)
		if err != nil {
			return fail(err)
		}
		if _, _, err := EnsureSDN(ctx, cfg, pc, false); err != nil {
			return fail(fmt.Errorf("agentd dev: set up the SDN VNet %s: %w", cfg.SDN.VNet, err))
		}
	}
	profiles, err := devProfiles(cfg.ProfilesDir, cfg.AgentBridge, simOpts.Nodes)
	if err != nil {
		return fail(err)
	}
	d.profiles, d.log = profiles, o.Log
	a, err := Start(ctx, cfg, profiles, o.Log, o.Hooks)
	if err != nil {
		return fail(err)
	}
	d.Agent = a
	return d, nil
}

// devProfiles writes the shipped profiles into the state dir on first use (so
// a developer can edit them there) and loads that directory.
func devProfiles(dir, bridge string, nodes []string) (profile.Set, error) {
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		ents, _ := profile.Defaults.ReadDir("defaults")
		for _, e := range ents {
			b, err := profile.Defaults.ReadFile("defaults/" + e.Name())
			if err != nil {
				return nil, err
			}
			if len(nodes) > 1 { // the simulator's per-node template copies
				b = append(bytes.TrimRight(b, "\n"), "\n# The template's copy on every further node of the simulated cluster.\ntemplates:\n"...)
				for i, n := range nodes[1:] {
					b = fmt.Appendf(b, "  %s: %d\n", n, pvesim.FixtureTemplateID+i+1)
				}
			}
			if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
				return nil, err
			}
		}
	}
	return profile.LoadDir(dir, bridge)
}

// Env is what `agentd dev` prints: the variables the CLI and the provider read.
func (d *Dev) Env() []string {
	id, secret := d.Sim.Token()
	return []string{
		"AGENTLAB_ENDPOINT=" + d.Info.Endpoint,
		"AGENTLAB_TOKEN=" + d.Info.Token,
		"AGENTLAB_CA_CERT=" + d.Info.CACert,
		"PVE_URL=" + d.Sim.URL(),
		"PVE_TOKEN=" + id + "=" + secret,
		"PVE_NODE=" + d.Sim.Node(),
	}
}

// Stop stops the agent and leaves the simulator running, as `systemctl stop
// agentd` does on a host; Restart starts it again.
func (d *Dev) Stop() {
	if d.Agent != nil {
		d.Agent.Close()
		d.Agent = nil
	}
}

// Close stops the agent and the simulator and removes a temporary state dir.
func (d *Dev) Close() {
	if d.Agent != nil {
		d.Agent.Close()
	}
	if d.Sim != nil {
		_ = d.Sim.Close()
	}
	if d.reqLog != nil {
		_ = d.reqLog.Close()
	}
	if d.temp {
		_ = os.RemoveAll(d.StateDir)
	}
}
