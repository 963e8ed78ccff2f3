package pvesim_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

func newCluster(t *testing.T, n int, mod func(*pvesim.Options)) *pvesim.Sim {
	t.Helper()
	o := pvesim.Options{Fixtures: true, Nodes: pvesim.NodeNames(n)}
	if mod != nil {
		mod(&o)
	}
	sim, err := pvesim.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	return sim
}

func data[T any](t *testing.T, body string) T {
	t.Helper()
	var r struct{ Data T }
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("%v in %s", err, body)
	}
	return r.Data
}

// taskLog returns a task's log lines.
func taskLog(t *testing.T, sim *pvesim.Sim, node, upid string) string {
	t.Helper()
	body := mustOK(t, sim, "GET", "/nodes/"+node+"/tasks/"+upid+"/log?limit=500", "")
	var lines []string
	for _, l := range data[[]struct{ T string }](t, body) {
		lines = append(lines, l.T)
	}
	return strings.Join(lines, "\n")
}

// get_status (PVE::API2::Cluster) in cluster form, /nodes and
// /cluster/resources with node entries, shared storages per node.
func TestClusterStatusAndResources(t *testing.T) {
	sim := newCluster(t, 3, nil)
	ctx := context.Background()
	c := goClient(t, sim)
	cl, err := c.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cl.Name != "pvesim" || cl.Quorate != 1 || cl.Version != 3 || len(cl.Nodes) != 3 {
		t.Fatalf("cluster %+v", cl)
	}
	for i, n := range cl.Nodes {
		if n.Name != pvesim.NodeNames(3)[i] || n.Online != 1 || n.IP == "" || (n.Local == 1) != (i == 0) {
			t.Errorf("node %d: %+v", i, n)
		}
	}
	// go-proxmox does not decode nodeid; corosync numbers the nodes from 1.
	for i, n := range data[[]map[string]any](t, mustOK(t, sim, "GET", "/cluster/status", ""))[1:] {
		if n["nodeid"] != float64(i+1) || n["type"] != "node" {
			t.Errorf("status entry %v", n)
		}
	}
	nodes, err := c.Nodes(ctx)
	if err != nil || len(nodes) != 3 || nodes[2].Node != "pve3" || nodes[2].Status != "online" || nodes[2].MaxMem == 0 {
		t.Fatalf("nodes %v %+v", err, nodes)
	}
	rs, err := cl.Resources(ctx, "node")
	if err != nil || len(rs) != 3 {
		t.Fatalf("resources %v %d", err, len(rs))
	}
	for _, r := range rs {
		if r.Type != "node" || r.Status != "online" || r.MaxMem == 0 || r.MaxCPU == 0 || r.Uptime == 0 {
			t.Errorf("node resource %+v", r)
		}
	}
	rs, err = cl.Resources(ctx, "storage")
	if err != nil {
		t.Fatal(err)
	}
	shared := 0
	for _, r := range rs {
		if r.Storage == pvesim.SharedStorageID {
			shared++
			if r.Shared != 1 || r.PluginType != "nfs" || r.ID != "storage/"+r.Node+"/shared" {
				t.Errorf("shared storage resource %+v", r)
			}
		} else if r.Shared != 0 {
			t.Errorf("local storage %s shared", r.ID)
		}
	}
	if shared != 3 {
		t.Errorf("shared storage listed %d times, want once per node", shared)
	}
	body := mustOK(t, sim, "GET", "/nodes/pve2/storage", "")
	for _, st := range data[[]map[string]any](t, body) {
		if st["storage"] == "shared" && (st["shared"] != 1.0 || st["type"] != "nfs") {
			t.Errorf("/nodes/pve2/storage shared: %v", st)
		}
	}
	// The template exists once, on the first node.
	rs, _ = cl.Resources(ctx, "vm")
	if len(rs) != 1 || rs[0].Node != "pve1" || rs[0].VMID != pvesim.FixtureTemplateID {
		t.Fatalf("vms %+v", rs)
	}
}

// A VM is found only on its own node: load_config elsewhere fails with the
// path of the node the request went to (PVE::AbstractConfig load_config).
func TestVMOnAnotherNode(t *testing.T) {
	sim := newCluster(t, 2, nil)
	status, body := raw(t, sim, "GET", "/nodes/pve2/qemu/9000/config", "", true)
	if status != "500 Configuration file 'nodes/pve2/qemu-server/9000.conf' does not exist" || !strings.Contains(body, `"data":null`) {
		t.Fatalf("%s %s", status, body)
	}
	status, _ = raw(t, sim, "GET", "/nodes/pve3/qemu/9000/config", "", true)
	if !strings.HasPrefix(status, "500 hostname lookup 'pve3' failed") {
		t.Fatalf("unknown node: %s", status)
	}
}

// clone_vm's target rules: only VMs wholly on shared storage clone to
// another node; a target storage must be shared and on the target.
func TestCloneToAnotherNode(t *testing.T) {
	sim := newCluster(t, 2, func(o *pvesim.Options) { o.TemplatePerNode = true })
	status, _ := raw(t, sim, "POST", "/nodes/pve1/qemu/9000/clone", `{"newid":200,"target":"pve2"}`, true)
	if status != "500 can't clone VM to node 'pve2' (VM uses local storage)" {
		t.Fatalf("linked to other node: %s", status)
	}
	status, _ = raw(t, sim, "POST", "/nodes/pve1/qemu/9000/clone", `{"newid":200,"target":"pve2","full":1,"storage":"local-lvm"}`, true)
	if status != "500 can't clone to non-shared storage 'local-lvm'" {
		t.Fatalf("full to local storage of other node: %s", status)
	}
	status, _ = raw(t, sim, "POST", "/nodes/pve1/qemu/9000/clone", `{"newid":200,"target":"pve9"}`, true)
	if status != "500 no such cluster node 'pve9'" {
		t.Fatalf("unknown target: %s", status)
	}
	// The per-node copy clones on its node; nextid is cluster-wide.
	if id := data[string](t, mustOK(t, sim, "GET", "/cluster/nextid", "")); id != "100" {
		t.Fatalf("nextid %s", id)
	}
	if st := waitTask(t, sim, mustOK(t, sim, "POST", "/nodes/pve2/qemu/9001/clone", `{"newid":100,"name":"n2"}`)); st != "OK" {
		t.Fatal(st)
	}
	if id := data[string](t, mustOK(t, sim, "GET", "/cluster/nextid", "")); id != "101" {
		t.Fatalf("nextid after a clone on pve2: %s", id)
	}
	status, body := raw(t, sim, "GET", "/cluster/nextid?vmid=100", "", true)
	if !strings.Contains(body, "VM 100 already exists") {
		t.Fatalf("checkid: %s %s", status, body)
	}
	if vm := sim.Dump().VMs[100]; vm.Node != "pve2" || !strings.HasPrefix(vm.Config["scsi0"], "local-lvm:base-9001-disk-0/vm-100-disk-0") &&
		!strings.HasPrefix(vm.Config["scsi0"], "local-lvm:vm-100-disk-0") {
		t.Fatalf("clone on pve2: %+v", vm)
	}

	// A template on the shared storage clones (linked) to any node.
	sim2 := newCluster(t, 2, func(o *pvesim.Options) { o.SharedTemplate = true })
	if st := waitTask(t, sim2, mustOK(t, sim2, "POST", "/nodes/pve1/qemu/9000/clone", `{"newid":150,"target":"pve2"}`)); st != "OK" {
		t.Fatal(st)
	}
	vm := sim2.Dump().VMs[150]
	if vm.Node != "pve2" || !strings.HasPrefix(vm.Config["scsi0"], "shared:9000/base-9000-disk-0.qcow2/150/vm-150-disk-0.qcow2") {
		t.Fatalf("shared linked clone: %+v", vm)
	}
	mustOK(t, sim2, "GET", "/nodes/pve2/qemu/150/config", "")
	status, _ = raw(t, sim2, "GET", "/nodes/pve1/qemu/150/config", "", true)
	if status != "500 Configuration file 'nodes/pve1/qemu-server/150.conf' does not exist" {
		t.Fatalf("clone left on pve1: %s", status)
	}
}

// Offline migration through go-proxmox: the config moves, local disks are
// copied to the target's storage of the same name (or targetstorage) and
// freed on the source, with lock "migrate" while the task runs.
func TestMigrateOffline(t *testing.T) {
	sim := newCluster(t, 2, func(o *pvesim.Options) {
		o.Durations.ByType = map[string]time.Duration{"qmigrate": 300 * time.Millisecond}
	})
	ctx := context.Background()
	c := goClient(t, sim)
	if st := waitTask(t, sim, mustOK(t, sim, "POST", "/nodes/pve1/qemu/9000/clone", `{"newid":200,"full":1}`)); st != "OK" {
		t.Fatal(st)
	}
	mustOK(t, sim, "PUT", "/nodes/pve1/qemu/200/config", `{"scsi1":"shared:1"}`)
	if err := sim.WriteFile("local-lvm:vm-200-disk-0", "/etc/hostname", "ws"); err != nil {
		t.Fatal(err)
	}
	node, err := c.Node(ctx, "pve1")
	if err != nil {
		t.Fatal(err)
	}
	vm, err := node.VirtualMachine(ctx, 200)
	if err != nil {
		t.Fatal(err)
	}
	pre := data[map[string]any](t, mustOK(t, sim, "GET", "/nodes/pve1/qemu/200/migrate?target=pve2", ""))
	disks, _ := pre["local_disks"].([]any)
	if pre["running"] != 0.0 || len(pre["allowed_nodes"].([]any)) != 1 || len(disks) != 2 ||
		disks[1].(map[string]any)["volid"] != "local-lvm:vm-200-disk-0" || disks[1].(map[string]any)["is_attached"] != 1.0 {
		t.Fatalf("preconditions %v", pre)
	}
	// go-proxmox decodes cdrom/is_unused as Go bools, while PVE sends the
	// 0/1 numbers foreach_volid sets: with local disks the call fails to
	// decode against PVE and the simulator alike.
	if _, err := vm.MigratePreconditions(ctx, "pve2"); err == nil || !strings.Contains(err.Error(), "cannot unmarshal number") {
		t.Errorf("go-proxmox MigratePreconditions: %v", err)
	}
	task, err := vm.Migrate(ctx, &proxmox.VirtualMachineMigrateOptions{Target: "pve2", TargetStorage: "local-lvm:local-zfs"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(task.UPID), "UPID:pve1:") || !strings.Contains(string(task.UPID), ":qmigrate:200:") {
		t.Fatalf("upid %s", task.UPID)
	}
	// The task's worker sets the lock once it runs (PVE's fork_worker
	// too returns the UPID before the child has locked anything).
	for i := 0; sim.Dump().VMs[200].Config["lock"] != "migrate" && i < 200; i++ {
		time.Sleep(time.Millisecond)
	}
	if l := sim.Dump().VMs[200].Config["lock"]; l != "migrate" {
		t.Errorf("lock while migrating: %q", l)
	}
	if st := data[map[string]any](t, mustOK(t, sim, "GET", "/nodes/pve1/qemu/200/status/current", "")); st["lock"] != "migrate" {
		t.Errorf("status/current while migrating: %v", st)
	}
	waitOK(t, task, nil)
	d := sim.Dump()
	got := d.VMs[200]
	if got.Node != "pve2" || got.Config["lock"] != "" {
		t.Fatalf("after migration: %+v", got)
	}
	if !strings.HasPrefix(got.Config["scsi0"], "local-zfs:vm-200-disk-0,") || !strings.HasPrefix(got.Config["scsi1"], "shared:200/vm-200-disk-0.qcow2,") {
		t.Fatalf("disks after migration: scsi0 %s scsi1 %s", got.Config["scsi0"], got.Config["scsi1"])
	}
	if _, ok := d.Volumes["local-lvm:vm-200-disk-0"]; ok {
		t.Error("source volume not freed")
	}
	if content, ok, err := sim.ReadFile("local-zfs:vm-200-disk-0", "/etc/hostname"); err != nil || !ok || content != "ws" {
		t.Errorf("content on the target: %q %v %v", content, ok, err)
	}
	log := taskLog(t, sim, "pve1", string(task.UPID))
	for _, want := range []string{"starting migration of VM 200 to node 'pve2' (127.0.0.2)",
		"found local disk 'local-lvm:vm-200-disk-0' (attached)",
		"volume 'local-lvm:vm-200-disk-0' is 'local-zfs:vm-200-disk-0' on the target",
		"migration finished successfully (duration 00:00:00)", "TASK OK"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	mustOK(t, sim, "GET", "/nodes/pve2/qemu/200/status/current", "")
	status, _ := raw(t, sim, "GET", "/nodes/pve1/qemu/200/status/current", "", true)
	if status != "500 Configuration file 'nodes/pve1/qemu-server/200.conf' does not exist" {
		t.Errorf("source after migration: %s", status)
	}
}

// migrate_vm's refusals and QemuMigrate's task errors, with PVE's texts.
func TestMigrateRefusals(t *testing.T) {
	sim := newCluster(t, 3, nil)
	mustClone := func(body string) {
		if st := waitTask(t, sim, mustOK(t, sim, "POST", "/nodes/pve1/qemu/9000/clone", body)); st != "OK" {
			t.Fatal(st)
		}
	}
	mustClone(`{"newid":300,"full":1}`)
	mustClone(`{"newid":301}`)
	cases := []struct{ name, path, body, status string }{
		{"target is source", "/nodes/pve1/qemu/300/migrate", `{"target":"pve1"}`, "400 Parameter verification failed."},
		{"unknown target", "/nodes/pve1/qemu/300/migrate", `{"target":"pve7"}`, "500 no such cluster node 'pve7'"},
		{"missing target", "/nodes/pve1/qemu/300/migrate", `{}`, "400 Parameter verification failed."},
		{"bad option", "/nodes/pve1/qemu/300/migrate", `{"target":"pve2","online":"maybe"}`, "400 Parameter verification failed."},
		{"VM elsewhere", "/nodes/pve2/qemu/300/migrate", `{"target":"pve3"}`, "500 Configuration file 'nodes/pve2/qemu-server/300.conf' does not exist"},
		{"target storage lacks images", "/nodes/pve1/qemu/300/migrate", `{"target":"pve2","targetstorage":"local"}`, "200 OK"},
	}
	for _, c := range cases {
		status, body := raw(t, sim, "POST", c.path, c.body, true)
		if status != c.status {
			t.Errorf("%s: %s %s", c.name, status, body)
		}
		if c.name == "target is source" && !strings.Contains(body, `"target":"target is local node."`) {
			t.Errorf("target is source: %s", body)
		}
		if c.status == "200 OK" {
			waitTask(t, sim, body)
		}
	}
	// Move 300 back so the rest starts on pve1 ("local" has images: fine).
	if vm := sim.Dump().VMs[300]; vm.Node == "pve2" {
		if st := waitTask(t, sim, mustOK(t, sim, "POST", "/nodes/pve2/qemu/300/migrate", `{"target":"pve1","targetstorage":"local-lvm"}`)); st != "OK" {
			t.Fatalf("back: %s", st)
		}
	}
	// A running VM needs online, its local disks with-local-disks.
	waitTask(t, sim, mustOK(t, sim, "POST", "/nodes/pve1/qemu/300/status/start", ""))
	status, _ := raw(t, sim, "POST", "/nodes/pve1/qemu/300/migrate", `{"target":"pve2"}`, true)
	if status != "500 can't migrate running VM without --online" {
		t.Errorf("running: %s", status)
	}
	body := mustOK(t, sim, "POST", "/nodes/pve1/qemu/300/migrate", `{"target":"pve2","online":1}`)
	if st := waitTask(t, sim, body); st != "migration aborted" {
		t.Errorf("online without with-local-disks: %s", st)
	}
	log := taskLog(t, sim, "pve1", data[string](t, body))
	if !strings.Contains(log, "can't migrate local disk 'local-lvm:vm-300-disk-0': can't live migrate attached local disks without with-local-disks option") ||
		!strings.Contains(log, "ERROR: migration aborted (duration 00:00:00): Problem found while scanning volumes - can't migrate VM - check log") {
		t.Errorf("log:\n%s", log)
	}
	if l := sim.Dump().VMs[300].Config["lock"]; l != "" {
		t.Errorf("lock left after a failed migration: %q", l)
	}
	// With it, a live migration keeps the VM running.
	if st := waitTask(t, sim, mustOK(t, sim, "POST", "/nodes/pve1/qemu/300/migrate", `{"target":"pve2","online":1,"with-local-disks":1}`)); st != "OK" {
		t.Fatalf("live: %s", st)
	}
	if vm := sim.Dump().VMs[300]; vm.Node != "pve2" || !vm.Running {
		t.Fatalf("after live migration: %+v", vm)
	}
	// A linked clone's disk needs its base, which stays behind.
	body = mustOK(t, sim, "POST", "/nodes/pve1/qemu/301/migrate", `{"target":"pve2"}`)
	if st := waitTask(t, sim, body); st != "migration aborted" {
		t.Errorf("linked clone: %s", st)
	}
	if log := taskLog(t, sim, "pve1", data[string](t, body)); !strings.Contains(log,
		"Problem found while scanning volumes - can't migrate 'local-lvm:vm-301-disk-0' as it's a clone of 'base-9000-disk-0'") {
		t.Errorf("linked clone log:\n%s", log)
	}
	// A storage the target does not have.
	if err := sim.AddVM("pve1", 302, map[string]string{"scsi0": "local-raw:1"}, false); err != nil {
		t.Fatal(err)
	}
	if err := sim.RestrictStorage("local-raw", "pve1"); err != nil {
		t.Fatal(err)
	}
	status, _ = raw(t, sim, "POST", "/nodes/pve1/qemu/302/migrate", `{"target":"pve3"}`, true)
	if status != "500 storage 'local-raw' is not available on node 'pve3'" {
		t.Errorf("storage missing on target: %s", status)
	}
	pre := data[map[string]any](t, mustOK(t, sim, "GET", "/nodes/pve1/qemu/302/migrate", ""))
	if na := pre["not_allowed_nodes"].(map[string]any); len(pre["allowed_nodes"].([]any)) != 0 ||
		na["pve3"].(map[string]any)["unavailable_storages"].([]any)[0] != "local-raw" {
		t.Errorf("preconditions with a missing storage: %v", pre)
	}
	// An offline target: prepare's ssh fails inside the task.
	if err := sim.SetNodeOnline("pve3", false); err != nil {
		t.Fatal(err)
	}
	body = mustOK(t, sim, "POST", "/nodes/pve1/qemu/302/migrate", `{"target":"pve3","targetstorage":"local-lvm"}`)
	if st := waitTask(t, sim, body); st != "migration aborted" {
		t.Errorf("offline target: %s", st)
	}
	if log := taskLog(t, sim, "pve1", data[string](t, body)); !strings.Contains(log, "Can't connect to destination address using public key") {
		t.Errorf("offline target log:\n%s", log)
	}
}

// A node that is offline: its API answers as pveproxy does for a node it
// cannot reach, the cluster lists it offline, its tasks wait, and back
// online everything continues.
func TestNodeOffline(t *testing.T) {
	sim := newCluster(t, 3, func(o *pvesim.Options) {
		o.TemplatePerNode = true
		o.Durations.ByType = map[string]time.Duration{"qmclone": 200 * time.Millisecond}
	})
	ctx := context.Background()
	c := goClient(t, sim)
	upid := data[string](t, mustOK(t, sim, "POST", "/nodes/pve2/qemu/9001/clone", `{"newid":400}`))
	if err := sim.SetNodeOnline("pve2", false); err != nil {
		t.Fatal(err)
	}
	status, body := raw(t, sim, "GET", "/nodes/pve2/tasks/"+upid+"/status", "", true)
	if status != "595 No route to host" || body != "" {
		t.Fatalf("offline node: %q %q", status, body)
	}
	cl, err := c.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cl.Quorate != 1 || cl.Nodes[1].Online != 0 || cl.Nodes[1].Status != "offline" {
		t.Fatalf("cluster with pve2 offline: %+v %+v", cl, cl.Nodes[1])
	}
	rs, err := cl.Resources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		switch {
		case r.Type == "node" && r.Node == "pve2":
			if r.Status != "offline" || r.MaxMem != 0 {
				t.Errorf("offline node resource %+v", r)
			}
		case r.Type == "qemu" && r.Node == "pve2":
			if r.Status != "unknown" || r.Name != "" {
				t.Errorf("VM on offline node %+v", r)
			}
		case r.Type == "storage" && r.Node == "pve2":
			if r.Status != "unknown" {
				t.Errorf("storage on offline node %+v", r)
			}
		case r.Type == "node":
			if r.Status != "online" {
				t.Errorf("node %+v", r)
			}
		}
	}
	time.Sleep(400 * time.Millisecond) // longer than the clone takes
	for _, task := range sim.Dump().Tasks {
		if task.UPID == upid && !task.Running {
			t.Fatalf("task on an offline node finished: %+v", task)
		}
	}
	// Losing a second node loses the quorum.
	if err := sim.SetNodeOnline("pve3", false); err != nil {
		t.Fatal(err)
	}
	if cl, _ := c.Cluster(ctx); cl.Quorate != 0 {
		t.Errorf("quorate with 1 of 3 nodes: %d", cl.Quorate)
	}
	status, _ = raw(t, sim, "POST", "/nodes/pve1/qemu/9000/migrate", `{"target":"pve2"}`, true)
	if status != "500 cluster not ready - no quorum?" {
		t.Errorf("migrate without quorum: %s", status)
	}
	for _, n := range []string{"pve2", "pve3"} {
		if err := sim.SetNodeOnline(n, true); err != nil {
			t.Fatal(err)
		}
	}
	if st := waitTask(t, sim, `{"data":"`+upid+`"}`); st != "OK" {
		t.Fatalf("task after the node came back: %s", st)
	}
	if vm := sim.Dump().VMs[400]; vm.Node != "pve2" {
		t.Fatalf("clone %+v", vm)
	}
	// The HTTP hook does the same.
	hook(t, sim, "node-online", `{"node":"pve3","on":false}`, nil)
	if status, _ := raw(t, sim, "GET", "/nodes/pve3/status", "", true); status != "595 No route to host" {
		t.Errorf("after the hook: %s", status)
	}
}

// SDN through go-proxmox: a VXLAN zone with peers, a VNet and a subnet are
// pending until PUT /cluster/sdn applies them; only then does the VNet
// serve as a bridge on the nodes.
func TestSDNPendingAndApply(t *testing.T) {
	sim := newCluster(t, 2, func(o *pvesim.Options) { o.TemplatePerNode = true })
	ctx := context.Background()
	c := goClient(t, sim)
	cl, err := c.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.NewSDNZone(ctx, &proxmox.SDNZoneOptions{Name: "agents", Type: "vxlan", Peers: "127.0.0.1,127.0.0.2", MTU: 1450}); err != nil {
		t.Fatal(err)
	}
	if err := cl.NewSDNZone(ctx, &proxmox.SDNZoneOptions{Name: "agents", Type: "vxlan", Peers: "127.0.0.1"}); err == nil ||
		err.Error() != "500 create sdn zone object failed: sdn zone object ID 'agents' already defined" {
		t.Errorf("duplicate zone: %v", err)
	}
	if err := cl.NewSDNVNet(ctx, &proxmox.VNetOptions{Name: "agentnet", Zone: "agents"}); err == nil ||
		!strings.HasPrefix(err.Error(), "500 create sdn vnet object failed: 400 Parameter verification failed.") {
		t.Errorf("vxlan vnet without tag: %v", err)
	}
	if err := cl.NewSDNVNet(ctx, &proxmox.VNetOptions{Name: "agentnet", Zone: "agents", Tag: 4242}); err != nil {
		t.Fatal(err)
	}
	mustOK(t, sim, "POST", "/cluster/sdn/vnets/agentnet/subnets", `{"subnet":"10.42.0.0/24","type":"subnet","gateway":"10.42.0.1","snat":1,"dhcp-range":["start-address=10.42.0.100,end-address=10.42.0.200"]}`)
	status, _ := raw(t, sim, "POST", "/cluster/sdn/vnets/agentnet/subnets", `{"subnet":"10.43.0.0/24","type":"subnet","gateway":"10.42.0.1"}`, true)
	if status != "500 create sdn subnet object failed: 400 Parameter verification failed." {
		t.Errorf("gateway outside: %s", status)
	}
	zones, err := cl.SDNZones(ctx)
	if err != nil || len(zones) != 1 || zones[0].Name != "agents" || zones[0].MTU != 1450 || len(zones[0].Peers) != 2 {
		t.Fatalf("zones %v %+v", err, zones)
	}
	pending := data[[]map[string]any](t, mustOK(t, sim, "GET", "/cluster/sdn/vnets?pending=1", ""))
	if len(pending) != 1 || pending[0]["state"] != "new" || pending[0]["pending"].(map[string]any)["tag"] != 4242.0 {
		t.Fatalf("pending vnets %v", pending)
	}
	if running := data[[]any](t, mustOK(t, sim, "GET", "/cluster/sdn/vnets?running=1", "")); len(running) != 0 {
		t.Fatalf("running before apply %v", running)
	}
	subnets, err := cl.SDNSubnets(ctx, "agentnet")
	if err != nil || len(subnets) != 1 || subnets[0].ID != "agents-10.42.0.0-24" || subnets[0].CIDR != "10.42.0.0/24" || subnets[0].Gateway != "10.42.0.1" ||
		len(subnets[0].DhcpRange) != 1 || subnets[0].DhcpRange[0].EndAddress != "10.42.0.200" {
		t.Fatalf("subnets %v %+v", err, subnets)
	}
	// A VM on the VNet does not start before the apply.
	if st := waitTask(t, sim, mustOK(t, sim, "POST", "/nodes/pve2/qemu/9001/clone", `{"newid":500}`)); st != "OK" {
		t.Fatal(st)
	}
	mustOK(t, sim, "PUT", "/nodes/pve2/qemu/500/config", `{"net0":"virtio,bridge=agentnet"}`)
	if st := waitTask(t, sim, mustOK(t, sim, "POST", "/nodes/pve2/qemu/500/status/start", "")); st != "bridge 'agentnet' does not exist" {
		t.Fatalf("start before apply: %s", st)
	}
	task, err := cl.SDNApply(ctx)
	waitOK(t, task, err)
	if !strings.Contains(string(task.UPID), ":reloadnetworkall:") {
		t.Errorf("apply upid %s", task.UPID)
	}
	pending = data[[]map[string]any](t, mustOK(t, sim, "GET", "/cluster/sdn/vnets?pending=1", ""))
	if len(pending) != 1 || pending[0]["state"] != nil || pending[0]["tag"] != 4242.0 {
		t.Fatalf("pending after apply %v", pending)
	}
	if st := waitTask(t, sim, mustOK(t, sim, "POST", "/nodes/pve2/qemu/500/status/start", "")); st != "OK" {
		t.Fatalf("start after apply: %s", st)
	}
	// Changes after the apply are pending again; a stale digest is refused.
	zone := data[map[string]any](t, mustOK(t, sim, "GET", "/cluster/sdn/zones/agents", ""))
	digest := zone["digest"].(string)
	mustOK(t, sim, "PUT", "/cluster/sdn/zones/agents", `{"mtu":1400,"digest":"`+digest+`"}`)
	status, _ = raw(t, sim, "PUT", "/cluster/sdn/zones/agents", `{"mtu":1300,"digest":"`+digest+`"}`, true)
	if status != "500 update sdn zone object failed: detected modified configuration - file changed by other user? Try again." {
		t.Errorf("stale digest: %s", status)
	}
	pz := data[map[string]any](t, mustOK(t, sim, "GET", "/cluster/sdn/zones/agents?pending=1", ""))
	if pz["state"] != "changed" || pz["mtu"] != 1450.0 || pz["pending"].(map[string]any)["mtu"] != 1400.0 {
		t.Errorf("pending zone %v", pz)
	}
	status, _ = raw(t, sim, "DELETE", "/cluster/sdn/zones/agents", "", true)
	if !strings.HasPrefix(status, "500 delete sdn zone object failed: zone agents is used by vnet agentnet") {
		t.Errorf("delete used zone: %s", status)
	}
	status, _ = raw(t, sim, "DELETE", "/cluster/sdn/vnets/agentnet", "", true)
	if status != "500 delete sdn vnet object failed: 400 Parameter verification failed." {
		t.Errorf("delete vnet with subnets: %s", status)
	}
	status, _ = raw(t, sim, "GET", "/cluster/sdn/zones/nope", "", true)
	if status != "500 sdn 'nope' does not exist" {
		t.Errorf("missing zone: %s", status)
	}
	mustOK(t, sim, "DELETE", "/cluster/sdn/vnets/agentnet/subnets/agents-10.42.0.0-24", "")
	mustOK(t, sim, "DELETE", "/cluster/sdn/vnets/agentnet", "")
	pending = data[[]map[string]any](t, mustOK(t, sim, "GET", "/cluster/sdn/vnets?pending=1", ""))
	if len(pending) != 1 || pending[0]["state"] != "deleted" {
		t.Errorf("deleted vnet pending %v", pending)
	}
}

// The cluster survives a restart: shared volumes, an offline node, SDN.
func TestClusterStatePersists(t *testing.T) {
	dir := t.TempDir()
	open := func() *pvesim.Sim {
		sim, err := pvesim.New(pvesim.Options{Fixtures: true, Nodes: pvesim.NodeNames(2), StateDir: dir, SharedTemplate: true})
		if err != nil {
			t.Fatal(err)
		}
		return sim
	}
	sim := open()
	if st := waitTask(t, sim, mustOK(t, sim, "POST", "/nodes/pve1/qemu/9000/clone", `{"newid":600,"target":"pve2"}`)); st != "OK" {
		t.Fatal(st)
	}
	mustOK(t, sim, "POST", "/cluster/sdn/zones", `{"zone":"z1","type":"vxlan","peers":"127.0.0.1"}`)
	waitTask(t, sim, mustOK(t, sim, "PUT", "/cluster/sdn", ""))
	mustOK(t, sim, "POST", "/cluster/sdn/vnets", `{"vnet":"v1","zone":"z1","tag":7}`)
	if err := sim.SetNodeOnline("pve2", false); err != nil {
		t.Fatal(err)
	}
	before := sim.Dump()
	sim.Close()
	sim = open()
	defer sim.Close()
	after := sim.Dump()
	if len(after.Volumes) != len(before.Volumes) || after.VMs[600].Node != "pve2" {
		t.Fatalf("volumes %d → %d, vm %+v", len(before.Volumes), len(after.Volumes), after.VMs[600])
	}
	if sim.NodeOnline("pve2") {
		t.Error("pve2 came back online across a restart")
	}
	if err := sim.SetNodeOnline("pve2", true); err != nil {
		t.Fatal(err)
	}
	mustOK(t, sim, "GET", "/nodes/pve2/qemu/600/config", "")
	z := data[[]map[string]any](t, mustOK(t, sim, "GET", "/cluster/sdn/zones?running=1", ""))
	v := data[[]map[string]any](t, mustOK(t, sim, "GET", "/cluster/sdn/vnets?pending=1", ""))
	if len(z) != 1 || len(v) != 1 || v[0]["state"] != "new" {
		t.Fatalf("sdn after restart: zones %v vnets %v", z, v)
	}
}

// TestMigrateTargetLostMidCopy: the target goes offline while an offline
// migration copies: the task fails with storage_migrate's ssh error, the
// VM stays on the source unlocked with its volume, and the partial copy
// stays on the target (phase1_cleanup cannot reach it to free it).
func TestMigrateTargetLostMidCopy(t *testing.T) {
	sim := newCluster(t, 3, func(o *pvesim.Options) {
		o.Durations.ByType = map[string]time.Duration{"qmigrate": 200 * time.Millisecond}
	})
	if err := sim.AddVM("pve1", 310, map[string]string{"scsi0": "local-lvm:1"}, false); err != nil {
		t.Fatal(err)
	}
	body := mustOK(t, sim, "POST", "/nodes/pve1/qemu/310/migrate", `{"target":"pve2"}`)
	for sim.Dump().VMs[310].Config["lock"] != "migrate" {
		time.Sleep(time.Millisecond)
	}
	if err := sim.SetNodeOnline("pve2", false); err != nil {
		t.Fatal(err)
	}
	if st := waitTask(t, sim, body); st != "migration aborted" {
		t.Fatalf("status: %s", st)
	}
	if log := taskLog(t, sim, "pve1", data[string](t, body)); !strings.Contains(log, "ERROR: migration aborted") || !strings.Contains(log, "failed: exit code 255") {
		t.Errorf("log:\n%s", log)
	}
	vm := sim.Dump().VMs[310]
	if vm.Node != "pve1" || vm.Config["lock"] != "" || !strings.HasPrefix(vm.Config["scsi0"], "local-lvm:vm-310-disk-0") {
		t.Fatalf("VM after the failed migration: %+v", vm)
	}
	if err := sim.SetNodeOnline("pve2", true); err != nil {
		t.Fatal(err)
	}
	left := data[[]map[string]any](t, mustOK(t, sim, "GET", "/nodes/pve2/storage/local-lvm/content?vmid=310", ""))
	if len(left) != 1 || left[0]["volid"] != "local-lvm:vm-310-disk-0" {
		t.Errorf("on the target after it came back: %v", left)
	}
}
