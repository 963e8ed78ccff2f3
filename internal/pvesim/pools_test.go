package pvesim_test

import (
	"context"
	"strings"
	"testing"

	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

func goClient(t *testing.T, sim *pvesim.Sim) *proxmox.Client {
	t.Helper()
	id, secret := sim.Token()
	return proxmox.NewClient(sim.URL(), proxmox.WithAPIToken(id, secret),
		proxmox.WithHTTPClient(httpClient(sim)))
}

// Pools follow pve-manager PVE/API2/Pool.pm (index, create_pool, update_pool,
// delete_pool, errors prefixed by lock_user_config) and API2/Cluster.pm's
// resources (pool entries, "pool" on member VMs), driven through go-proxmox.
func TestPoolsLikePVE(t *testing.T) {
	sim := newSim(t)
	ctx := context.Background()
	c := goClient(t, sim)
	if err := c.NewPool(ctx, "team", "agents"); err != nil {
		t.Fatal(err)
	}
	if err := c.NewPool(ctx, "team", ""); err == nil || !strings.Contains(err.Error(), "500 create pool failed: pool 'team' already exists") {
		t.Fatalf("duplicate pool: %v", err)
	}
	p, err := c.Pool(ctx, "team")
	if err != nil || p.Comment != "agents" || len(p.Members) != 0 {
		t.Fatalf("pool %+v %v", p, err)
	}
	if err := p.Update(ctx, &proxmox.PoolUpdateOption{VirtualMachines: "9000", Storage: "local-lvm"}); err != nil {
		t.Fatal(err)
	}
	if err := p.Update(ctx, &proxmox.PoolUpdateOption{VirtualMachines: "9000"}); err == nil || err.Error() != "500 update pools failed: VM 9000 is already a pool member" {
		t.Fatalf("re-add: %v", err)
	}
	p, _ = c.Pool(ctx, "team")
	if len(p.Members) != 2 || p.Members[0].ID != "qemu/9000" || p.Members[1].Storage != "local-lvm" {
		t.Fatalf("members %+v", p.Members)
	}
	cl, err := c.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := cl.Resources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sawPool, sawMember bool
	for _, r := range rs {
		sawPool = sawPool || r.Type == "pool" && r.Pool == "team" && r.ID == "/pool/team"
		sawMember = sawMember || r.VMID == 9000 && r.Pool == "team"
	}
	if !sawPool || !sawMember {
		t.Fatalf("cluster resources lack the pool or its member: %+v", rs)
	}
	if err := p.Delete(ctx); err == nil || err.Error() != "500 delete pool failed: pool 'team' is not empty (contains VM 9000)" {
		t.Fatalf("delete non-empty: %v", err)
	}
	if err := p.Update(ctx, &proxmox.PoolUpdateOption{VirtualMachines: "9000", Storage: "local-lvm", Delete: true}); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Pool(ctx, "team"); err == nil || err.Error() != "500 pool 'team' does not exist" {
		t.Fatalf("deleted pool: %v", err)
	}
}
