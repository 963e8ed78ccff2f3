package sandbox

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

// Hibernate suspends a RUNNING sandbox to disk (Proxmox status/suspend with
// todisk): the RAM is written to a vmstate volume on the root disk's storage
// (never the workspace's) and QEMU quits, so the host's memory is free while
// the guest's state is kept. The sandbox is SUSPENDED; start resumes it
// (Proxmox's start loads the state). While hibernated the lease clock stands
// still unless lease_counts_while_paused, idle stop does not apply (nothing
// runs), exec and snapshots are refused, and stop or destroy still work.
func (m *Manager) Hibernate(ctx context.Context, ref string) (*store.Sandbox, error) {
	sb, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	switch sb.State {
	case api.StateSuspended:
		return sb, nil
	case api.StateRunning:
	default:
		return nil, invalidState(sb, "hibernate", api.StateRunning)
	}
	return m.hibernateLocked(sb, "sandbox.hibernated", "")
}

// hibernateLocked suspends a RUNNING sandbox to disk; the caller holds its
// lock. why, when set, leads the event's message (idle stop says why).
func (m *Manager) hibernateLocked(sb *store.Sandbox, kind, why string) (*store.Sandbox, error) {
	wctx, cancel := context.WithTimeout(m.ctx, 30*time.Minute)
	defer cancel()
	v, err := m.vm(wctx, sb)
	if errors.Is(err, owner.ErrNotOwned) {
		return nil, m.lost(wctx, sb, "hibernate", err)
	}
	if err == nil && v == nil {
		err = fmt.Errorf("VM %d does not exist", sb.VMID)
	}
	if err != nil {
		return nil, proxmoxError("hibernate", sb, err)
	}
	statestorage, _, _ := strings.Cut(pve.DiskVolume(v.Config, bootDisk(v.Config)), ":")
	start := m.now()
	if err := v.Hibernate(wctx, statestorage); err != nil {
		return nil, proxmoxError("hibernate", sb, err)
	}
	st, err := m.pve.On(sb.Node).Status(wctx, sb.VMID)
	if err != nil {
		return nil, proxmoxError("hibernate", sb, err)
	}
	if st.Status == "running" || st.Lock != "suspended" {
		return nil, proxmoxError("hibernate", sb, fmt.Errorf("Proxmox reported success, but VM %d is %s with lock %q", sb.VMID, st.Status, st.Lock))
	}
	now := m.now().UTC()
	sb.PausedAt = &now
	sb.IP, sb.Step = "", ""
	lease := "the lease clock stops until it is resumed"
	if m.opts.LeaseCountsWhilePaused {
		lease = "the lease runs on (lease_counts_while_paused)"
	}
	msg := fmt.Sprintf("hibernated in %s: RAM written to %s, memory freed; %s", now.Sub(start).Round(time.Millisecond), dash(statestorage), lease)
	if why != "" {
		msg = why + "; " + msg
	}
	if err := m.save(wctx, sb, api.StateSuspended, kind, msg); err != nil {
		return nil, conflict(sb, err)
	}
	return sb, nil
}

func dash(s string) string {
	if s == "" {
		return "the default state storage"
	}
	return s
}

// maxDiskGB bounds a resize's root disk; the cores and memory bounds are
// validate's (Proxmox's own: cores 1..1024 per socket, memory at least
// 16 MiB; ours are the sane subset), shared with the provider.
const maxDiskGB = 64 << 10

// checkResources checks cores and memory_mb of a create or resize (0: not
// given).
func checkResources(cores, memoryMB int) error {
	switch {
	case cores < 0 || cores > validate.MaxCores:
		return api.FieldError("cores", "must be between 1 and %d", validate.MaxCores)
	case memoryMB != 0 && (memoryMB < validate.MinMemoryMB || memoryMB > validate.MaxMemoryMB):
		return api.FieldError("memory_mb", "must be between %d and %d", validate.MinMemoryMB, validate.MaxMemoryMB)
	}
	return nil
}

// Resize changes a RUNNING or STOPPED sandbox's cores and memory and grows
// its root disk, then reads the VM's configuration back. On a running VM
// Proxmox applies cores and memory only at the next start (memory at once
// with memory hotplug); the answer names them as pending. The disk grows at
// once, running or not, and never shrinks.
func (m *Manager) Resize(ctx context.Context, ref string, req api.ResizeRequest) (*api.ResizeResult, error) {
	if req.Cores == 0 && req.MemoryMB == 0 && req.DiskGB == 0 {
		return nil, api.FieldError("cores", "nothing to change: give cores, memory_mb or disk_gb")
	}
	if err := checkResources(req.Cores, req.MemoryMB); err != nil {
		return nil, err
	}
	if req.DiskGB < 0 || req.DiskGB > maxDiskGB {
		return nil, api.FieldError("disk_gb", "must be between 1 and %d", maxDiskGB)
	}
	if req.Cores != 0 || req.MemoryMB != 0 {
		release, err := m.admitResize(ctx, ref)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	sb, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if sb.State != api.StateRunning && sb.State != api.StateStopped {
		return nil, invalidState(sb, "resize", api.StateRunning, api.StateStopped)
	}
	if err := m.checkTeamResize(ctx, sb, req.Cores, req.MemoryMB); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(m.ctx, 10*time.Minute)
	defer cancel()
	v, err := m.vm(wctx, sb)
	if errors.Is(err, owner.ErrNotOwned) {
		return nil, m.lost(wctx, sb, "resize", err)
	}
	if err == nil && v == nil {
		err = fmt.Errorf("VM %d does not exist", sb.VMID)
	}
	if err != nil {
		return nil, proxmoxError("resize", sb, err)
	}
	before := readResources(v.Config)
	if req.DiskGB != 0 && req.DiskGB < before.DiskGB {
		return nil, api.FieldError("disk_gb", "the root disk is %d GiB and can only grow (Proxmox cannot shrink a disk)", before.DiskGB)
	}
	var opts []pve.Option
	var changed, pending []string
	running := sb.State == api.StateRunning
	if req.Cores != 0 && req.Cores != before.Cores {
		opts = append(opts, pve.Option{Name: "cores", Value: req.Cores})
		changed = append(changed, fmt.Sprintf("cores %d → %d", before.Cores, req.Cores))
		if running {
			pending = append(pending, "cores")
		}
	}
	if req.MemoryMB != 0 && req.MemoryMB != before.MemoryMB {
		opts = append(opts, pve.Option{Name: "memory", Value: req.MemoryMB})
		changed = append(changed, fmt.Sprintf("memory %d → %d MiB", before.MemoryMB, req.MemoryMB))
		if running && !hotplugs(v.Config, "memory") {
			pending = append(pending, "memory_mb")
		}
	}
	if len(opts) > 0 {
		if err := v.Configure(wctx, opts...); err != nil {
			return nil, proxmoxError("resize", sb, err)
		}
	}
	if req.DiskGB != 0 && req.DiskGB != before.DiskGB {
		if err := v.Resize(wctx, bootDisk(v.Config), fmt.Sprintf("%dG", req.DiskGB)); err != nil {
			if errors.Is(err, pve.ErrShrinkNotSupported) {
				return nil, api.FieldError("disk_gb", "%v", err)
			}
			return nil, proxmoxError("resize", sb, err)
		}
		changed = append(changed, fmt.Sprintf("root disk %d → %d GiB", before.DiskGB, req.DiskGB))
	}
	cfg, err := m.pve.On(sb.Node).Config(wctx, sb.VMID)
	if err != nil {
		return nil, proxmoxError("resize", sb, err)
	}
	after := readResources(cfg)
	if req.Cores != 0 && after.Cores != req.Cores || req.MemoryMB != 0 && after.MemoryMB != req.MemoryMB || req.DiskGB != 0 && after.DiskGB < req.DiskGB {
		return nil, proxmoxError("resize", sb, fmt.Errorf("read back cores %d, memory %d MiB, disk %d GiB: not what was set", after.Cores, after.MemoryMB, after.DiskGB))
	}
	known := sb.Cores == after.Cores && sb.MemoryMB == after.MemoryMB
	sb.Cores, sb.MemoryMB = after.Cores, after.MemoryMB
	if len(changed) > 0 || !known {
		msg := "resized: " + strings.Join(changed, ", ")
		if len(changed) == 0 {
			msg = fmt.Sprintf("cores %d, memory %d MiB as read from Proxmox", after.Cores, after.MemoryMB)
		}
		if len(pending) > 0 {
			msg += " (" + strings.Join(pending, ", ") + " pending until the next start)"
		}
		if err := m.store.Save(wctx, sb, sb.State, store.Event{Kind: "sandbox.resized", Message: msg}); err != nil {
			return nil, conflict(sb, err)
		}
	}
	if pending == nil {
		pending = []string{}
	}
	return &api.ResizeResult{Sandbox: sb.Sandbox, Cores: after.Cores, MemoryMB: after.MemoryMB, DiskGB: after.DiskGB, Pending: pending}, nil
}

type resources struct{ Cores, MemoryMB, DiskGB int }

// readResources reads cores, memory and the root disk's size from a config.
func readResources(cfg map[string]any) resources {
	num := func(k string, def int) int {
		switch v := cfg[k].(type) {
		case float64:
			return int(v)
		case string:
			if n, err := strconv.Atoi(v); err == nil {
				return n
			}
		}
		return def
	}
	r := resources{Cores: num("cores", 1), MemoryMB: num("memory", 512)}
	drive, _ := cfg[bootDisk(cfg)].(string)
	r.DiskGB = sizeGB(drive)
	return r
}

// hotplugs reports whether the VM's hotplug setting includes what (PVE's
// default is network,disk,usb: neither cpu nor memory).
func hotplugs(cfg map[string]any, what string) bool {
	h, ok := cfg["hotplug"].(string)
	if !ok {
		return false
	}
	if h == "1" {
		return what != "cpu" && what != "memory"
	}
	for _, p := range strings.Split(h, ",") {
		if p == what {
			return true
		}
	}
	return false
}
