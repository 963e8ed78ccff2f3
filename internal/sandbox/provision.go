package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/netpolicy"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/token"
)

// Provisioning steps, persisted in the row so an interrupted run resumes.
const (
	stepAllocate = "allocate_vmid"
	stepClone    = "clone"
	stepConfig   = "configure"
	stepResize   = "resize_disk"
	stepStart    = "start"
	stepWaitIP   = "wait_for_ip"
	// stepRestart marks the start of an existing (STOPPED) sandbox: a failure
	// there stops the VM again instead of destroying it.
	stepRestart = "restart"
)

// maxAllocAttempts bounds retries when another client takes our VMID.
const maxAllocAttempts = 5

// stepError is a failure of one step.
type stepError struct {
	step string
	err  error
}

func (e *stepError) Error() string { return fmt.Sprintf("%s: %v", e.step, e.err) }
func (e *stepError) Unwrap() error { return e.err }

// run drives one sandbox from its current state to RUNNING, or to FAILED with
// the VM cleaned up. The per-sandbox lock is held throughout, so API calls on
// the sandbox wait (destroy --force cancels the run first).
func (m *Manager) run(ctx context.Context, id string) {
	unlock := m.locks.Lock(id)
	defer unlock()
	sb, err := m.store.Sandbox(ctx, id)
	if err != nil {
		return
	}
	if !sb.State.InFlight() && sb.State != api.StateStopped {
		return
	}
	deadline := sb.CreatedAt.Add(m.opts.ProvisioningTimeout)
	if sb.State == api.StateBooting || sb.State == api.StateStopped {
		deadline = m.now().Add(m.opts.ProvisioningTimeout)
	}
	pctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	err = m.provision(pctx, sb)
	if err == nil {
		return
	}
	if m.ctx.Err() != nil {
		// agentd is shutting down: leave the row at its step for Resume.
		return
	}
	m.fail(sb, err)
}

func (m *Manager) save(ctx context.Context, sb *store.Sandbox, to api.State, kind, msg string) error {
	from := sb.State
	sb.State = to
	if err := m.store.Save(ctx, sb, from, store.Event{Kind: kind, Message: msg}); err != nil {
		sb.State = from
		return err
	}
	m.opts.Metrics.Transition(string(from), string(to))
	m.syncAddress(sb)
	attrs := []any{"sandbox_id", sb.ID, "sandbox", sb.Name, "from", string(from), "to", string(to), "reason", msg}
	if sb.VMID != 0 {
		attrs = append(attrs, "vmid", sb.VMID)
	}
	m.opts.Log.Info("sandbox "+kind, attrs...)
	return nil
}

// syncAddress keeps the host's mode sets in step with the sandbox's address:
// in while RUNNING with an address, out otherwise.
func (m *Manager) syncAddress(sb *store.Sandbox) {
	if m.opts.Addresses == nil {
		return
	}
	want := ""
	if sb.State == api.StateRunning {
		want = sb.IP
	}
	m.addrMu.Lock()
	have := m.addrs[sb.ID]
	if want == have {
		m.addrMu.Unlock()
		return
	}
	if want == "" {
		delete(m.addrs, sb.ID)
	} else {
		m.addrs[sb.ID] = want
	}
	m.addrMu.Unlock()
	mode := netpolicy.Mode(m.profiles[sb.Profile])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if a, err := netip.ParseAddr(have); err == nil {
		if err := m.opts.Addresses.Remove(ctx, a, mode); err != nil {
			m.opts.Log.Warn("remove sandbox address from the mode set", "sandbox_id", sb.ID, "ip", have, "err", err)
		}
	}
	if a, err := netip.ParseAddr(want); err == nil {
		if err := m.opts.Addresses.Add(ctx, a, mode); err != nil {
			m.opts.Log.Warn("add sandbox address to the mode set", "sandbox_id", sb.ID, "ip", want, "err", err)
		}
	}
}

// timed runs one provisioning step and records its duration.
func (m *Manager) timed(step string, fn func() error) error {
	start := time.Now()
	err := fn()
	if err == nil {
		m.opts.Metrics.Step(step, time.Since(start))
	}
	return err
}

func (m *Manager) progress(ctx context.Context, sb *store.Sandbox, step, msg string) error {
	sb.Step = step
	if msg == "" {
		return m.store.Save(ctx, sb, sb.State, store.Event{})
	}
	return m.store.Save(ctx, sb, sb.State, store.Event{Kind: "sandbox.step", Message: msg})
}

func (m *Manager) provision(ctx context.Context, sb *store.Sandbox) error {
	p := m.profiles[sb.Profile]
	if p == nil {
		return &stepError{step: sb.Step, err: fmt.Errorf("profile %s is no longer loaded", sb.Profile)}
	}
	if sb.State == api.StateRequested {
		if err := m.save(ctx, sb, api.StateProvisioning, "sandbox.state", "provisioning started"); err != nil {
			return &stepError{step: stepAllocate, err: err}
		}
	}
	if sb.State == api.StateProvisioning {
		var err error
		for attempt := 1; ; attempt++ {
			if sb.VMID == 0 {
				if err = m.allocate(ctx, sb); err != nil {
					return &stepError{step: stepAllocate, err: err}
				}
			}
			err = m.timed(stepClone, func() error { return m.clone(ctx, sb, p) })
			if !errors.Is(err, pve.ErrExists) || attempt == maxAllocAttempts {
				break
			}
			// Someone else created a VM with our VMID between nextid and clone.
			_ = m.store.AddEvent(ctx, sb, store.Event{Kind: "sandbox.vmid_taken",
				Message: fmt.Sprintf("VMID %d was taken by another client; allocating another", sb.VMID)})
			sb.VMID = 0
			if err := m.progress(ctx, sb, stepAllocate, ""); err != nil {
				return &stepError{step: stepAllocate, err: err}
			}
		}
		if err != nil {
			return &stepError{step: stepClone, err: err}
		}
		if err := m.timed(stepConfig, func() error { return m.configure(ctx, sb, p) }); err != nil {
			return &stepError{step: stepConfig, err: err}
		}
		if err := m.timed(stepResize, func() error { return m.resize(ctx, sb, p) }); err != nil {
			return &stepError{step: stepResize, err: err}
		}
		sb.Step = stepStart
		if err := m.save(ctx, sb, api.StateBooting, "sandbox.state", "VM configured; starting"); err != nil {
			return &stepError{step: stepStart, err: err}
		}
	}
	if sb.State == api.StateStopped {
		sb.Step = stepRestart
		if err := m.save(ctx, sb, api.StateBooting, "sandbox.state", "starting"); err != nil {
			return &stepError{step: stepRestart, err: err}
		}
	}
	if sb.State == api.StateBooting {
		st, err := m.pve.Status(ctx, sb.VMID)
		if err != nil {
			return &stepError{step: stepStart, err: err}
		}
		if st.Status != "running" {
			err := m.timed(stepStart, func() error { return m.pve.Start(ctx, sb.VMID) })
			if err != nil && !errors.Is(err, pve.ErrRunning) {
				return &stepError{step: stepStart, err: err}
			}
		}
		step := stepWaitIP
		if sb.Step == stepRestart {
			step = stepRestart
		}
		if err := m.progress(ctx, sb, step, fmt.Sprintf("VM %d started; waiting for the guest agent to report an address", sb.VMID)); err != nil {
			return &stepError{step: stepWaitIP, err: err}
		}
		var ip string
		err = m.timed(stepWaitIP, func() (err error) { ip, err = m.waitIP(ctx, sb); return err })
		if err != nil {
			return &stepError{step: stepWaitIP, err: err}
		}
		sb.IP, sb.Step = ip, ""
		if err := m.save(ctx, sb, api.StateReady, "sandbox.state", "guest reported "+ip); err != nil {
			return &stepError{step: stepWaitIP, err: err}
		}
	}
	if sb.State == api.StateReady {
		now := m.now()
		sb.LeaseExpiresAt = nil
		if sb.TTLSeconds > 0 {
			exp := now.Add(time.Duration(sb.TTLSeconds) * time.Second).UTC()
			sb.LeaseExpiresAt = &exp
		}
		sb.Error = ""
		if err := m.save(ctx, sb, api.StateRunning, "sandbox.state", "running"); err != nil {
			return &stepError{step: "running", err: err}
		}
	}
	return nil
}

// allocate reserves a VMID and records it in the row before anything is
// created, so a crash never leaves a VM agentd cannot find again.
func (m *Manager) allocate(ctx context.Context, sb *store.Sandbox) error {
	start := time.Now()
	defer func() { m.opts.Metrics.Step(stepAllocate, time.Since(start)) }()
	_, err := m.alloc.Reserve(ctx, func(id int) error {
		sb.VMID, sb.Step = id, stepClone
		err := m.store.Save(ctx, sb, sb.State, store.Event{Kind: "sandbox.step", Message: fmt.Sprintf("reserved VMID %d", id)})
		if err != nil {
			sb.VMID, sb.Step = 0, stepAllocate
		}
		return err
	})
	return err
}

func description(sb *store.Sandbox) string {
	return fmt.Sprintf("Managed by AgentLab agentd; do not edit or remove these lines.\nagentlab-sandbox-id: %s\nagentlab-sandbox-name: %s\n", sb.ID, sb.Name)
}

// marker is the line that proves a VM belongs to a sandbox row.
func marker(sb *store.Sandbox) string { return "agentlab-sandbox-id: " + sb.ID }

func (m *Manager) clone(ctx context.Context, sb *store.Sandbox, p *profile.Profile) error {
	// A resumed run may find its clone done (or still running under lock=clone).
	cfg, err := m.pve.Config(ctx, sb.VMID)
	switch {
	case err == nil:
		desc, _ := cfg["description"].(string)
		if !strings.Contains(desc, marker(sb)) {
			return &pve.Error{Op: fmt.Sprintf("clone to VM %d", sb.VMID), Msg: "VM already exists and is not this sandbox's", Kind: pve.ErrExists}
		}
		return m.waitUnlocked(ctx, sb.VMID)
	case !errors.Is(err, pve.ErrNotFound):
		return err
	}
	err = m.pve.Clone(ctx, p.TemplateVMID, sb.VMID, pve.CloneOptions{Name: sb.Name, Description: description(sb),
		Full: p.Storage.Clone == "full", Storage: p.Storage.Storage})
	if errors.Is(err, pve.ErrUnsupported) && p.Storage.Clone != "full" {
		return fmt.Errorf("%w (a linked clone needs a template (qm template %d) on lvmthin, zfspool or dir storage; or set storage.clone: full in profile %s)", err, p.TemplateVMID, p.Name)
	}
	if errors.Is(err, pve.ErrNotFound) {
		return fmt.Errorf("%w (template VM %d of profile %s does not exist on node %s)", err, p.TemplateVMID, p.Name, m.opts.Node)
	}
	if err != nil {
		return err
	}
	return m.progress(ctx, sb, stepConfig, fmt.Sprintf("cloned template %d to VM %d (%s clone)", p.TemplateVMID, sb.VMID, p.Storage.Clone))
}

// waitUnlocked waits for a clone still in progress (lock=clone) to finish.
func (m *Manager) waitUnlocked(ctx context.Context, vmid int) error {
	for {
		st, err := m.pve.Status(ctx, vmid)
		if err != nil {
			return err
		}
		if st.Lock == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("VM %d still locked (%s): %w", vmid, st.Lock, ctx.Err())
		case <-time.After(m.opts.IPPoll):
		}
	}
}

func (m *Manager) snippetName(sb *store.Sandbox) string { return "agentlab-" + sb.ID + ".yaml" }

type cloudUser struct {
	Name       string   `yaml:"name"`
	Sudo       string   `yaml:"sudo"`
	Shell      string   `yaml:"shell"`
	LockPasswd bool     `yaml:"lock_passwd"`
	SSHKeys    []string `yaml:"ssh_authorized_keys,omitempty"`
}

type cloudFile struct {
	Path        string `yaml:"path"`
	Permissions string `yaml:"permissions"`
	Owner       string `yaml:"owner"`
	Content     string `yaml:"content"`
}

// Bootstrap is what the guest finds in /etc/agentlab/bootstrap.json.
type Bootstrap struct {
	URL       string `json:"url"`
	Token     string `json:"token"`
	SandboxID string `json:"sandbox_id"`
}

// BootstrapPath is where cloud-init writes the bootstrap file in the guest.
const BootstrapPath = "/etc/agentlab/bootstrap.json"

type cloudConfig struct {
	Hostname        string      `yaml:"hostname"`
	ManageEtcHosts  bool        `yaml:"manage_etc_hosts"`
	SSHPasswordAuth bool        `yaml:"ssh_pwauth"`
	Users           []cloudUser `yaml:"users"`
	Growpart        struct {
		Mode    string   `yaml:"mode"`
		Devices []string `yaml:"devices"`
	} `yaml:"growpart"`
	ResizeRootfs bool        `yaml:"resize_rootfs"`
	WriteFiles   []cloudFile `yaml:"write_files,omitempty"`
}

// writeSnippet writes the cloud-init user-data that replaces Proxmox's own
// (cicustom user=…), atomically, readable only by root.
func (m *Manager) writeSnippet(sb *store.Sandbox) error {
	cc := cloudConfig{Hostname: sb.Name, ManageEtcHosts: true, ResizeRootfs: true,
		Users: []cloudUser{{Name: "agent", Sudo: "ALL=(ALL) NOPASSWD:ALL", Shell: "/bin/bash", LockPasswd: true, SSHKeys: m.opts.SSHPublicKeys}}}
	cc.Growpart.Mode, cc.Growpart.Devices = "auto", []string{"/"}
	if m.opts.GuestURL != "" {
		// A fresh single-use token per snippet: only its hash is stored, and
		// one written earlier (a retried step) stops working.
		raw, hash := token.New()
		if err := m.store.DeleteTokens(context.Background(), sb.ID, store.TokenBootstrap); err != nil {
			return err
		}
		if err := m.store.CreateToken(context.Background(), &store.Token{Hash: hash, Kind: store.TokenBootstrap, SandboxID: sb.ID,
			ExpiresAt: m.now().Add(m.opts.BootstrapTTL)}); err != nil {
			return err
		}
		bj, _ := json.Marshal(Bootstrap{URL: m.opts.GuestURL, Token: raw, SandboxID: sb.ID})
		cc.WriteFiles = append(cc.WriteFiles, cloudFile{Path: BootstrapPath, Permissions: "0600", Owner: "root:root", Content: string(bj)})
	}
	body, err := yaml.Marshal(cc)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(m.opts.SnippetsDir, 0o755); err != nil {
		return fmt.Errorf("snippets_dir: %w", err)
	}
	path := filepath.Join(m.opts.SnippetsDir, m.snippetName(sb))
	tmp, err := os.CreateTemp(m.opts.SnippetsDir, ".agentlab-*.tmp")
	if err != nil {
		return fmt.Errorf("write cloud-init snippet: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append([]byte("#cloud-config\n"), body...)); err != nil {
		tmp.Close()
		return fmt.Errorf("write cloud-init snippet: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func (m *Manager) removeSnippet(sb *store.Sandbox) {
	_ = os.Remove(filepath.Join(m.opts.SnippetsDir, m.snippetName(sb)))
}

func (m *Manager) configure(ctx context.Context, sb *store.Sandbox, p *profile.Profile) error {
	if sb.Step != stepConfig {
		return nil
	}
	if err := m.writeSnippet(sb); err != nil {
		return err
	}
	tags := append([]string{OwnerTag}, sb.Tags...)
	opts := []pve.Option{
		{Name: "tags", Value: strings.Join(tags, ";")},
		{Name: "cores", Value: p.Resources.Cores},
		{Name: "memory", Value: strconv.Itoa(p.Resources.MemoryMB)},
		{Name: "net0", Value: fmt.Sprintf("%s,bridge=%s,firewall=1", p.Network.Model, p.Network.Bridge)},
		{Name: "ipconfig0", Value: "ip=dhcp"},
		{Name: "cicustom", Value: fmt.Sprintf("user=%s:snippets/%s", m.opts.SnippetsStorage, m.snippetName(sb))},
		{Name: "agent", Value: "enabled=1"},
		{Name: "onboot", Value: 0},
	}
	if p.Resources.Balloon > 0 {
		opts = append(opts, pve.Option{Name: "balloon", Value: p.Resources.Balloon})
	}
	if w, err := m.store.WorkspaceBySandbox(ctx, sb.ID); err == nil {
		// Referenced, not owned: the holder keeps the volume whatever happens here.
		vol, err := m.ws.Volume(ctx, w)
		if err != nil {
			return fmt.Errorf("workspace %s: %w", w.Name, err)
		}
		opts = append(opts, pve.Option{Name: w.AttachKey, Value: vol})
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err := m.pve.Configure(ctx, sb.VMID, opts...); err != nil {
		return err
	}
	if m.opts.FirewallGroup != nil {
		if err := m.pve.VMFirewall(ctx, sb.VMID, m.opts.FirewallGroup(p)); err != nil {
			return err
		}
	}
	return m.progress(ctx, sb, stepResize, fmt.Sprintf("configured VM %d: %d cores, %d MiB, %s on %s", sb.VMID,
		p.Resources.Cores, p.Resources.MemoryMB, p.Network.Model, p.Network.Bridge))
}

var sizeRE = regexp.MustCompile(`(?:^|,)size=(\d+)([KMGT]?)`)

// bootDisk finds the root disk key: the first disk of boot order=, else the
// first of scsi0/virtio0/sata0/ide0.
func bootDisk(cfg map[string]any) string {
	if b, _ := cfg["boot"].(string); strings.Contains(b, "order=") {
		order := strings.SplitN(strings.SplitN(b, "order=", 2)[1], ",", 2)[0]
		for _, k := range strings.Split(order, ";") {
			if v, _ := cfg[k].(string); v != "" && !strings.Contains(v, "media=cdrom") {
				return k
			}
		}
	}
	for _, k := range []string{"scsi0", "virtio0", "sata0", "ide0"} {
		if _, ok := cfg[k]; ok {
			return k
		}
	}
	return ""
}

func sizeGB(drive string) int {
	mm := sizeRE.FindStringSubmatch(drive)
	if mm == nil {
		return 0
	}
	n, _ := strconv.Atoi(mm[1])
	switch mm[2] {
	case "T":
		return n * 1024
	case "G":
		return n
	case "M":
		return n / 1024
	case "K":
		return n / (1024 * 1024)
	}
	return n / (1024 * 1024 * 1024)
}

func (m *Manager) resize(ctx context.Context, sb *store.Sandbox, p *profile.Profile) error {
	if sb.Step != stepResize {
		return nil
	}
	if p.Storage.RootSizeGB > 0 {
		cfg, err := m.pve.Config(ctx, sb.VMID)
		if err != nil {
			return err
		}
		disk := bootDisk(cfg)
		if disk == "" {
			return fmt.Errorf("VM %d has no boot disk to grow (template %d needs scsi0, virtio0, sata0 or ide0)", sb.VMID, p.TemplateVMID)
		}
		cur := sizeGB(cfg[disk].(string))
		if cur > p.Storage.RootSizeGB {
			return fmt.Errorf("template disk %s is %d GiB, larger than root_size_gb %d of profile %s (disks cannot shrink)", disk, cur, p.Storage.RootSizeGB, p.Name)
		}
		if cur < p.Storage.RootSizeGB {
			if err := m.pve.Resize(ctx, sb.VMID, disk, fmt.Sprintf("%dG", p.Storage.RootSizeGB)); err != nil {
				return err
			}
			return m.progress(ctx, sb, stepStart, fmt.Sprintf("grew %s to %d GiB", disk, p.Storage.RootSizeGB))
		}
	}
	return m.progress(ctx, sb, stepStart, "")
}

var macRE = regexp.MustCompile(`(?i)=([0-9a-f]{2}(?::[0-9a-f]{2}){5})`)

func (m *Manager) waitIP(ctx context.Context, sb *store.Sandbox) (string, error) {
	cfg, err := m.pve.Config(ctx, sb.VMID)
	if err != nil {
		return "", err
	}
	mac := ""
	if net0, _ := cfg["net0"].(string); net0 != "" {
		if mm := macRE.FindStringSubmatch(net0); mm != nil {
			mac = mm[1]
		}
	}
	ip, err := m.pve.WaitGuestIP(ctx, sb.VMID, mac, m.opts.IPPoll)
	if errors.Is(err, pve.ErrTimeout) || ctx.Err() != nil {
		return "", fmt.Errorf("the guest agent of VM %d reported no IPv4 address within the provisioning timeout (%s); check that qemu-guest-agent runs in the template and DHCP serves %s: %w",
			sb.VMID, m.opts.ProvisioningTimeout, m.profiles[sb.Profile].Network.Bridge, err)
	}
	if errors.Is(err, pve.ErrAgentNotConfigured) {
		return "", fmt.Errorf("%w (enable the guest agent on the template: qm set <template> --agent enabled=1)", err)
	}
	return ip, err
}

// fail records the failure and removes everything provisioning created. The
// row ends FAILED with the cause; if cleanup itself fails, the error says so
// and the VM stays owned (tag + description) for prune to retry.
func (m *Manager) fail(sb *store.Sandbox, cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Re-read: the row may have moved (e.g. a concurrent destroy already won).
	cur, err := m.store.Sandbox(ctx, sb.ID)
	if err != nil || !cur.State.InFlight() {
		return
	}
	msg := cause.Error()
	if cur.Step == stepRestart {
		// The sandbox existed before this start: keep its VM, power it off.
		if serr := m.pve.Stop(ctx, cur.VMID); serr != nil && !errors.Is(serr, pve.ErrNotFound) {
			msg += fmt.Sprintf("; stopping VM %d again failed: %v", cur.VMID, serr)
		}
		cur.Error, cur.IP, cur.Step = "start failed: "+msg, "", ""
		if err := m.save(ctx, cur, api.StateStopped, "sandbox.start_failed", msg); err != nil {
			_ = m.store.AddEvent(ctx, cur, store.Event{Kind: "sandbox.error", Message: "could not record failure: " + err.Error()})
		}
		return
	}
	if cerr := m.removeVM(ctx, cur, true); cerr != nil {
		msg += fmt.Sprintf("; cleanup of VM %d failed (prune will retry): %v", cur.VMID, cerr)
	} else if cur.VMID != 0 {
		msg += fmt.Sprintf(" (VM %d removed)", cur.VMID)
		cur.VMID = 0
	}
	cur.Error, cur.IP = msg, ""
	attrs := []any{"sandbox_id", cur.ID, "sandbox", cur.Name, "err", cause}
	var pe *pve.Error
	if errors.As(cause, &pe) && pe.UPID != "" {
		attrs = append(attrs, "upid", pe.UPID)
	}
	m.opts.Log.Warn("provisioning failed", attrs...)
	if err := m.save(ctx, cur, api.StateFailed, "sandbox.failed", msg); err != nil {
		_ = m.store.AddEvent(ctx, cur, store.Event{Kind: "sandbox.error", Message: "could not record failure: " + err.Error()})
	}
}
