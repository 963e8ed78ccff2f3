package agent_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeConntrack serves a settable conntrack listing (or error).
type fakeConntrack struct {
	mu  sync.Mutex
	out string
	err error
}

func (f *fakeConntrack) set(out string, err error) {
	f.mu.Lock()
	f.out, f.err = out, err
	f.mu.Unlock()
}
func (f *fakeConntrack) get() (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.out, true, f.err
}

func (f *fakeConntrack) list(context.Context) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return []byte(f.out), f.err
}

func sshFlow(ip string) string {
	return fmt.Sprintf("tcp      6 431999 ESTABLISHED src=10.77.0.1 dst=%s sport=51234 dport=22 src=%s dst=10.77.0.1 sport=22 dport=51234 [ASSURED] mark=0 use=1\n", ip, ip)
}

func startLoopsDev(t *testing.T) (*agent.Dev, *client.Client, *fakeClock, *fakeConntrack) {
	clk := &fakeClock{t: time.Now().UTC().Truncate(time.Second)}
	ct := &fakeConntrack{}
	d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{Now: clk.Now, Conntrack: ct.list, NoLoops: true}})
	return d, c, clk, ct
}

// state is the state of the newest sandbox with this name, destroyed or not
// (a name reaches only a live sandbox, so a destroyed one is found by listing).
func state(t *testing.T, c *client.Client, name string) api.State {
	t.Helper()
	all, err := c.Sandboxes(tctx(t), url.Values{"all": {"true"}, "name": {name}})
	if err != nil || len(all) == 0 {
		t.Fatalf("sandbox %s: %v", name, err)
	}
	return all[0].State
}

func lastEvent(t *testing.T, c *client.Client, name string) api.Event {
	t.Helper()
	l, err := c.Events(tctx(t), name, 0, 1)
	if err != nil || len(l.Events) == 0 {
		t.Fatalf("events of %s: %v", name, err)
	}
	return l.Events[0]
}

func TestLeaseGC(t *testing.T) {
	d, c, clk, _ := startLoopsDev(t)
	ctx := tctx(t)
	m := d.Manager
	short, _ := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "short", Profile: "yolo-ephemeral", TTL: "1h"})
	c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "long", Profile: "yolo-ephemeral", TTL: "2h"})
	c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "parked", Profile: "yolo-ephemeral", TTL: "1h"})
	c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "forever", Profile: "yolo-ephemeral", TTL: "0"})
	for _, n := range []string{"short", "long", "parked", "forever"} {
		c.WaitSandbox(ctx, n, 10*time.Millisecond)
	}
	c.Stop(ctx, "parked")
	// A session with a keepalive profile (yolo-workspace: keepalive, 8h).
	c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "ws", Size: "5G"})
	vol := holderVol(t, d, c, "ws")
	c.CreateSession(ctx, api.CreateSessionRequest{Name: "s", Profile: "yolo-workspace", Workspace: "ws"})
	ses := resume(t, c, "s")

	clk.Add(59 * time.Minute)
	if err := m.LeaseGC(ctx); err != nil {
		t.Fatal(err)
	}
	if state(t, c, "short") != api.StateRunning {
		t.Fatal("expired a minute early")
	}
	clk.Add(2 * time.Minute)
	if err := m.LeaseGC(ctx); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]api.State{"short": api.StateDestroyed, "parked": api.StateDestroyed, "long": api.StateRunning, "forever": api.StateRunning} {
		if got := state(t, c, name); got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}
	if _, ok := vms(d)[short.VMID]; ok {
		t.Fatal("expired sandbox's VM still exists")
	}
	got := strings.Join(kinds(t, c, short.ID), " ") // destroyed: its id, not its name
	if !strings.HasSuffix(got, "RUNNING>TIMEOUT TIMEOUT>DESTROYED") {
		t.Fatalf("transitions %s", got)
	}
	// Past the session sandbox's 8h lease: keepalive renews it while the session uses it.
	clk.Add(8 * time.Hour)
	if err := m.LeaseGC(ctx); err != nil {
		t.Fatal(err)
	}
	sb, _ := c.Sandbox(ctx, ses.Sandbox)
	if sb.State != api.StateRunning || !sb.LeaseExpiresAt.After(clk.Now().Add(7*time.Hour)) {
		t.Fatalf("keepalive sandbox %+v", sb)
	}
	if e := lastEvent(t, c, ses.Sandbox); e.Kind != "sandbox.lease_kept" || !strings.Contains(e.Message, "session s") {
		t.Fatalf("event %+v", e)
	}
	// The session stops using it (session stop): keepalive no longer applies.
	// A sandbox with keepalive but no session expires like any other.
	kp, _ := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "kp", Profile: "yolo-ephemeral", TTL: "1h", Keepalive: ptr(true)})
	c.WaitSandbox(ctx, "kp", 10*time.Millisecond)
	// RUNNING is committed before the provisioning worker is gone, and lease
	// GC skips a sandbox whose worker still runs.
	m.Wait(kp.ID)
	clk.Add(2 * time.Hour)
	m.LeaseGC(ctx)
	if state(t, c, "kp") != api.StateDestroyed || state(t, c, "long") != api.StateDestroyed {
		t.Fatalf("kp %s long %s", state(t, c, "kp"), state(t, c, "long"))
	}
	if read(t, d, vol, "x") != "<missing>" || !volumeExists(d, vol) {
		t.Fatal("workspace volume touched by lease GC")
	}
	// A sandbox with a workspace attached times out: the workspace survives,
	// detached, with its data.
	c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "ws2", Size: "5G"})
	vol2 := holderVol(t, d, c, "ws2")
	write(t, d, vol2, "/work/keep.txt", "precious")
	c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "wsbox", Profile: "yolo-workspace", Workspace: "ws2", TTL: "1h", Keepalive: ptr(false)})
	c.WaitSandbox(ctx, "wsbox", 10*time.Millisecond)
	clk.Add(61 * time.Minute)
	m.LeaseGC(ctx)
	if state(t, c, "wsbox") != api.StateDestroyed || read(t, d, vol2, "/work/keep.txt") != "precious" {
		t.Fatalf("wsbox %s, data %q", state(t, c, "wsbox"), read(t, d, vol2, "/work/keep.txt"))
	}
	if w, _ := c.Workspace(ctx, "ws2"); w.AttachedSandbox != "" {
		t.Fatalf("workspace still attached to an expired sandbox: %+v", w)
	}
}

func ptr[T any](v T) *T { return &v }

func TestIdleStop(t *testing.T) {
	d, c, clk, ct := startLoopsDev(t)
	ctx := tctx(t)
	m := d.Manager
	names := []string{"quiet", "ssh", "busy", "touched", "dev"}
	ips := map[string]string{}
	for _, n := range names {
		p := "yolo-ephemeral" // idle window 30 min
		if n == "dev" {
			p = "interactive-dev" // 120 min
		}
		c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: n, Profile: p, TTL: "0"})
		sb, _ := c.WaitSandbox(ctx, n, 10*time.Millisecond)
		ips[n] = sb.IP
		d.Sim.SetCPU(sb.VMID, 0.01)
	}
	busy, _ := c.Sandbox(ctx, "busy")
	d.Sim.SetCPU(busy.VMID, 0.40)
	// An SSH session to "ssh", idle CPU.
	ct.set(sshFlow(ips["ssh"])+"garbage line\n", nil)
	step := func(dur time.Duration) {
		t.Helper()
		clk.Add(dur)
		_, _, ctErr := ct.get()
		if err := m.IdleStop(ctx); err != nil && ctErr == nil {
			t.Fatal(err)
		}
	}
	step(20 * time.Minute)
	c.Touch(ctx, "touched")
	step(9 * time.Minute) // 29 min
	for _, n := range names {
		if state(t, c, n) != api.StateRunning {
			t.Fatalf("%s stopped before its window", n)
		}
	}
	step(2 * time.Minute) // 31 min
	want := map[string]api.State{"quiet": api.StateStopped, "ssh": api.StateRunning, "busy": api.StateRunning, "touched": api.StateRunning, "dev": api.StateRunning}
	for n, w := range want {
		if got := state(t, c, n); got != w {
			t.Errorf("after 31 min %s is %s, want %s", n, got, w)
		}
	}
	e := lastEvent(t, c, "quiet")
	if e.Kind != "sandbox.idle_stop" || !strings.Contains(e.Message, "no SSH flow to "+ips["quiet"]+":22") || !strings.Contains(e.Message, "CPU 1.0% below 5.0%") {
		t.Fatalf("idle stop event %+v", e)
	}
	step(20 * time.Minute) // 51 min, 31 since the touch
	if state(t, c, "touched") != api.StateStopped || state(t, c, "ssh") != api.StateRunning || state(t, c, "busy") != api.StateRunning {
		t.Fatalf("touched %s ssh %s busy %s", state(t, c, "touched"), state(t, c, "ssh"), state(t, c, "busy"))
	}
	// conntrack unreadable: nothing is stopped, reported once.
	ct.set("", errors.New("exec: \"conntrack\": executable file not found in $PATH"))
	step(3 * time.Hour)
	step(time.Hour)
	for _, n := range []string{"ssh", "busy", "dev"} {
		if state(t, c, n) != api.StateRunning {
			t.Fatalf("%s stopped while SSH activity was unknown", n)
		}
	}
	st, _ := c.Status(ctx)
	if !strings.Contains(st.IdleStop, "cannot read SSH activity") {
		t.Fatalf("status idle_stop %q", st.IdleStop)
	}
	all, _ := c.Events(ctx, "", 0, 1000)
	n := 0
	for _, e := range all.Events {
		if e.Kind == "idle_stop.unavailable" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d unavailable events, want 1", n)
	}
	// Back: the SSH session ended and CPU dropped; dev (120 min) stops last.
	ct.set("", nil)
	d.Sim.SetCPU(busy.VMID, 0.0)
	step(time.Minute)
	step(31 * time.Minute)
	if state(t, c, "ssh") != api.StateStopped || state(t, c, "busy") != api.StateStopped || state(t, c, "dev") != api.StateRunning {
		t.Fatalf("ssh %s busy %s dev %s", state(t, c, "ssh"), state(t, c, "busy"), state(t, c, "dev"))
	}
	step(90 * time.Minute)
	if state(t, c, "dev") != api.StateStopped {
		t.Fatal("interactive-dev did not stop after its 120 min window")
	}
}

func TestReconcile(t *testing.T) {
	d, c, _, _ := startLoopsDev(t)
	ctx := tctx(t)
	m := d.Manager
	pc := pveClient(t, d)
	a := create(t, c, "a")
	b := create(t, c, "b")
	s := create(t, c, "s")
	c.Stop(ctx, "s")
	c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "ws", Size: "5G"})
	vol := holderVol(t, d, c, "ws")
	c.AttachWorkspace(ctx, "ws", "b")
	// Drift made behind agentd's back.
	pc.Stop(ctx, a.VMID)
	pc.Stop(ctx, b.VMID)
	pc.DetachVolume(ctx, b.VMID, "scsi1")
	pc.Destroy(ctx, b.VMID)
	pc.Start(ctx, s.VMID)
	d.Sim.AddVM("pve", 700, map[string]string{"name": "forgotten", "tags": "agentlab", "description": "agentlab-sandbox-id: sbx-000000000000", "memory": "512"}, false)
	d.Sim.AddVM("pve", 701, map[string]string{"name": "unprovable", "tags": "agentlab", "memory": "512"}, false)
	d.Sim.AddVM("pve", 702, map[string]string{"name": "ws-lost", "tags": "agentlab-workspace", "memory": "64"}, false)
	d.Sim.AddVM("pve", 703, map[string]string{"name": "someone-else", "memory": "512"}, false)
	// A VM provably ours: the id and VMID of a sandbox this database issued
	// and destroyed, with this installation's instance id.
	gone := create(t, c, "gone")
	if _, err := c.Destroy(ctx, "gone", false); err != nil {
		t.Fatal(err)
	}
	instance, _ := d.Agent.Store.InstanceID(ctx)
	proof := owner.Proof{Kind: owner.Sandbox, ID: gone.ID, Name: "gone", Instance: instance, VMID: gone.VMID}
	d.Sim.AddVM("pve", gone.VMID, map[string]string{"name": "gone", "tags": "agentlab", "description": proof.Description(), "memory": "512"}, false)

	_, before := d.Sim.RequestCount()
	dry, err := m.Reconcile(ctx, true)
	_, after := d.Sim.RequestCount()
	if err != nil {
		t.Fatal(err)
	}
	// A dry run lists once and reads the configs of the rows' VMs and holders
	// (each is proven: a copy has our tag and name) and of orphan candidates
	// (their descriptions decide whose they are); it writes nothing.
	for path, n := range after {
		if n == before[path] {
			continue
		}
		if path == "GET /cluster/resources" && n-before[path] == 1 || path == "GET /nodes/{node}/qemu/{vmid}/config" && n-before[path] <= 8 {
			continue
		}
		t.Fatalf("dry run made %d %s requests", n-before[path], path)
	}
	acts := func(rep *api.ReconcileReport) string {
		var out []string
		for _, a := range rep.Actions {
			out = append(out, a.Sandbox+":"+a.Action)
		}
		sort.Strings(out)
		return strings.Join(out, ",")
	}
	if got := acts(dry); got != "a:stopped,b:destroyed,s:started" {
		t.Fatalf("dry actions %s", got)
	}
	if state(t, c, "a") != api.StateRunning {
		t.Fatal("dry run changed a row")
	}
	var orphans []string
	for _, o := range dry.Orphans {
		orphans = append(orphans, fmt.Sprintf("%d:%s:%s", o.VMID, o.Kind, o.Owner))
	}
	sort.Strings(orphans)
	want := fmt.Sprintf("%d:sandbox:this-agent,700:sandbox:foreign,701:sandbox:foreign,702:workspace-holder:foreign", gone.VMID)
	if strings.Join(orphans, ",") != want {
		t.Fatalf("orphans %v, want %s", orphans, want)
	}
	if _, err := m.Reconcile(ctx, false); err != nil {
		t.Fatal(err)
	}
	if state(t, c, "a") != api.StateStopped || state(t, c, "b") != api.StateDestroyed {
		t.Fatalf("a %s b %s", state(t, c, "a"), state(t, c, "b"))
	}
	if sb, _ := c.WaitSandbox(ctx, "s", 10*time.Millisecond); sb.State != api.StateRunning || sb.IP == "" {
		t.Fatalf("s after reconcile: %+v", sb)
	}
	if w, _ := c.Workspace(ctx, "ws"); w.AttachedSandbox != "" || !volumeExists(d, vol) {
		t.Fatalf("workspace after its sandbox vanished: %+v", w)
	}
	if e := lastEvent(t, c, "a"); e.Kind != "sandbox.reconciled" || !strings.Contains(e.Message, "stopped outside agentd") {
		t.Fatalf("event %+v", e)
	}
	// Orphans: a dry run changes nothing; then only the VM provably ours
	// goes (700 names an id this database never issued).
	var res api.PruneResult
	nVMs := len(vms(d))
	if err := c.Do(ctx, "POST", "/v1/sandboxes/prune", api.PruneRequest{Orphans: true, DryRun: true}, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Orphans) != 1 || res.Orphans[0].VMID != gone.VMID || len(vms(d)) != nVMs {
		t.Fatalf("dry-run prune %+v", res)
	}
	res = api.PruneResult{}
	if err := c.Do(ctx, "POST", "/v1/sandboxes/prune", api.PruneRequest{Orphans: true, Node: "elsewhere"}, &res); err != nil || len(res.Orphans) != 0 {
		t.Fatalf("prune on another node %+v %v", res, err)
	}
	res = api.PruneResult{}
	if err := c.Do(ctx, "POST", "/v1/sandboxes/prune", api.PruneRequest{Orphans: true}, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Orphans) != 1 || res.Orphans[0].VMID != gone.VMID || len(res.Kept) != 3 {
		t.Fatalf("prune orphans %+v", res)
	}
	left := vms(d)
	for _, id := range []int{700, 701, 702, 703} {
		if _, ok := left[id]; !ok {
			t.Fatalf("VM %d was removed", id)
		}
	}
	if _, ok := left[gone.VMID]; ok {
		t.Fatal("provable orphan kept")
	}
	_ = pve.ErrNotFound
}

// TestProvisioningTimeoutLoop: a row left in PROVISIONING with nobody driving
// it (agentd died before resume could run, say) times out and its VM goes.
func TestProvisioningTimeoutLoop(t *testing.T) {
	d, c, clk, _ := startLoopsDev(t)
	ctx := tctx(t)
	st := d.Agent.Store
	sb := &store.Sandbox{Sandbox: api.Sandbox{ID: "sbx-stuck0000001", Name: "stuck", Profile: "yolo-ephemeral", State: api.StateProvisioning,
		VMID: 321, Node: "pve", Step: "configure"}, Request: "{}"}
	if err := st.CreateSandbox(ctx, sb, store.Event{Kind: "sandbox.requested", Message: "test"}); err != nil {
		t.Fatal(err)
	}
	pc := pveClient(t, d)
	if err := pc.Clone(ctx, 9000, 321, pve.CloneOptions{Name: "stuck", Description: "agentlab-sandbox-id: sbx-stuck0000001"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Manager.ProvisioningTimeouts(ctx); err != nil || state(t, c, "stuck") != api.StateProvisioning {
		t.Fatalf("timed out too early: %v", err)
	}
	clk.Add(21 * time.Second) // the dev provisioning timeout here is 20s
	if err := d.Manager.ProvisioningTimeouts(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := c.Sandbox(ctx, "stuck")
	if got.State != api.StateTimeout || !strings.Contains(got.Error, "stuck at step configure") || !strings.Contains(got.Error, "VM 321 removed") {
		t.Fatalf("%+v", got)
	}
	if _, ok := vms(d)[321]; ok {
		t.Fatal("VM of the timed-out sandbox left")
	}
}

func TestStatusReportsLoops(t *testing.T) {
	_, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{Conntrack: (&fakeConntrack{}).list}})
	ctx := tctx(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ok := len(st.Loops) == 8
		for _, name := range []string{"lease_gc", "provisioning_timeout", "reconcile", "idle_stop", "prune_state", "port_expiry", "pool"} {
			ok = ok && st.Loops[name].Runs >= 1 && st.Loops[name].LastRun != nil
		}
		if ok {
			if st.Loops["reconcile"].Every != "30s" || st.Loops["idle_stop"].Every != "1m0s" {
				t.Fatalf("loops %+v", st.Loops)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("loops never ran: %+v", st.Loops)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestIdleHibernate: a profile with behavior.idle_action: hibernate has its
// idle sandboxes hibernated instead of stopped (RAM written to vmstate, the
// VM not running), the event names the action, and the lease stands still
// while it sleeps; the other profile's idle sandbox is stopped as before. A
// resume brings it back at its address; resume of a stopped one is refused.
func TestIdleHibernate(t *testing.T) {
	d, _, clk, _ := startLoopsDev(t)
	ctx := tctx(t)
	prof := "name: sleepy\ntemplate_vmid: 9000\nbehavior:\n  idle_stop_minutes_default: 30\n  idle_action: hibernate\n"
	if err := os.WriteFile(filepath.Join(d.Config.ProfilesDir, "sleepy.yaml"), []byte(prof), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	c := tcpClient(t, d, d.Info.Token)
	for n, p := range map[string]string{"nap": "sleepy", "off": "yolo-ephemeral"} {
		if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: n, Profile: p, TTL: "2h"}); err != nil {
			t.Fatal(err)
		}
		sb, err := c.WaitSandbox(ctx, n, 10*time.Millisecond)
		if err != nil || sb.State != api.StateRunning {
			t.Fatalf("%s: %+v %v", n, sb, err)
		}
		d.Sim.SetCPU(sb.VMID, 0.01)
	}
	nap, _ := c.Sandbox(ctx, "nap")
	leaseBefore := *nap.LeaseExpiresAt
	clk.Add(31 * time.Minute)
	if err := d.Manager.IdleStop(ctx); err != nil {
		t.Fatal(err)
	}
	if state(t, c, "nap") != api.StateSuspended || state(t, c, "off") != api.StateStopped {
		t.Fatalf("nap %s off %s", state(t, c, "nap"), state(t, c, "off"))
	}
	vm := vms(d)[nap.VMID]
	if vm.Running || vm.Config["vmstate"] == "" || vm.Config["lock"] != "suspended" {
		t.Fatalf("hibernated VM: running %v, config %v", vm.Running, vm.Config)
	}
	e := lastEvent(t, c, "nap")
	if e.Kind != "sandbox.idle_hibernate" || !strings.HasPrefix(e.Message, "idle hibernate after 30m0s") || !strings.Contains(e.Message, "lease clock stops") {
		t.Fatalf("idle hibernate event %+v", e)
	}
	if e := lastEvent(t, c, "off"); e.Kind != "sandbox.idle_stop" || !strings.HasPrefix(e.Message, "idle stop after 30m0s") {
		t.Fatalf("idle stop event %+v", e)
	}
	// Asleep for an hour: nothing acts on it, and its lease moves on by that.
	clk.Add(time.Hour)
	if err := d.Manager.IdleStop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Manager.LeaseGC(ctx); err != nil {
		t.Fatal(err)
	}
	if state(t, c, "nap") != api.StateSuspended {
		t.Fatalf("a hibernated sandbox became %s", state(t, c, "nap"))
	}
	if _, err := c.Resume(ctx, "nap"); err != nil {
		t.Fatal(err)
	}
	got, err := c.WaitSandbox(ctx, "nap", 10*time.Millisecond)
	if err != nil || got.State != api.StateRunning || got.IP != nap.IP || got.PausedAt != nil {
		t.Fatalf("resumed: %+v %v", got, err)
	}
	if want := leaseBefore.Add(time.Hour); !got.LeaseExpiresAt.Equal(want) {
		t.Fatalf("lease after an hour hibernated: %s, want %s (before: %s)", got.LeaseExpiresAt, want, leaseBefore)
	}
	_, err = c.Resume(ctx, "off")
	wantCode(t, err, 409, api.CodeInvalidState)
	if !strings.Contains(err.Error(), "agentd sandbox start off") {
		t.Fatalf("resume of a stopped sandbox: %v", err)
	}
}
