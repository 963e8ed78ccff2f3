package pve_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

const tmpl = pvesim.FixtureTemplateID

func newSim(t testing.TB, opts pvesim.Options) (*pvesim.Sim, *pve.Client) {
	t.Helper()
	opts.Fixtures = true
	sim, err := pvesim.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	id, secret := sim.Token()
	c, err := pve.New(pve.Config{URL: sim.URL(), TokenID: id, Secret: secret, Node: sim.Node(), CAPEM: sim.CAPEM(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return sim, c
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestSandboxLifecycle drives every step agentd takes for a sandbox.
func TestSandboxLifecycle(t *testing.T) {
	sim, c := newSim(t, pvesim.Options{})
	ctx := ctx(t)
	if v, err := c.Version(ctx); err != nil || v != "9.1.2" {
		t.Fatalf("version = %q, %v", v, err)
	}
	id, err := c.NextID(ctx)
	if err != nil || id != 100 {
		t.Fatalf("nextid = %d, %v; want 100", id, err)
	}
	if err := c.Clone(ctx, tmpl, id, pve.CloneOptions{Name: "sbx-100", Description: "agentlab sandbox sbx-100"}); err != nil {
		t.Fatal(err)
	}
	if err := sim.PutSnippet("pve", "local", "sbx-100.yaml", []byte("#cloud-config\n")); err != nil {
		t.Fatal(err)
	}
	err = c.Configure(ctx, id,
		pve.Option{Name: "cores", Value: 4}, pve.Option{Name: "memory", Value: 4096},
		pve.Option{Name: "tags", Value: "agentlab"}, pve.Option{Name: "ciuser", Value: "agent"},
		pve.Option{Name: "sshkeys", Value: proxmox.EncodeSSHKeys("ssh-ed25519 AAAAC3Nza test@host")},
		pve.Option{Name: "cicustom", Value: "user=local:snippets/sbx-100.yaml"},
		pve.Option{Name: "net0", Value: "virtio,bridge=vmbr1,firewall=1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Resize(ctx, id, "scsi0", "20G"); err != nil {
		t.Fatal(err)
	}
	cfg, err := c.Config(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if cfg["cores"] != float64(4) || cfg["memory"] != "4096" || !strings.Contains(cfg["scsi0"].(string), "size=20G") {
		t.Fatalf("config after configure/resize: cores=%v memory=%#v scsi0=%v", cfg["cores"], cfg["memory"], cfg["scsi0"])
	}
	if vol := pve.DiskVolume(cfg, "scsi0"); vol != "local-lvm:vm-100-disk-0" {
		t.Fatalf("linked clone volume = %q", vol)
	}
	// node.VirtualMachine decodes status and config strictly: PVE's JSON types.
	node, err := proxmoxClient(sim).Node(ctx, "pve")
	if err != nil {
		t.Fatal(err)
	}
	vm, err := node.VirtualMachine(ctx, id)
	if err != nil {
		t.Fatalf("go-proxmox could not decode VM: %v", err)
	}
	if vm.Template || vm.VirtualMachineConfig.Cores == nil || *vm.VirtualMachineConfig.Cores != 4 {
		t.Fatalf("decoded VM: template=%v cores=%v", vm.Template, vm.VirtualMachineConfig.Cores)
	}
	if err := c.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	ip, err := c.WaitGuestIP(ctx, id, "", 10*time.Millisecond)
	if err != nil || ip != pvesim.GuestIP(id) {
		t.Fatalf("guest ip = %q, %v", ip, err)
	}
	st, err := c.Status(ctx, id)
	if err != nil || st.Status != "running" || !st.Agent || st.Template || len(st.Tags) != 1 {
		t.Fatalf("status = %+v, %v", st, err)
	}
	res, err := c.Resources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || !res[1].Template || res[0].VMID != id || res[0].Status != "running" {
		t.Fatalf("resources = %+v", res)
	}
	if err := c.Destroy(ctx, id); !errors.Is(err, pve.ErrRunning) {
		t.Fatalf("destroy running VM: %v, want ErrRunning", err)
	}
	if err := c.Shutdown(ctx, id, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(ctx, id); !errors.Is(err, pve.ErrNotFound) {
		t.Fatalf("status of destroyed VM: %v, want ErrNotFound", err)
	}
	dump := sim.Dump()
	if _, ok := dump.Volumes["local-lvm:vm-100-disk-0"]; ok {
		t.Fatal("destroy left the sandbox's own disk behind")
	}
	if _, ok := dump.Volumes["local-lvm:base-9000-disk-0"]; !ok {
		t.Fatal("destroying a linked clone removed the template's base volume")
	}
}

func proxmoxClient(sim *pvesim.Sim) *proxmox.Client {
	id, secret := sim.Token()
	return proxmox.NewClient(sim.URL(), proxmox.WithAPIToken(id, secret), proxmox.WithRootCAs(sim.CertPool()))
}

// TestWorkspaceHolder proves the holder-VM model: a sandbox references the holder's
// volume, and destroying the sandbox leaves the volume and its data alone.
func TestWorkspaceHolder(t *testing.T) {
	sim, c := newSim(t, pvesim.Options{})
	ctx := ctx(t)
	vol, err := c.HolderVolume(ctx, 500, "ws-alpha", "local-lvm", 10, []string{"agentlab-workspace"}, "workspace alpha")
	if err != nil {
		t.Fatal(err)
	}
	if vol != "local-lvm:vm-500-disk-0" {
		t.Fatalf("holder volume = %q", vol)
	}
	if err := c.Clone(ctx, tmpl, 101, pve.CloneOptions{Name: "sbx-101"}); err != nil {
		t.Fatal(err)
	}
	if err := c.AttachVolume(ctx, 101, "scsi1", vol); err != nil {
		t.Fatal(err)
	}
	if err := sim.WriteFile(vol, "/work/notes.txt", "keep me"); err != nil {
		t.Fatal(err)
	}
	if err := c.DetachVolume(ctx, 101, "scsi1"); err != nil {
		t.Fatal(err)
	}
	cfg, _ := c.Config(ctx, 101)
	if _, ok := cfg["unused0"]; ok {
		t.Fatal("detaching a foreign volume left an unusedN entry that destroy would free")
	}
	if err := c.AttachVolume(ctx, 101, "scsi1", vol); err != nil {
		t.Fatal(err)
	}
	if err := c.Destroy(ctx, 101); err != nil {
		t.Fatal(err)
	}
	got, ok, err := sim.ReadFile(vol, "/work/notes.txt")
	if err != nil || !ok || got != "keep me" {
		t.Fatalf("workspace data after sandbox destroy = %q, %v, %v", got, ok, err)
	}
	vols, err := c.Volumes(ctx, "local-lvm", 500)
	if err != nil || len(vols) != 1 || vols[0].Volid != vol {
		t.Fatalf("holder volumes = %+v, %v", vols, err)
	}
}

// TestSnapshotsRestoreAndFork covers snapshot create/list/rollback/delete and a
// fork by cloning a holder from a snapshot.
func TestSnapshotsRestoreAndFork(t *testing.T) {
	sim, c := newSim(t, pvesim.Options{})
	ctx := ctx(t)
	vol, err := c.HolderVolume(ctx, 500, "ws-a", "local-lvm", 4, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	_ = sim.WriteFile(vol, "f", "v1")
	if err := c.CreateSnapshot(ctx, 500, "s1", "first"); err != nil {
		t.Fatal(err)
	}
	_ = sim.WriteFile(vol, "f", "v2")
	if err := c.CreateSnapshot(ctx, 500, "s2", ""); err != nil {
		t.Fatal(err)
	}
	snaps, err := c.Snapshots(ctx, 500)
	if err != nil || len(snaps) != 2 || snaps[0].Name != "s1" || snaps[0].Description != "first" || snaps[1].Parent != "s1" {
		t.Fatalf("snapshots = %+v, %v", snaps, err)
	}
	if err := c.CreateSnapshot(ctx, 500, "s1", ""); !errors.Is(err, pve.ErrExists) {
		t.Fatalf("duplicate snapshot: %v", err)
	}
	// LVM-thin can roll back to any snapshot.
	if err := c.Rollback(ctx, 500, "s1"); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := sim.ReadFile(vol, "f"); got != "v1" {
		t.Fatalf("after rollback f = %q, want v1", got)
	}
	// Fork: linked clone of the holder from a snapshot (full=0 needs a raw request).
	if err := c.Clone(ctx, 500, 501, pve.CloneOptions{Name: "ws-b", Snapshot: "s2"}); err != nil {
		t.Fatal(err)
	}
	cfg, _ := c.Config(ctx, 501)
	forkVol := pve.DiskVolume(cfg, "scsi0")
	if got, _, _ := sim.ReadFile(forkVol, "f"); got != "v2" {
		t.Fatalf("fork from s2 has f = %q, want v2", got)
	}
	if err := c.DeleteSnapshot(ctx, 500, "s2"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSnapshot(ctx, 500, "nope"); !errors.Is(err, pve.ErrNotFound) {
		t.Fatalf("delete missing snapshot: %v", err)
	}
}

func TestStorageRules(t *testing.T) {
	_, c := newSim(t, pvesim.Options{})
	ctx := ctx(t)
	// raw on dir cannot snapshot.
	if _, err := c.HolderVolume(ctx, 600, "ws-raw", "local-raw", 1, nil, ""); err != nil {
		t.Fatal(err)
	}
	err := c.CreateSnapshot(ctx, 600, "s1", "")
	if !errors.Is(err, pve.ErrUnsupported) || !strings.Contains(err.Error(), "snapshot feature is not available") {
		t.Fatalf("snapshot on raw dir: %v", err)
	}
	// ZFS rolls back only to the most recent snapshot.
	if _, err := c.HolderVolume(ctx, 601, "ws-zfs", "local-zfs", 1, nil, ""); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"a1", "a2"} {
		if err := c.CreateSnapshot(ctx, 601, s, ""); err != nil {
			t.Fatal(err)
		}
	}
	err = c.Rollback(ctx, 601, "a1")
	want := "can't rollback, 'a1' is not most recent snapshot on 'local-zfs:vm-601-disk-0'"
	if !errors.Is(err, pve.ErrSnapshotNotRecent) || !strings.Contains(err.Error(), want) {
		t.Fatalf("zfs rollback: %v\nwant %q", err, want)
	}
	if err := c.Rollback(ctx, 601, "a2"); err != nil {
		t.Fatalf("zfs rollback to latest: %v", err)
	}
	// ZFS cannot clone from a snapshot.
	err = c.Clone(ctx, 601, 602, pve.CloneOptions{Snapshot: "a2"})
	if !errors.Is(err, pve.ErrUnsupported) {
		t.Fatalf("zfs linked clone from snapshot: %v", err)
	}
	if err := c.Resize(ctx, 601, "scsi0", "512M"); !errors.Is(err, pve.ErrShrinkNotSupported) {
		t.Fatalf("shrink: %v", err)
	}
}

func TestErrors(t *testing.T) {
	sim, c := newSim(t, pvesim.Options{})
	ctx := ctx(t)

	// Locked template: the clone POST itself fails with PVE's status line.
	_ = sim.SetLock(tmpl, "backup")
	err := c.Clone(ctx, tmpl, 120, pve.CloneOptions{})
	if !errors.Is(err, pve.ErrLocked) || !strings.Contains(err.Error(), "500 VM is locked (backup)") {
		t.Fatalf("clone of locked template: %v", err)
	}
	_ = sim.SetLock(tmpl, "")

	// Missing VM.
	if _, err := c.Config(ctx, 4242); !errors.Is(err, pve.ErrNotFound) ||
		!strings.Contains(err.Error(), "500 Configuration file 'nodes/pve/qemu-server/4242.conf' does not exist") {
		t.Fatalf("missing VM: %v", err)
	}

	// Schema validation: unknown and mistyped parameters.
	err = c.Configure(ctx, tmpl, pve.Option{Name: "bogus", Value: 1}, pve.Option{Name: "cores", Value: "many"})
	if !errors.Is(err, pve.ErrBadRequest) {
		t.Fatalf("bad params: %v", err)
	}
	for _, frag := range []string{`"bogus":"property is not defined in schema and the schema does not allow additional properties"`,
		`"cores":"type check ('integer') failed - got 'many'"`} {
		if !strings.Contains(err.Error(), frag) {
			t.Fatalf("error %q lacks %s", err, frag)
		}
	}
	err = c.Clone(ctx, tmpl, 121, pve.CloneOptions{Name: "bad_name"})
	if !strings.Contains(err.Error(), `"name":"invalid format - value does not look like a valid DNS name\n"`) {
		t.Fatalf("dns name: %v", err)
	}

	// Failing task: the exit status is the error.
	sim.FailTask("qmstart", "", "start failed: QEMU exited with code 1")
	if err := c.Clone(ctx, tmpl, 122, pve.CloneOptions{}); err != nil {
		t.Fatal(err)
	}
	err = c.Start(ctx, 122)
	var pe *pve.Error
	if !errors.As(err, &pe) || pe.Msg != "start failed: QEMU exited with code 1" || !strings.HasPrefix(pe.UPID, "UPID:pve:") {
		t.Fatalf("failing task: %#v", err)
	}
	sim.ClearFaults()

	// WARNINGS: n is success.
	sim.WarnTask("qmstart", "", 1)
	if err := c.Start(ctx, 122); err != nil {
		t.Fatalf("start with warnings: %v", err)
	}
	sim.ClearFaults()

	// Guest agent not running.
	_ = sim.SetAgent(122, pvesim.AgentNotRunning)
	if err := c.AgentPing(ctx, 122); !errors.Is(err, pve.ErrAgentNotRunning) {
		t.Fatalf("agent not running: %v", err)
	}
	_ = sim.SetAgent(122, pvesim.AgentHung)
	if err := c.AgentPing(ctx, 122); !errors.Is(err, pve.ErrAgentTimeout) {
		t.Fatalf("agent hung: %v", err)
	}

	// Missing snippet makes qmstart fail.
	_ = c.Stop(ctx, 122)
	_ = c.Configure(ctx, 122, pve.Option{Name: "cicustom", Value: "user=local:snippets/missing.yaml"})
	if err := c.Start(ctx, 122); err == nil || !strings.Contains(err.Error(), "can't find file 'local:snippets/missing.yaml'") {
		t.Fatalf("start without snippet: %v", err)
	}

	// nextid race: the clone fails with ErrExists.
	raced := sim.RaceNextID()
	id, _ := c.NextID(ctx)
	if id != raced {
		t.Fatalf("nextid = %d, want raced %d", id, raced)
	}
	if err := c.Clone(ctx, tmpl, id, pve.CloneOptions{}); !errors.Is(err, pve.ErrExists) {
		t.Fatalf("clone into raced id: %v", err)
	}

	// 595 from pveproxy is an error even where go-proxmox would swallow it.
	sim.Unavailable()
	if err := c.Configure(ctx, 122, pve.Option{Name: "cores", Value: 2}); !errors.Is(err, pve.ErrUnavailable) {
		t.Fatalf("595: %v", err)
	}
	sim.ClearFaults()
}

func TestAuth(t *testing.T) {
	sim, _ := newSim(t, pvesim.Options{})
	ctx := ctx(t)
	id, _ := sim.Token()
	bad, _ := pve.New(pve.Config{URL: sim.URL(), TokenID: id, Secret: "wrong", Node: "pve", CAPEM: sim.CAPEM()})
	if _, err := bad.Version(ctx); !errors.Is(err, pve.ErrNotAuthorized) {
		t.Fatalf("bad token: %v", err)
	}
	user, pass := sim.Login()
	tc := proxmox.NewClient(sim.URL(), proxmox.WithCredentials(&proxmox.Credentials{Username: user, Password: pass}),
		proxmox.WithRootCAs(sim.CertPool()))
	if _, err := tc.Version(ctx); err != nil {
		t.Fatalf("ticket login: %v", err)
	}
	// Writes with a ticket need the CSRF token, which go-proxmox sends.
	cl, err := tc.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.NextID(ctx); err != nil {
		t.Fatal(err)
	}
	wrong := proxmox.NewClient(sim.URL(), proxmox.WithCredentials(&proxmox.Credentials{Username: user, Password: "nope"}),
		proxmox.WithRootCAs(sim.CertPool()))
	if _, err := wrong.Version(ctx); !proxmox.IsNotAuthorized(err) {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestTaskTimeout(t *testing.T) {
	sim, c := newSim(t, pvesim.Options{})
	sim.HangTask("qmclone", "")
	cctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := c.Clone(cctx, tmpl, 130, pve.CloneOptions{})
	if !errors.Is(err, pve.ErrTimeout) {
		t.Fatalf("hung clone: %v", err)
	}
}

// TestAsyncTasks runs tasks that take time: intermediate state is visible while the
// task runs, and the client waits for the end.
func TestAsyncTasks(t *testing.T) {
	sim, c := newSim(t, pvesim.Options{Durations: pvesim.Durations{Default: 5 * time.Millisecond,
		ByType: map[string]time.Duration{"qmclone": 300 * time.Millisecond}}})
	ctx := ctx(t)
	done := make(chan error, 1)
	go func() { done <- c.Clone(ctx, tmpl, 140, pve.CloneOptions{Name: "slow"}) }()
	deadline := time.Now().Add(2 * time.Second)
	for {
		if vm, ok := sim.Dump().VMs[140]; ok {
			if vm.Config["lock"] != "clone" {
				t.Fatalf("target during clone has lock %q, want clone", vm.Config["lock"])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("target VM never appeared while the clone ran")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := c.Status(ctx, 140); err != nil {
		t.Fatalf("status during clone: %v", err)
	}
	if err := c.Configure(ctx, 140, pve.Option{Name: "cores", Value: 2}); !errors.Is(err, pve.ErrLocked) {
		t.Fatalf("configure during clone: %v, want ErrLocked", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if l := sim.Dump().VMs[140].Config["lock"]; l != "" {
		t.Fatalf("lock after clone = %q", l)
	}
	if err := c.Start(ctx, 140); err != nil {
		t.Fatal(err)
	}
	if err := c.Shutdown(ctx, 140, time.Second); err != nil {
		t.Fatal(err)
	}
	// A guest that ignores ACPI: shutdown times out, then the VM is stopped hard.
	_ = c.Start(ctx, 140)
	_ = sim.IgnoreShutdown(140, true)
	if err := c.Shutdown(ctx, 140, time.Second); err != nil {
		t.Fatalf("shutdown then stop: %v", err)
	}
	if st, _ := c.Status(ctx, 140); st.Status != "stopped" {
		t.Fatalf("after forced stop status = %s", st.Status)
	}
}

// TestParallelClonesShareTemplateLock: PVE takes the source's config lock in
// shared mode when it is not running, so clones of one template overlap and none
// times out on the lock, while a config change of the template still waits.
func TestParallelClonesShareTemplateLock(t *testing.T) {
	_, c := newSim(t, pvesim.Options{Durations: pvesim.Durations{ByType: map[string]time.Duration{"qmclone": 1500 * time.Millisecond}}})
	ctx := ctx(t)
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func(id int) { errs <- c.Clone(ctx, tmpl, id, pve.CloneOptions{Name: "par"}) }(200 + i)
	}
	for i := 0; i < 4; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("parallel clone: %v", err)
		}
	}
	if _, err := c.Status(ctx, 203); err != nil {
		t.Fatal(err)
	}
}

func TestEndpointLabels(t *testing.T) {
	for in, want := range map[string]string{
		"/api2/json/nodes/pve/qemu/101/status/start":                             "/nodes/{node}/qemu/{vmid}/status/start",
		"/api2/json/nodes/pve1/tasks/UPID:pve:00001:00002:qmstart:101:x:/status": "/nodes/{node}/tasks/{upid}/status",
		"/api2/json/cluster/resources":                                           "/cluster/resources",
		"/api2/json/nodes/pve/qemu/101/snapshot/s1/rollback":                     "/nodes/{node}/qemu/{vmid}/snapshot/{name}/rollback",
		"/api2/json/nodes/pve/storage/local-lvm/content/local-lvm:vm-1-disk-0":   "/nodes/{node}/storage/local-lvm/content/{volume}",
		"/api2/json/nodes/pve/qemu/101":                                          "/nodes/{node}/qemu/{vmid}",
	} {
		if got := pve.Endpoint(in); got != want {
			t.Errorf("%s → %s, want %s", in, got, want)
		}
	}
}

// TestMigrate: an offline migration moves a stopped VM and its local disk
// (targetstorage mapping it); a failed one reports the task log's reason
// and its kind, not only "migration aborted"; a running VM is refused as
// ErrRunning.
func TestMigrate(t *testing.T) {
	sim, c := newSim(t, pvesim.Options{Nodes: []string{"pve1", "pve2"}})
	ctx := ctx(t)
	if err := c.CreateVM(ctx, 200, map[string]any{"name": "ws-a", "scsi0": "local-lvm:1", "memory": 64}); err != nil {
		t.Fatal(err)
	}
	if err := sim.FillStorage("pve2", "local-zfs", true); err != nil {
		t.Fatal(err)
	}
	err := c.Migrate(ctx, 200, "pve2", "local-zfs")
	var pe *pve.Error
	if !errors.As(err, &pe) || !errors.Is(err, pve.ErrUnsupported) || !strings.Contains(err.Error(), "migration aborted") ||
		!strings.Contains(err.Error(), "not enough free space on storage 'local-zfs'") {
		t.Fatalf("migration onto a full storage: %v", err)
	}
	if vm := sim.Dump().VMs[200]; vm.Node != "pve1" || vm.Config["lock"] != "" {
		t.Fatalf("after the failed migration: %+v", vm)
	}
	if err := c.Migrate(ctx, 200, "pve2", ""); err != nil {
		t.Fatal(err)
	}
	vm := sim.Dump().VMs[200]
	if vm.Node != "pve2" || !strings.HasPrefix(vm.Config["scsi0"], "local-lvm:vm-200-disk-0") {
		t.Fatalf("after the migration: %+v", vm)
	}
	if err := c.On("pve2").Start(ctx, 200); err != nil {
		t.Fatal(err)
	}
	if err := c.On("pve2").Migrate(ctx, 200, "pve1", ""); !errors.Is(err, pve.ErrRunning) {
		t.Fatalf("migrating a running VM offline: %v", err)
	}
}
