package agent_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
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
}

var _ = context.Background
