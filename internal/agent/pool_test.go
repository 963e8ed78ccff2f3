package agent_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
	"github.com/agentlab/terraform-provider-agentlab/internal/sandbox"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

const poolProfile = "yolo-ephemeral"

func intp(n int) *int { return &n }

// setPool overrides the pool of poolProfile and waits until ready members
// are POOLED.
func setPool(t testing.TB, c *client.Client, minReady, max int) {
	t.Helper()
	if _, err := c.SetPool(tctx(t), poolProfile, api.SetPoolRequest{MinReady: intp(minReady), Max: intp(max)}); err != nil {
		t.Fatal(err)
	}
	waitReady(t, c, minReady)
}

// waitReady waits (bounded, not timed) until the pool reports n ready.
func waitReady(t testing.TB, c *client.Client, n int) *api.Pool {
	t.Helper()
	ctx := tctx(t)
	for {
		p, err := c.Pool(ctx, poolProfile)
		if err != nil {
			t.Fatal(err)
		}
		if p.Ready >= n && p.Building == 0 {
			return p
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pool never reached %d ready: %+v", n, p)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// pooledRows are the unclaimed members in the store.
func pooledRows(t testing.TB, d *agent.Dev) []*store.Sandbox {
	t.Helper()
	rows, err := d.Store.Sandboxes(tctx(t), store.Filter{States: []api.State{api.StatePooled}})
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestPoolFillsAndClaims: the pool fills to min_ready with VMs that run,
// answer their guest agent on an assigned address and hold nothing secret;
// a create takes one (RUNNING with the requested name, hostname, tags and a
// bootstrap token only now), the pool refills, and the list shows only the
// user's sandbox.
func TestPoolFillsAndClaims(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	setPool(t, c, 3, 5)
	members := pooledRows(t, d)
	if len(members) != 3 {
		t.Fatalf("%d pooled rows, want 3", len(members))
	}
	pooled := map[int]string{}
	for _, sb := range members {
		if sb.IP == "" || sb.LeaseExpiresAt != nil || sb.TTLSeconds != 0 {
			t.Errorf("member %s: ip %q lease %v ttl %d; want an address, no lease", sb.ID, sb.IP, sb.LeaseExpiresAt, sb.TTLSeconds)
		}
		var n int
		if err := d.Store.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM tokens WHERE sandbox_id=?`, sb.ID).Scan(&n); err != nil || n != 0 {
			t.Errorf("member %s holds %d tokens (err %v)", sb.ID, n, err)
		}
		v := vms(d)[sb.VMID]
		if !v.Running || v.Agent != "running" && v.Agent != "" {
			t.Errorf("member VM %d: running %v agent %q", sb.VMID, v.Running, v.Agent)
		}
		if !strings.Contains(v.Config["description"], "agentlab-pool: "+poolProfile) || !strings.Contains(v.Config["tags"], "agentlab-pool") {
			t.Errorf("member VM %d lacks the pool marker: %q tags %q", sb.VMID, v.Config["description"], v.Config["tags"])
		}
		if _, ok := d.Sim.GuestFile(sb.VMID, sandbox.BootstrapPath); ok {
			t.Errorf("member VM %d has a bootstrap file", sb.VMID)
		}
		pooled[sb.VMID] = sb.ID
	}
	if l, err := c.Sandboxes(ctx, nil); err != nil || len(l) != 0 {
		t.Fatalf("list shows pool members: %v %v", l, err)
	}
	if st, err := c.Status(ctx); err != nil || st.Sandboxes[api.StatePooled] != 3 {
		t.Fatalf("status counts %v pooled (%v), want 3", st.Sandboxes, err)
	}
	if body := scrape(t, d.Info.Metrics); !strings.Contains(body, `agentd_sandboxes{state="POOLED"} 3`) {
		t.Fatalf("metrics do not count the pool: %s", body)
	}

	sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "warm-one", Profile: poolProfile, Tags: []string{"team-a"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := pooled[sb.VMID]; !ok || sb.ID != pooled[sb.VMID] {
		t.Fatalf("create got VMID %d id %s, not a pooled member %v", sb.VMID, sb.ID, pooled)
	}
	sb, err = c.WaitSandbox(ctx, sb.ID, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if sb.State != api.StateRunning || sb.Name != "warm-one" || sb.LeaseExpiresAt == nil {
		t.Fatalf("claimed sandbox: %+v", sb)
	}
	v := vms(d)[sb.VMID]
	if v.Config["name"] != "warm-one" || strings.Contains(v.Config["description"], "agentlab-pool") ||
		!strings.Contains(v.Config["description"], "agentlab-sandbox-id: "+sb.ID) || !strings.Contains(v.Config["tags"], "team-a") ||
		strings.Contains(v.Config["tags"], "agentlab-pool") {
		t.Fatalf("claimed VM config: name %q tags %q description %q", v.Config["name"], v.Config["tags"], v.Config["description"])
	}
	if h, _ := d.Sim.GuestFile(sb.VMID, "/etc/hostname"); strings.TrimSpace(string(h)) != "warm-one" {
		t.Fatalf("guest hostname %q, want warm-one", h)
	}
	if _, ok := d.Sim.GuestFile(sb.VMID, sandbox.BootstrapPath); !ok {
		t.Fatalf("claimed VM has no bootstrap file")
	}
	p := waitReady(t, c, 3)
	if p.Claimed != 1 || p.Ready != 3 {
		t.Fatalf("pool after a claim: %+v", p)
	}
	if l, err := c.Sandboxes(ctx, nil); err != nil || len(l) != 1 || l[0].Name != "warm-one" {
		t.Fatalf("list: %v %v", l, err)
	}
	// A retry of the same create is the same sandbox, a different one a 409.
	again, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "warm-one", Profile: poolProfile, Tags: []string{"team-a"}})
	if err != nil || again.ID != sb.ID {
		t.Fatalf("retry: %v %+v", err, again)
	}
	_, err = c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "warm-one", Profile: poolProfile})
	wantCode(t, err, 409, api.CodeConflict)
	if n := len(pooledRows(t, d)); n != 3 {
		t.Fatalf("%d pooled after the retries, want 3", n)
	}
}

// TestPoolConcurrentClaims: many creates racing for few members and the
// refill: each member goes to one create, the rest are created cold, none
// fails, and every VM belongs to exactly one row.
func TestPoolConcurrentClaims(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	setPool(t, c, 4, 4)
	const n = 16
	var wg sync.WaitGroup
	got := make([]*api.Sandbox, n)
	errs := make([]error, n)
	// The pool loop runs on and on meanwhile: refills race the claims.
	stop := make(chan struct{})
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		for {
			select {
			case <-stop:
				return
			default:
				_ = d.Loops.RunNow(ctx, "pool")
			}
		}
	}()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: fmt.Sprintf("race-%d", i), Profile: poolProfile})
			if err == nil {
				sb, err = c.WaitSandbox(ctx, sb.ID, 10*time.Millisecond)
			}
			got[i], errs[i] = sb, err
		}(i)
	}
	wg.Wait()
	close(stop)
	<-loopDone
	vmids := map[int]string{}
	for i, sb := range got {
		if errs[i] != nil {
			t.Fatalf("create %d: %v", i, errs[i])
		}
		if sb.State != api.StateRunning {
			t.Fatalf("create %d: %s (%s)", i, sb.State, sb.Error)
		}
		if other, dup := vmids[sb.VMID]; dup {
			t.Fatalf("VM %d handed to %s and %s", sb.VMID, other, sb.Name)
		}
		vmids[sb.VMID] = sb.Name
	}
	p := waitReady(t, c, 4)
	if p.Claimed < 1 || p.Claimed > n {
		t.Fatalf("claimed %d", p.Claimed)
	}
	// Every VM in the simulator is one row's: n sandboxes plus the pool.
	rows, _ := d.Store.Sandboxes(ctx, store.Filter{})
	byVM := map[int]bool{}
	for _, sb := range rows {
		if sb.VMID != 0 {
			byVM[sb.VMID] = true
		}
	}
	for id := range vms(d) {
		if !byVM[id] {
			t.Errorf("VM %d belongs to no row", id)
		}
	}
	if len(vms(d)) != n+4 {
		t.Errorf("%d VMs, want %d", len(vms(d)), n+4)
	}
	poolInvariants(t, d)
}

// TestPoolClaimRacesShrink: creates race the pool loop destroying the
// members an override just made surplus (max 0): every member ends either
// claimed (its sandbox RUNNING on it) or destroyed, never both.
func TestPoolClaimRacesShrink(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	setPool(t, c, 6, 6)
	members := pooledRows(t, d)
	var wg sync.WaitGroup
	const n = 6
	got := make([]*api.Sandbox, n)
	errs := make([]error, n)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := c.SetPool(ctx, poolProfile, api.SetPoolRequest{MinReady: intp(0), Max: intp(0)}); err != nil {
			t.Error(err)
		}
		_ = d.Loops.RunNow(ctx, "pool")
	}()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: fmt.Sprintf("shrink-%d", i), Profile: poolProfile})
			if err == nil {
				sb, err = c.WaitSandbox(ctx, sb.ID, 10*time.Millisecond)
			}
			got[i], errs[i] = sb, err
		}(i)
	}
	wg.Wait()
	// Members a refill started before the override still build; the pool
	// loop retires them once they are ready.
	for len(liveMembers(t, d)) > 0 {
		_ = d.Loops.RunNow(ctx, "pool")
		if ctx.Err() != nil {
			t.Fatalf("members left in a pool of max 0: %v", liveMembers(t, d))
		}
		time.Sleep(5 * time.Millisecond)
	}
	claimed := map[string]bool{}
	for i, sb := range got {
		if errs[i] != nil || sb.State != api.StateRunning {
			t.Fatalf("create %d: %+v %v", i, sb, errs[i])
		}
		claimed[sb.ID] = true
	}
	for _, m := range members {
		row, err := d.Store.Sandbox(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case claimed[m.ID] && row.State != api.StateRunning:
			t.Errorf("member %s claimed but %s", m.ID, row.State)
		case !claimed[m.ID] && row.State != api.StateDestroyed:
			t.Errorf("member %s neither claimed nor destroyed: %s", m.ID, row.State)
		}
	}
	poolInvariants(t, d)
}

// liveMembers are the unclaimed members not DESTROYED, in any state.
func liveMembers(t testing.TB, d *agent.Dev) []string {
	rows, err := d.Store.Sandboxes(tctx(t), store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, sb := range rows {
		if sandbox.IsPoolMember(sb) {
			out = append(out, sb.ID+"/"+string(sb.State))
		}
	}
	return out
}

// TestPoolClaimRefusesPlantedVM: a VM put at a pooled member's VMID behind
// agentd's back (every kind of plant the ownership tests know) is never
// renamed, configured or destroyed by a claim: the create goes cold on a
// VM of its own and reports RUNNING.
func TestPoolClaimRefusesPlantedVM(t *testing.T) {
	for _, p := range allPlants {
		t.Run(string(p), func(t *testing.T) {
			o := newRig(t)
			ctx := tctx(t)
			setPool(t, o.c, 1, 1)
			m := pooledRows(t, o.d)[0]
			o.plantAt(p, owner.Sandbox, m.ID, m.Name, m.VMID)
			before := vms(o.d)[m.VMID]
			sb, err := o.c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "claimer", Profile: poolProfile})
			if err != nil {
				t.Fatal(err)
			}
			sb, err = o.c.WaitSandbox(ctx, sb.ID, 10*time.Millisecond)
			if err != nil || sb.State != api.StateRunning {
				t.Fatalf("create: %+v %v", sb, err)
			}
			if sb.VMID == m.VMID {
				t.Fatalf("the sandbox runs on the planted VM %d", m.VMID)
			}
			after, ok := vms(o.d)[m.VMID]
			if !ok || fmt.Sprint(after.Config) != fmt.Sprint(before.Config) || after.Running != before.Running {
				t.Fatalf("planted VM %d changed:\nbefore %v\nafter  %v (exists %v)", m.VMID, before.Config, after.Config, ok)
			}
			if !o.hasEvent(store.EventFilter{SandboxID: sb.ID}, 0, "sandbox.claim_failed") {
				t.Fatalf("no sandbox.claim_failed event")
			}
		})
	}
}

// TestPoolReplacesOutdatedMembers: members built from an older version of
// the profile are destroyed and rebuilt with the new one; members whose
// guest agent stops answering are replaced too.
func TestPoolReplacesOutdatedMembers(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	setPool(t, c, 2, 2)
	old := map[string]bool{}
	for _, sb := range pooledRows(t, d) {
		old[sb.ID] = true
	}
	file := filepath.Join(d.Config.ProfilesDir, poolProfile+".yaml")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(strings.Replace(string(b), "memory_mb: 6144", "memory_mb: 4096", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	c = tcpClient(t, d, d.Info.Token)
	if err := d.Loops.RunNow(ctx, "pool"); err != nil {
		t.Logf("pool loop: %v", err)
	}
	waitReady(t, c, 2)
	// VMIDs are reused (nextid is the lowest free): members are told apart
	// by their ids, and the old ones must be DESTROYED rows.
	for _, sb := range pooledRows(t, d) {
		if old[sb.ID] {
			t.Errorf("member %s of the old profile version is still pooled", sb.ID)
		}
		if mem := vms(d)[sb.VMID].Config["memory"]; mem != "4096" {
			t.Errorf("member VM %d has memory %s, want the new profile's 4096", sb.VMID, mem)
		}
	}
	for id := range old {
		if row, err := d.Store.Sandbox(ctx, id); err != nil || row.State != api.StateDestroyed {
			t.Errorf("old member %s: %+v %v, want DESTROYED", id, row, err)
		}
	}
	// Unhealthy: the guest agent of one member stops answering.
	sick := pooledRows(t, d)[0]
	if err := d.Sim.SetAgent(sick.VMID, pvesim.AgentNotRunning); err != nil {
		t.Fatal(err)
	}
	if err := d.Loops.RunNow(ctx, "pool"); err != nil {
		t.Logf("pool loop: %v", err)
	}
	waitReady(t, c, 2)
	if row, err := d.Store.Sandbox(ctx, sick.ID); err != nil || row.State != api.StateDestroyed {
		t.Errorf("member %s with a silent guest agent was not replaced: %+v %v", sick.ID, row, err)
	}
}

// TestPoolClaimFailureGoesCold: a claim that fails part-way (the guest
// agent refuses the hostname) destroys the member's VM, never returns it to
// the pool, and the create ends RUNNING on a cold clone.
func TestPoolClaimFailureGoesCold(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	setPool(t, c, 1, 1)
	m := pooledRows(t, d)[0]
	// VMIDs are reused: a guest file tells the member's VM from a new one.
	if !d.Sim.SetGuestFile(m.VMID, "/member", []byte(m.ID)) {
		t.Fatal("no guest file")
	}
	if err := d.Sim.FailEndpointTimes("POST", `/agent/exec$`, 500, "guest agent exploded", 1); err != nil {
		t.Fatal(err)
	}
	sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "cold-after-all", Profile: poolProfile})
	if err != nil {
		t.Fatal(err)
	}
	sb, err = c.WaitSandbox(ctx, sb.ID, 10*time.Millisecond)
	if err != nil || sb.State != api.StateRunning {
		t.Fatalf("create: %+v %v", sb, err)
	}
	for id := range vms(d) {
		if b, ok := d.Sim.GuestFile(id, "/member"); ok {
			t.Fatalf("the failed member's VM survives as VM %d (%s)", id, b)
		}
	}
	for _, p := range pooledRows(t, d) {
		if p.VMID == m.VMID || p.ID == sb.ID {
			t.Fatalf("the failed member went back to the pool: %+v", p)
		}
	}
}

// TestPoolKillMidClaim: agentd dies while a claim is half done (the hostname
// written, its answer lost); on restart the resume finishes the claim. No VM
// is both pooled and claimed, none is lost or leaked.
func TestPoolKillMidClaim(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	setPool(t, c, 2, 2)
	if err := d.Sim.LoseReply("POST", `/agent/exec$`, 1, true); err != nil {
		t.Fatal(err)
	}
	sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "interrupted", Profile: poolProfile})
	if err != nil {
		t.Fatal(err)
	}
	waitStep(t, c, sb.ID, func(s *api.Sandbox) bool {
		h, _ := d.Sim.GuestFile(s.VMID, "/etc/hostname")
		return s.Step == "claim" && strings.TrimSpace(string(h)) == "interrupted"
	})
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	c = tcpClient(t, d, d.Info.Token)
	got, err := c.WaitSandbox(ctx, sb.ID, 10*time.Millisecond)
	if err != nil || got.State != api.StateRunning || got.VMID != sb.VMID {
		t.Fatalf("after restart: %+v %v (claimed VM %d)", got, err, sb.VMID)
	}
	poolInvariants(t, d)
}

// poolInvariants: every VM is one row's; no pooled row shares its VM with
// another row; pooled rows hold no token and no lease.
func poolInvariants(t *testing.T, d *agent.Dev) {
	t.Helper()
	rows, err := d.Store.Sandboxes(tctx(t), store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	owners := map[int][]string{}
	for _, sb := range rows {
		if sb.VMID != 0 {
			owners[sb.VMID] = append(owners[sb.VMID], sb.ID+"/"+string(sb.State))
		}
		if sb.State == api.StatePooled && (sb.LeaseExpiresAt != nil || sb.Name != sb.ID) {
			t.Errorf("pooled row %s has a lease or a user name: %+v", sb.ID, sb)
		}
	}
	for id, o := range owners {
		if len(o) > 1 {
			t.Errorf("VM %d belongs to %v", id, o)
		}
	}
	for id := range vms(d) {
		if len(owners[id]) == 0 {
			t.Errorf("VM %d belongs to no row (leaked)", id)
		}
	}
	for id, o := range owners {
		if _, ok := vms(d)[id]; !ok {
			t.Errorf("row %v has no VM %d (lost)", o, id)
		}
	}
}

// TestPoolClaimHotplugsWorkspace: a create with a workspace takes a member
// and plugs the workspace into the running VM; the sandbox ends with the
// full configuration a cold create gives.
func TestPoolClaimHotplugsWorkspace(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	if _, err := c.SetPool(ctx, "yolo-workspace", api.SetPoolRequest{MinReady: intp(1), Max: intp(1)}); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := c.Pool(ctx, "yolo-workspace")
		if err != nil {
			t.Fatal(err)
		}
		if p.Ready == 1 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	member := pooledRows(t, d)[0]
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "data", Size: "2G"}); err != nil {
		t.Fatal(err)
	}
	vol := holderVol(t, d, c, "data")
	sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "warm-ws", Profile: "yolo-workspace", Workspace: "data"})
	if err != nil {
		t.Fatal(err)
	}
	if sb, err = c.WaitSandbox(ctx, sb.ID, 10*time.Millisecond); err != nil || sb.State != api.StateRunning {
		t.Fatalf("create: %+v %v", sb, err)
	}
	if sb.ID != member.ID {
		t.Fatalf("create did not claim member %s (got %s)", member.ID, sb.ID)
	}
	fullConfig(t, d, sb, 30, vol)
	if w, err := c.Workspace(ctx, "data"); err != nil || w.AttachedSandbox != sb.Name && w.AttachedSandbox != sb.ID {
		t.Fatalf("workspace: %+v %v", w, err)
	}
}

// TestPoolNotForOtherResources: a create that overrides the profile's cores
// or memory is never served by a pool member (which booted with the
// profile's): it is a cold create with its own resources, and the pool
// keeps its members.
func TestPoolNotForOtherResources(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	setPool(t, c, 2, 2)
	before := map[int]bool{}
	for _, sb := range pooledRows(t, d) {
		before[sb.VMID] = true
	}
	c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "bigger", Profile: poolProfile, Cores: 7, MemoryMB: 4096})
	sb, err := c.WaitSandbox(ctx, "bigger", time.Millisecond)
	if err != nil || sb.State != api.StateRunning || sb.Cores != 7 || sb.MemoryMB != 4096 {
		t.Fatalf("create with overrides: %+v %v", sb, err)
	}
	if before[sb.VMID] || hasKind(t, c, "bigger", "sandbox.claimed") {
		t.Fatalf("a create with its own cores took pool member VM %d", sb.VMID)
	}
	if cfg := vms(d)[sb.VMID].Config; cfg["cores"] != "7" || cfg["memory"] != "4096" {
		t.Fatalf("VM config %v", cfg)
	}
	if n := len(pooledRows(t, d)); n != 2 {
		t.Fatalf("%d pool members left, want 2", n)
	}
}
