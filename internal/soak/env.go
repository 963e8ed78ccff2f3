package soak

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// Env is agentd sim and agentd serve running as separate processes on one
// state directory, the way they run on a host: serve can be killed with
// SIGKILL and started again on the same database while sim keeps the truth.
type Env struct {
	Dir      string
	Bin      string
	Config   string // agentd config file
	PVEURL   string
	TokenID  string
	Secret   string
	CAPEM    []byte
	Client   *client.Client // agentd API over the Unix socket
	Sim      *SimClient     // /_sim/ hooks
	PVE      *pve.Client    // the Proxmox API, for checks
	ProvTime time.Duration  // provisioning_timeout of the agent
	Log      io.Writer      // agentd serve's stderr
	// Nodes are the simulated cluster's nodes, first (agentd's
	// proxmox_node, the simulator's default node for hooks) first; one
	// node, "pve", for a standalone host.
	Nodes []string

	sim     *exec.Cmd
	mu      sync.Mutex
	serve   *exec.Cmd
	done    chan struct{} // closed when the current serve exits
	starts  int
	ownLog  bool
	simDone chan struct{} // closed when agentd sim exits
}

// SimExited reports, once the simulator process has died, how (the end of its
// stderr: a panic of the simulator is a harness finding, not agentd's).
func (e *Env) SimExited() error {
	select {
	case <-e.simDone:
	default:
		return nil
	}
	b, _ := os.ReadFile(filepath.Join(e.Dir, "sim.log"))
	if len(b) > 4000 {
		b = b[:4000]
	}
	return fmt.Errorf("agentd sim exited (%s): %s", e.sim.ProcessState, b)
}

// EnvOptions tunes an Env.
type EnvOptions struct {
	Bin                 string        // agentd binary; built when empty
	Speed               float64       // agentd sim --speed (realistic durations divided by this)
	ProvisioningTimeout time.Duration // agentd's provisioning_timeout
	Log                 io.Writer     // where serve's stderr goes (nil: a file in Dir)
	// Nodes > 1 runs agentd sim --nodes N: a cluster pve1..pveN with a
	// template on every node and the snippets on the shared storage.
	Nodes int
}

// BuildAgentd compiles agentd into dir (go build, so the harness always runs
// the code under test, never a stale binary).
func BuildAgentd(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "agentd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/agentlab/terraform-provider-agentlab/agentd")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build agentd: %w\n%s", err, out)
	}
	return bin, nil
}

// StartEnv starts agentd sim, writes an agentd configuration for it and
// starts agentd serve. dir must be short: Unix socket paths are limited.
func StartEnv(ctx context.Context, dir string, o EnvOptions) (*Env, error) {
	if o.Speed <= 0 {
		o.Speed = 20
	}
	if o.ProvisioningTimeout <= 0 {
		o.ProvisioningTimeout = 20 * time.Second
	}
	e := &Env{Dir: dir, Bin: o.Bin, ProvTime: o.ProvisioningTimeout, Log: o.Log}
	if e.Bin == "" {
		bin, err := BuildAgentd(ctx, dir)
		if err != nil {
			return nil, err
		}
		e.Bin = bin
	}
	if e.Log == nil {
		f, err := os.Create(filepath.Join(dir, "agentd.log"))
		if err != nil {
			return nil, fmt.Errorf("agentd log: %w", err)
		}
		e.Log, e.ownLog = f, true
	}
	if err := e.startSim(o.Speed, o.Nodes); err != nil {
		return nil, err
	}
	if err := e.writeConfig(); err != nil {
		e.Close()
		return nil, err
	}
	var err error
	e.Client, err = client.New(client.Config{Endpoint: "unix://" + filepath.Join(dir, "agentd.sock"), Timeout: 2 * time.Minute})
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("agentd client: %w", err)
	}
	if err := e.StartServe(ctx); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

func (e *Env) startSim(speed float64, nodes int) error {
	args := []string{"sim", "--addr", "127.0.0.1:0", "--realistic", "--speed", fmt.Sprint(speed),
		"--ca-file", filepath.Join(e.Dir, "pve.pem"), "--local-dir", filepath.Join(e.Dir, "pve-local"),
		// What Proxmox was asked and answered, for tracing a violation to
		// its requests (kept with -keep, like the logs).
		"--log-requests", filepath.Join(e.Dir, "requests.jsonl")}
	e.Nodes = []string{"pve"}
	if nodes > 1 {
		// A cluster as agentd dev --nodes builds one: a template copy on
		// every node (a linked clone needs it on the node's storage) and
		// the snippets on the shared storage every node reads.
		args = append(args, "--nodes", fmt.Sprint(nodes), "--template-per-node", "--shared-dir", filepath.Join(e.Dir, "pve-shared"))
		e.Nodes = pvesim.NodeNames(nodes)
	}
	cmd := exec.Command(e.Bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("agentd sim: %w", err)
	}
	simLog, err := os.Create(filepath.Join(e.Dir, "sim.log"))
	if err != nil {
		return fmt.Errorf("sim log: %w", err)
	}
	cmd.Stderr = simLog
	if err := cmd.Start(); err != nil {
		simLog.Close()
		return fmt.Errorf("start agentd sim: %w", err)
	}
	e.sim, e.simDone = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); simLog.Close(); close(e.simDone) }()
	env := map[string]string{}
	sc := bufio.NewScanner(out)
	for len(env) < 6 && sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		env[k] = v
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	tok := env["PVE_TOKEN"]
	i := strings.LastIndex(tok, "=")
	if i < 0 || env["PVE_URL"] == "" {
		e.Close()
		return fmt.Errorf("agentd sim printed no PVE_URL/PVE_TOKEN (got %v)", env)
	}
	e.PVEURL, e.TokenID, e.Secret = env["PVE_URL"], tok[:i], tok[i+1:]
	if e.CAPEM, err = os.ReadFile(filepath.Join(e.Dir, "pve.pem")); err != nil {
		e.Close()
		return fmt.Errorf("simulator certificate: %w", err)
	}
	if e.Sim, err = newSimClient(e.PVEURL, e.TokenID, e.Secret, e.CAPEM); err != nil {
		e.Close()
		return err
	}
	if env["PVE_NODE"] != e.Nodes[0] {
		e.Close()
		return fmt.Errorf("agentd sim runs node %q, the harness expected %q", env["PVE_NODE"], e.Nodes[0])
	}
	if e.PVE, err = pve.New(pve.Config{URL: e.PVEURL, TokenID: e.TokenID, Secret: e.Secret, Node: e.Nodes[0], CAPEM: e.CAPEM}); err != nil {
		e.Close()
		return fmt.Errorf("proxmox client: %w", err)
	}
	return nil
}

func (e *Env) writeConfig() error {
	d := e.Dir
	profiles := filepath.Join(d, "profiles")
	if err := os.MkdirAll(profiles, 0o755); err != nil {
		return err
	}
	ents, err := profile.Defaults.ReadDir("defaults")
	if err != nil {
		return err
	}
	for _, ent := range ents {
		b, err := profile.Defaults.ReadFile("defaults/" + ent.Name())
		if err != nil {
			return err
		}
		if len(e.Nodes) > 1 {
			b = clusterProfile(b, e.Nodes)
		}
		if err := os.WriteFile(filepath.Join(profiles, ent.Name()), b, 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(d, "secret"), []byte(e.Secret+"\n"), 0o600); err != nil {
		return err
	}
	e.Config = filepath.Join(d, "config.yaml")
	snippetsStorage := "local"
	if len(e.Nodes) > 1 {
		snippetsStorage = pvesim.SharedStorageID
	}
	// Short timeouts keep a run bounded; idle stop is off so that the only
	// stops are the harness's own (its ops are the experiment).
	cfg := fmt.Sprintf(`state_dir: %[1]s/state
socket_path: %[1]s/agentd.sock
profiles_dir: %[2]s
proxmox_url: %[3]s
proxmox_token_id: %[4]s
proxmox_token_secret_file: %[1]s/secret
proxmox_node: %[6]s
proxmox_ca_file: %[1]s/pve.pem
proxmox_command_timeout: 10s
proxmox_task_timeout: 20s
snippets_dir: %[7]s
snippets_storage: %[8]s
provisioning_timeout: %[5]s
shutdown_timeout: 1s
reconcile_interval: 3s
lease_gc_interval: 2s
pool_interval: 2s
idle_stop_enabled: false
guest_listen: 127.0.0.1:0
guest_check_source_ip: false
manage_nft_sets: false
metrics_listen: ""
secrets_dir: %[1]s/secrets
secrets_key_file: %[1]s/secrets/age.key
`, d, profiles, e.PVEURL, e.TokenID, e.ProvTime, e.Nodes[0], e.SnippetsDir(), snippetsStorage)
	return os.WriteFile(e.Config, []byte(cfg), 0o600)
}

// SnippetsDir is the directory behind agentd's snippets storage.
func (e *Env) SnippetsDir() string {
	if len(e.Nodes) > 1 {
		return filepath.Join(e.Dir, "pve-shared", "snippets")
	}
	return filepath.Join(e.Dir, "pve-local", "snippets")
}

// clusterProfile adapts a shipped profile to the simulated cluster: the
// template's copy on every further node (VMID 9000+i, as agentd sim
// --template-per-node makes them), and for yolo-ephemeral on_node_lost:
// recreate, so a node going offline exercises both the LOST sandbox that
// waits for its node and the one replaced elsewhere.
func clusterProfile(b []byte, nodes []string) []byte {
	s := strings.TrimRight(string(b), "\n") + "\n"
	if strings.Contains(s, "\nname: yolo-ephemeral\n") {
		s = strings.Replace(s, "\nbehavior:\n", "\nbehavior:\n  on_node_lost: recreate\n", 1)
	}
	s += "templates:\n"
	for i, n := range nodes[1:] {
		s += fmt.Sprintf("  %s: %d\n", n, pvesim.FixtureTemplateID+i+1)
	}
	return []byte(s)
}

// StartServe starts agentd serve and waits until its API answers.
func (e *Env) StartServe(ctx context.Context) error {
	e.mu.Lock()
	cmd := exec.Command(e.Bin, "serve", "--config", e.Config)
	cmd.Stderr = e.Log
	cmd.Stdout = e.Log
	if err := cmd.Start(); err != nil {
		e.mu.Unlock()
		return fmt.Errorf("start agentd serve: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	e.serve, e.done = cmd, done
	e.starts++
	e.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := e.Client.Status(cctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("agentd serve exited during start (see %s)", filepath.Join(e.Dir, "agentd.log"))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agentd serve did not answer within 30s: %w", err)
		}
	}
}

// WaitServing waits until the current agentd serve has logged that it
// finished starting (its startup resume done). The API answers earlier than
// that; the soak does not wait, tests that need a quiet start do.
func (e *Env) WaitServing(ctx context.Context) error {
	e.mu.Lock()
	want := e.starts
	e.mu.Unlock()
	for {
		b, err := os.ReadFile(filepath.Join(e.Dir, "agentd.log"))
		if err != nil {
			return fmt.Errorf("agentd log: %w", err)
		}
		if strings.Count(string(b), `msg="agentd serving"`) >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Kill sends SIGKILL to agentd serve (no chance to clean up) and reaps it.
func (e *Env) Kill() error { return e.stopServe(syscall.SIGKILL, 5*time.Second) }

// Stop sends SIGTERM and waits for a clean exit.
func (e *Env) Stop() error { return e.stopServe(syscall.SIGTERM, 30*time.Second) }

func (e *Env) stopServe(sig syscall.Signal, wait time.Duration) error {
	e.mu.Lock()
	cmd, done := e.serve, e.done
	e.serve = nil
	e.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal agentd serve: %w", err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(wait):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("agentd serve did not exit within %s of %s", wait, sig)
	}
}

// Close stops both processes. The directory is the caller's.
func (e *Env) Close() {
	_ = e.Kill()
	if e.sim != nil && e.sim.Process != nil {
		_ = e.sim.Process.Kill()
		<-e.simDone
	}
	if c, ok := e.Log.(io.Closer); ok && e.ownLog {
		_ = c.Close()
	}
}
