package pvesim_test

import (
	"context"
	"strings"
	"testing"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"
)

func waitOK(t *testing.T, task *proxmox.Task, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	// Task.Wait returns nil for a failed task too (pveapi.md §3.2).
	if err := task.Wait(context.Background(), 10*time.Millisecond, 10*time.Second); err != nil || !task.IsSuccessful {
		t.Fatalf("task %s: %v %s", task.UPID, err, task.ExitStatus)
	}
}

// Firewall rules through go-proxmox's higher-level calls: security groups
// and their rules by position (pve-firewall API2/Firewall/Groups.pm, Rules.pm:
// create inserts at the top, update and delete by pos), VM rules.
//
// go-proxmox's FirewallRule.Get decodes "pos" as an int, while PVE's get_rule
// copies the path parameter, a JSON string ("pos":"0"): against PVE and the
// simulator alike that call fails to decode. The simulator keeps PVE's type.
func TestGoProxmoxFirewallRules(t *testing.T) {
	sim := newSim(t)
	ctx := context.Background()
	c := goClient(t, sim)
	cl, err := c.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.NewFWGroup(ctx, &proxmox.FirewallSecurityGroup{Group: "web", Comment: "front"}); err != nil {
		t.Fatal(err)
	}
	g, err := cl.FWGroup(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*proxmox.FirewallRule{
		{Type: "in", Action: "ACCEPT", Proto: "tcp", Dport: "22", Enable: 1},
		{Type: "in", Action: "DROP", Comment: "last resort"},
	} {
		if err := g.RuleCreate(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	rules, err := g.GetRules(ctx)
	if err != nil || len(rules) != 2 {
		t.Fatalf("rules %v %v", rules, err)
	}
	// Inserted at the top: the DROP created last is at pos 0; disabled
	// unless enable=1 was sent.
	if rules[0].Action != "DROP" || rules[0].Pos != 0 || rules[0].Enable != 0 || rules[1].Dport != "22" || rules[1].Pos != 1 || !rules[1].IsEnable() {
		t.Fatalf("rules %+v %+v", *rules[0], *rules[1])
	}
	upd := *rules[1]
	upd.Comment = "ssh"
	if err := g.RuleUpdate(ctx, &upd); err != nil {
		t.Fatal(err)
	}
	if err := g.RuleDelete(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if rules, err = g.GetRules(ctx); err != nil || len(rules) != 1 || rules[0].Comment != "ssh" || rules[0].Pos != 0 {
		t.Fatalf("after update and delete: %v %v", rules, err)
	}
	if err := g.RuleDelete(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := g.Delete(ctx); err != nil {
		t.Fatal(err)
	}

	// VM rules.
	node, err := c.Node(ctx, "pve")
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := node.VirtualMachine(ctx, 9000)
	if err != nil {
		t.Fatal(err)
	}
	_, task, err := tmpl.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 100, Name: "fw"})
	waitOK(t, task, err)
	vm, err := node.VirtualMachine(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.NewFirewallRule(ctx, &proxmox.FirewallRule{Type: "out", Action: "REJECT", Dest: "10.0.0.0/8", Enable: 1}); err != nil {
		t.Fatal(err)
	}
	vmRules, err := vm.FirewallRules(ctx)
	if err != nil || len(vmRules) != 1 || vmRules[0].Dest != "10.0.0.0/8" || vmRules[0].Pos != 0 {
		t.Fatalf("VM rules %v %v", vmRules, err)
	}
	err = vm.FirewallRule(0).Get(ctx)
	if err == nil || !strings.Contains(err.Error(), "cannot unmarshal string") {
		t.Fatalf("GetRule: want go-proxmox's decode error for PVE's string pos, got %v", err)
	}
	r := vmRules[0]
	r.Comment = "no private nets"
	if err := r.Update(ctx); err != nil {
		t.Fatal(err)
	}
	if vmRules, _ = vm.FirewallRules(ctx); vmRules[0].Comment != "no private nets" {
		t.Fatalf("after update %+v", *vmRules[0])
	}
	if err := vmRules[0].Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if vmRules, _ = vm.FirewallRules(ctx); len(vmRules) != 0 {
		t.Fatalf("after delete %v", vmRules)
	}
}

// Snapshots through go-proxmox: create, list (with PVE's "current" entry),
// config, description update, rollback and delete, each a task
// (API2/Qemu.pm snapshot, snapshot_list, update_snapshot_config, rollback,
// delsnapshot).
func TestGoProxmoxSnapshots(t *testing.T) {
	sim := newSim(t)
	ctx := context.Background()
	c := goClient(t, sim)
	node, err := c.Node(ctx, "pve")
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := node.VirtualMachine(ctx, 9000)
	if err != nil {
		t.Fatal(err)
	}
	_, task, err := tmpl.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 101, Name: "snap", Full: proxmox.IntOrBool(true), Storage: "local-zfs"})
	waitOK(t, task, err)
	vm, err := node.VirtualMachine(ctx, 101)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.WriteFile("local-zfs:vm-101-disk-0", "/f", "before"); err != nil {
		t.Fatal(err)
	}
	task, err = vm.NewSnapshot(ctx, "s1")
	waitOK(t, task, err)
	if err := sim.WriteFile("local-zfs:vm-101-disk-0", "/f", "after"); err != nil {
		t.Fatal(err)
	}
	snaps, err := vm.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]*proxmox.VirtualMachineSnapshot{}
	for _, s := range snaps {
		names[s.Name] = s
	}
	if len(snaps) != 2 || names["s1"] == nil || names["current"] == nil || names["current"].Parent != "s1" || names["s1"].Snaptime == 0 {
		t.Fatalf("snapshots %v", snaps)
	}
	cfg, err := vm.Snapshot("s1").Config(ctx)
	if err != nil || cfg["name"] != "snap" {
		t.Fatalf("snapshot config %v %v", cfg, err)
	}
	if err := vm.Snapshot("s1").UpdateConfig(ctx, &proxmox.VirtualMachineSnapshotUpdateOptions{Description: "baseline"}); err != nil {
		t.Fatal(err)
	}
	if snaps, _ = vm.Snapshots(ctx); !hasSnapshot(snaps, "s1", "baseline") {
		t.Fatalf("description not updated: %v", snaps)
	}
	task, err = vm.Snapshot("s1").Rollback(ctx)
	waitOK(t, task, err)
	if got, _, _ := sim.ReadFile("local-zfs:vm-101-disk-0", "/f"); got != "before" {
		t.Fatalf("after rollback the disk has %q", got)
	}
	task, err = vm.Snapshot("s1").Delete(ctx)
	waitOK(t, task, err)
	if snaps, _ = vm.Snapshots(ctx); len(snaps) != 1 || snaps[0].Name != "current" {
		t.Fatalf("after delete %v", snaps)
	}
}

func hasSnapshot(snaps []*proxmox.VirtualMachineSnapshot, name, desc string) bool {
	for _, s := range snaps {
		if s.Name == name && s.Description == desc {
			return true
		}
	}
	return false
}
