package agent_test

// Attacks on the request cuts of "reqcut" (cold create 28 → 20 Proxmox
// requests): provisioning skips reads only a resumed run needs, writes the
// config with a digest-checked synchronous PUT and reuses configure's proven
// handle for the resize. The claim: no write, snapshot, start or file write
// ever lands on a VM agentd did not create, and a run resumed at any step
// boundary still ends fully configured with one VM and one clean snapshot.

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
	"github.com/agentlab/terraform-provider-agentlab/internal/sandbox"
)

// onNth runs fn just before the n-th request (from now) matching method and
// pathRE is served.
func onNth(t *testing.T, d *agent.Dev, method, pathRE string, n int, fn func()) {
	t.Helper()
	err := d.Sim.BeforeRequest(method, pathRE, func() {
		if n > 1 {
			onNth(t, d, method, pathRE, n-1, fn)
			return
		}
		fn()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// onceCloned runs arm with the sandbox's VMID when its clone is requested
// (the VMID is in the row by then), so later hooks can aim at that VM only.
func onceCloned(t *testing.T, d *agent.Dev, c *client.Client, name string, arm func(vmid int)) {
	t.Helper()
	err := d.Sim.BeforeRequest("POST", `/qemu/\d+/clone$`, func() {
		sb, err := c.Sandbox(tctx(t), name)
		if err != nil || sb.VMID == 0 {
			t.Errorf("sandbox %s at its clone: %+v %v", name, sb, err)
			return
		}
		arm(sb.VMID)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// intruder replaces the VM at vmid with one agentd did not create. With
// copyNet it copies net0 and ipconfig0 (a restore of someone's backup, or an
// operator reusing the settings), so its guest reports the sandbox's address
// on the sandbox's MAC; with running it is started. It returns the
// intruder's state right after planting.
func intruder(t *testing.T, d *agent.Dev, vmid int, copyNet, running bool) pvesim.VMState {
	t.Helper()
	ctx := tctx(t)
	pc := pveClient(t, d)
	cur, ok := d.Sim.Dump().VMs[vmid]
	if !ok {
		t.Errorf("no VM %d to plant over", vmid)
		return pvesim.VMState{}
	}
	if cur.Running {
		if err := pc.Stop(ctx, vmid); err != nil {
			t.Error(err)
		}
	}
	if err := pc.Destroy(ctx, vmid); err != nil {
		t.Errorf("destroy VM %d to plant over it: %v", vmid, err)
		return pvesim.VMState{}
	}
	cfg := map[string]string{"name": "intruder", "memory": "512", "scsi0": "local-lvm:4", "agent": "1",
		"description": "someone else's VM", "tags": "prod"}
	if copyNet {
		cfg["net0"], cfg["ipconfig0"] = cur.Config["net0"], cur.Config["ipconfig0"]
	}
	if err := d.Sim.AddVM("pve", vmid, cfg, false); err != nil {
		t.Error(err)
		return pvesim.VMState{}
	}
	if running {
		if err := pc.Start(ctx, vmid); err != nil {
			t.Error(err)
		}
	}
	return d.Sim.Dump().VMs[vmid]
}

// settled waits until the sandbox leaves provisioning (any state but
// REQUESTED, PROVISIONING and BOOTING), or is gone.
func settled(t *testing.T, c *client.Client, name string) *api.Sandbox {
	t.Helper()
	ctx := tctx(t)
	for {
		sb, err := c.Sandbox(ctx, name)
		if err != nil {
			return nil
		}
		switch sb.State {
		case api.StateRequested, api.StateProvisioning, api.StateBooting:
		default:
			return sb
		}
		select {
		case <-ctx.Done():
			t.Fatalf("sandbox %s never settled (last %+v)", name, sb)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestAttackReqForeignVMAtEveryStep plants a foreign VM at the sandbox's
// VMID at each moment between two provisioning requests of a fresh cold
// create and requires that agentd never changes it: its config, power
// state, snapshots and guest files stay what the intruder made, and the
// create fails (or, had nothing been written, it would have; it must not
// end RUNNING on someone else's VM).
func TestAttackReqForeignVMAtEveryStep(t *testing.T) {
	cfgRE := func(vmid int) string { return fmt.Sprintf(`/qemu/%d/config$`, vmid) }
	cases := []struct {
		name             string
		copyNet, running bool
		// arm registers, once the VMID is known, the hook that plants.
		arm func(t *testing.T, d *agent.Dev, vmid int, plant func())
	}{
		{name: "after clone returns", arm: func(t *testing.T, d *agent.Dev, vmid int, plant func()) {
			onNth(t, d, "GET", cfgRE(vmid), 1, plant)
		}},
		{name: "between config read and PUT", arm: func(t *testing.T, d *agent.Dev, vmid int, plant func()) {
			onNth(t, d, "PUT", cfgRE(vmid), 1, plant)
		}},
		{name: "between PUT and resize", arm: func(t *testing.T, d *agent.Dev, vmid int, plant func()) {
			onNth(t, d, "PUT", fmt.Sprintf(`/qemu/%d/resize$`, vmid), 1, plant)
		}},
		{name: "between firewall and resize", arm: func(t *testing.T, d *agent.Dev, vmid int, plant func()) {
			// The last firewall write of configure, then the resize.
			onNth(t, d, "PUT", fmt.Sprintf(`/qemu/%d/firewall/options$`, vmid), 1, func() {
				onNth(t, d, "", fmt.Sprintf(`/qemu/%d/`, vmid), 1, plant)
			})
		}},
		{name: "between resize and snapshot", arm: func(t *testing.T, d *agent.Dev, vmid int, plant func()) {
			onNth(t, d, "PUT", fmt.Sprintf(`/qemu/%d/resize$`, vmid), 1, func() {
				onNth(t, d, "", fmt.Sprintf(`/qemu/%d/(config|snapshot)$`, vmid), 1, plant)
			})
		}},
		{name: "between snapshot and start", arm: func(t *testing.T, d *agent.Dev, vmid int, plant func()) {
			onNth(t, d, "POST", fmt.Sprintf(`/qemu/%d/snapshot$`, vmid), 1, func() {
				onNth(t, d, "", fmt.Sprintf(`/qemu/%d/(config|status/current|status/start)$`, vmid), 1, plant)
			})
		}},
		{name: "during the wait for the address", copyNet: true, running: true, arm: func(t *testing.T, d *agent.Dev, vmid int, plant func()) {
			onNth(t, d, "GET", fmt.Sprintf(`/qemu/%d/agent/network-get-interfaces$`, vmid), 1, plant)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{NoLoops: true}})
			ctx := tctx(t)
			name := "victim"
			var mu sync.Mutex
			var planted *pvesim.VMState
			vmid := 0
			onceCloned(t, d, c, name, func(id int) {
				vmid = id
				tc.arm(t, d, id, func() {
					st := intruder(t, d, id, tc.copyNet, tc.running)
					mu.Lock()
					planted = &st
					mu.Unlock()
				})
			})
			if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: "yolo-ephemeral"}); err != nil {
				t.Fatal(err)
			}
			sb := settled(t, c, name)
			mu.Lock()
			defer mu.Unlock()
			if planted == nil {
				t.Fatalf("the intruder was never planted (the hook's request did not happen); sandbox %+v", sb)
			}
			now, ok := d.Sim.Dump().VMs[vmid]
			if !ok {
				t.Fatalf("agentd destroyed the intruder at VM %d; sandbox %+v", vmid, sb)
			}
			if !reflect.DeepEqual(now.Config, planted.Config) {
				t.Errorf("agentd changed the intruder's config:\nplanted %v\nnow     %v", planted.Config, now.Config)
			}
			if now.Running != planted.Running {
				t.Errorf("agentd changed the intruder's power state: running %v, planted %v", now.Running, planted.Running)
			}
			if !reflect.DeepEqual(now.Snapshots, planted.Snapshots) {
				t.Errorf("agentd snapshotted the intruder: %v", now.Snapshots)
			}
			if _, ok := d.Sim.GuestFile(vmid, sandbox.BootstrapPath); ok {
				t.Errorf("agentd wrote its bootstrap file (a token) into the intruder's guest")
			}
			if sb != nil && sb.State == api.StateRunning {
				t.Errorf("sandbox RUNNING on someone else's VM: %+v", sb)
			}
		})
	}
}

// TestAttackReqDigestCoversSnapshots: PVE's digest is the SHA-1 of the whole
// config file (parse_vm_config), snapshot sections and the current parent
// included, and update_vm_api refuses a PUT whose digest is not the file's.
// A snapshot taken or deleted after the read therefore makes the write fail;
// the simulator used to hash only the current section, so agentd's
// digest-checked writes were tested against a weaker check than PVE's.
func TestAttackReqDigestCoversSnapshots(t *testing.T) {
	d, _ := startDev(t, agent.DevOptions{Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	pc := pveClient(t, d)
	const vmid = 700
	if err := pc.Clone(ctx, pvesim.FixtureTemplateID, vmid, pve.CloneOptions{Name: "digest", Description: "digest attack"}); err != nil {
		t.Fatal(err)
	}
	digest := func() string {
		t.Helper()
		cfg, err := pc.Config(ctx, vmid)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := cfg["digest"].(string)
		return s
	}
	for _, change := range []struct {
		name string
		do   func() error
	}{
		{"snapshot taken", func() error { return pc.CreateSnapshot(ctx, vmid, "s1", "") }},
		{"snapshot deleted", func() error { return pc.DeleteSnapshot(ctx, vmid, "s1") }},
	} {
		read := digest()
		if err := change.do(); err != nil {
			t.Fatalf("%s: %v", change.name, err)
		}
		if digest() == read {
			t.Errorf("%s: the config digest did not change (PVE's covers the whole file)", change.name)
		}
		err := pc.ConfigureIfUnchanged(ctx, vmid, read, pve.Option{Name: "cores", Value: 3})
		if !errors.Is(err, pve.ErrModified) {
			t.Errorf("%s after the read: the PUT with the stale digest answered %v, want ErrModified", change.name, err)
		}
	}
	cfg, err := pc.Config(ctx, vmid)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(cfg["cores"]) == "3" {
		t.Fatalf("a refused write changed the VM: %v", cfg)
	}
	if err := pc.ConfigureIfUnchanged(ctx, vmid, digest(), pve.Option{Name: "cores", Value: 3}); err != nil {
		t.Fatalf("write with the current digest: %v", err)
	}
}

// boundary is one Proxmox request of a fresh cold create of yolo-ephemeral
// (TestColdCreateRequests lists them); nth counts matches of method and path.
type boundary struct {
	name, method, path string
	nth                int
}

var coldCreateBoundaries = []boundary{
	{"clone", "POST", `/qemu/9000/clone$`, 1},
	{"clone poll", "GET", `/tasks/[^/]*:qmclone:`, 1},
	{"configure proof", "GET", `/qemu/1\d\d/config$`, 1},
	{"config PUT", "PUT", `/qemu/1\d\d/config$`, 1},
	{"firewall rules read", "GET", `/qemu/1\d\d/firewall/rules$`, 1},
	{"firewall group rule", "POST", `/qemu/1\d\d/firewall/rules$`, 1},
	{"IP set create", "POST", `/qemu/1\d\d/firewall/ipset$`, 1},
	{"IP set address", "POST", `/qemu/1\d\d/firewall/ipset/ipfilter-net0$`, 1},
	{"firewall options", "PUT", `/qemu/1\d\d/firewall/options$`, 1},
	{"resize proof", "GET", `/qemu/1\d\d/config$`, 2},
	{"resize", "PUT", `/qemu/1\d\d/resize$`, 1},
	{"resize poll", "GET", `/tasks/[^/]*:resize:`, 1},
	{"snapshot proof", "GET", `/qemu/1\d\d/config$`, 3},
	{"snapshot", "POST", `/qemu/1\d\d/snapshot$`, 1},
	{"snapshot poll", "GET", `/tasks/[^/]*:qmsnapshot:`, 1},
	{"start proof", "GET", `/qemu/1\d\d/config$`, 4},
	{"start", "POST", `/qemu/1\d\d/status/start$`, 1},
	{"start poll", "GET", `/tasks/[^/]*:qmstart:`, 1},
	{"guest address", "GET", `/qemu/1\d\d/agent/network-get-interfaces$`, 1},
	{"bootstrap proof", "GET", `/qemu/1\d\d/config$`, 5},
	{"bootstrap file", "POST", `/qemu/1\d\d/agent/file-write$`, 1},
}

// TestAttackReqRestartAtEveryBoundary stops agentd at each request of a
// fresh cold create, deterministically (the soak does it at random): once
// with the request never served (a crash just before it) and once with it
// performed and its answer lost (a crash just after it). The run the
// restarted agentd resumes, with none of the first run's in-memory
// knowledge, must end RUNNING with the full configuration, one VM, one clean
// snapshot, the IP set holding exactly the sandbox's address and a
// bootstrap file.
func TestAttackReqRestartAtEveryBoundary(t *testing.T) {
	for _, b := range coldCreateBoundaries {
		for _, performed := range []bool{false, true} {
			mode := "before"
			if performed {
				mode = "after"
			}
			t.Run(b.name+" "+mode, func(t *testing.T) {
				d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{NoLoops: true}})
				ctx := tctx(t)
				hit := make(chan struct{})
				onNth(t, d, b.method, b.path, b.nth, func() {
					var err error
					if performed {
						err = d.Sim.LoseReply(b.method, b.path, 1, true)
					} else {
						err = d.Sim.HangEndpoint(b.method, b.path)
					}
					if err != nil {
						t.Error(err)
					}
					close(hit)
				})
				if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "crash", Profile: "yolo-ephemeral"}); err != nil {
					t.Fatal(err)
				}
				select {
				case <-hit:
				case <-ctx.Done():
					t.Fatalf("the create never made the %s request", b.name)
				}
				d.Sim.ClearFaults()
				if err := d.Restart(ctx); err != nil {
					t.Fatal(err)
				}
				c = tcpClient(t, d, d.Info.Token)
				sb, err := c.WaitSandbox(ctx, "crash", 10*time.Millisecond)
				if err != nil || sb.State != api.StateRunning {
					t.Fatalf("after a restart at %s (%s): %+v %v", b.name, mode, sb, err)
				}
				all := vms(d)
				if len(all) != 1 {
					t.Fatalf("%d VMs for one sandbox: %v", len(all), all)
				}
				fullConfig(t, d, sb, 40, "")
				if snaps := all[sb.VMID].Snapshots; !reflect.DeepEqual(snaps, []string{sandbox.CleanSnapshot}) {
					t.Errorf("snapshots %v, want exactly [%s]", snaps, sandbox.CleanSnapshot)
				}
				if set, ok := d.Sim.IPSet(sb.VMID, "ipfilter-net0"); !ok || !reflect.DeepEqual(set, []string{sb.IP}) {
					t.Errorf("IP set ipfilter-net0 %v (exists %v), want exactly [%s]", set, ok, sb.IP)
				}
				if _, ok := d.Sim.GuestFile(sb.VMID, sandbox.BootstrapPath); !ok {
					t.Errorf("no bootstrap file in the guest")
				}
			})
		}
	}
}

// TestAttackReqIPSetFromTemplate: clone_vm copies the template's firewall
// config (clone_vmfw_conf), so a template whose ipfilter-net0 set holds
// someone's addresses makes create_ipset answer "already exists" on the
// clone. The create-first path must then read the set and leave exactly the
// sandbox's address (anything else stays bindable to the guest). An answer
// other than "already exists" must fail the create naming the set, and leave
// no VM.
func TestAttackReqIPSetFromTemplate(t *testing.T) {
	t.Run("foreign entries copied from the template", func(t *testing.T) {
		d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{NoLoops: true}})
		ctx := tctx(t)
		pc := pveClient(t, d)
		// The template's own .fw carries the set with a foreign address.
		if err := pc.VMFirewall(ctx, pvesim.FixtureTemplateID, "agentlab-nat", netip.MustParseAddr("192.0.2.7")); err != nil {
			t.Fatal(err)
		}
		var copied atomic.Bool
		if err := d.Sim.BeforeRequest("POST", `/qemu/1\d\d/firewall/ipset$`, func() {
			sb, err := c.Sandbox(ctx, "ipset")
			if err != nil {
				t.Error(err)
				return
			}
			set, _ := d.Sim.IPSet(sb.VMID, pve.IPFilterSet)
			copied.Store(reflect.DeepEqual(set, []string{"192.0.2.7"}))
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "ipset", Profile: "yolo-ephemeral"}); err != nil {
			t.Fatal(err)
		}
		sb, err := waitRunning(ctx, c, "ipset")
		if err != nil {
			t.Fatal(err)
		}
		if !copied.Load() {
			t.Fatalf("the clone did not carry the template's IP set when agentd created its own")
		}
		if set, ok := d.Sim.IPSet(sb.VMID, pve.IPFilterSet); !ok || !reflect.DeepEqual(set, []string{sb.IP}) {
			t.Fatalf("VM %d's %s holds %v (exists %v), want exactly [%s]", sb.VMID, pve.IPFilterSet, set, ok, sb.IP)
		}
	})
	t.Run("create refused for another reason", func(t *testing.T) {
		d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{NoLoops: true}})
		ctx := tctx(t)
		if err := d.Sim.FailEndpointTimes("POST", `/qemu/1\d\d/firewall/ipset$`, 500, "can't lock file '/var/lock/pve-manager/pve-firewall-101.lck' - got timeout", 1); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "ipset", Profile: "yolo-ephemeral"}); err != nil {
			t.Fatal(err)
		}
		sb := settled(t, c, "ipset")
		if sb == nil || sb.State != api.StateFailed {
			t.Fatalf("sandbox %+v, want FAILED", sb)
		}
		if !strings.Contains(sb.Error, "create IP set "+pve.IPFilterSet) || !strings.Contains(sb.Error, "got timeout") {
			t.Errorf("error %q does not name the IP set and Proxmox's answer", sb.Error)
		}
		if left := vms(d); len(left) != 0 {
			t.Errorf("VMs left after the failed create: %v", left)
		}
	})
}

// TestAttackReqFreshFlagNeverOnRetry: a run skips the look for an earlier
// clone only when it reserved the VMID itself. A create retried while the
// first clone runs, and an agentd restarted in the middle of that clone,
// must neither start a second worker that reserves another VMID nor clone
// twice: one sandbox, one VM, RUNNING with the full config.
func TestAttackReqFreshFlagNeverOnRetry(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	req := api.CreateSandboxRequest{Name: "retry", Profile: "yolo-ephemeral"}
	hit := make(chan string, 1)
	// Aim at the clone poll: the clone task exists and holds lock=clone.
	if err := d.Sim.BeforeRequest("GET", `/tasks/[^/]*:qmclone:`, func() {
		again, err := c.CreateSandbox(ctx, req)
		if err != nil {
			t.Errorf("create retried during the clone: %v", err)
		}
		if err := d.Sim.HangEndpoint("GET", `/tasks/[^/]*:qmclone:`); err != nil {
			t.Error(err)
		}
		id := ""
		if again != nil {
			id = again.ID
		}
		hit <- id
	}); err != nil {
		t.Fatal(err)
	}
	first, err := c.CreateSandbox(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-hit:
		if id != first.ID {
			t.Fatalf("create retried during the clone answered sandbox %q, want %s again", id, first.ID)
		}
	case <-ctx.Done():
		t.Fatal("the clone task was never polled")
	}
	d.Sim.ClearFaults()
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	c = tcpClient(t, d, d.Info.Token)
	if again, err := c.CreateSandbox(ctx, req); err != nil || again.ID != first.ID {
		t.Fatalf("create retried after the restart: %+v %v, want sandbox %s again", again, err, first.ID)
	}
	sb, err := c.WaitSandbox(ctx, "retry", 10*time.Millisecond)
	if err != nil || sb.State != api.StateRunning {
		t.Fatalf("%+v %v", sb, err)
	}
	if all := vms(d); len(all) != 1 {
		t.Fatalf("%d VMs for one sandbox: %v", len(all), all)
	}
	fullConfig(t, d, sb, 40, "")
}
