package pvesim_test

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

func mustOK(t *testing.T, sim *pvesim.Sim, method, path, body string) string {
	t.Helper()
	status, resp := raw(t, sim, method, path, body, true)
	if status != "200 OK" {
		t.Fatalf("%s %s %s: %s %s", method, path, body, status, resp)
	}
	return resp
}

// TestStatePersists: with a state dir, a restarted simulator has every VM
// (power state, config, snapshots, firewall, guest files), volume content,
// pool, security group, task and the same token and certificate.
func TestStatePersists(t *testing.T) {
	dir := t.TempDir()
	sim, err := pvesim.New(pvesim.Options{Fixtures: true, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, sim, "POST", "/nodes/pve/qemu/9000/clone", `{"newid":100,"name":"keep"}`)
	mustOK(t, sim, "PUT", "/nodes/pve/qemu/100/config", `{"cores":4,"scsi1":"local-zfs:2"}`)
	mustOK(t, sim, "POST", "/nodes/pve/qemu/100/snapshot", `{"snapname":"s1","description":"first"}`)
	if err := sim.WriteFile("local-zfs:vm-100-disk-0", "/work/a.txt", "hello"); err != nil {
		t.Fatal(err)
	}
	mustOK(t, sim, "POST", "/nodes/pve/qemu/100/status/start", ``)
	mustOK(t, sim, "POST", "/nodes/pve/qemu/100/agent/file-write", `{"file":"/etc/agentlab/x","content":"guest"}`)
	mustOK(t, sim, "POST", "/cluster/firewall/groups", `{"group":"web"}`)
	mustOK(t, sim, "POST", "/cluster/firewall/groups/web", `{"type":"in","action":"ACCEPT","dport":"22","proto":"tcp","enable":1}`)
	mustOK(t, sim, "POST", "/nodes/pve/qemu/100/firewall/rules", `{"type":"in","action":"DROP","enable":1}`)
	mustOK(t, sim, "POST", "/nodes/pve/qemu/100/firewall/ipset", `{"name":"ipfilter-net0"}`)
	mustOK(t, sim, "POST", "/nodes/pve/qemu/100/firewall/ipset/ipfilter-net0", `{"cidr":"10.0.0.5"}`)
	mustOK(t, sim, "PUT", "/cluster/firewall/options", `{"enable":1}`)
	mustOK(t, sim, "POST", "/pools", `{"poolid":"team","comment":"c"}`)
	mustOK(t, sim, "PUT", "/pools", `{"poolid":"team","vms":"100"}`)

	gets := []string{"/nodes/pve/qemu/100/config", "/nodes/pve/qemu/100/snapshot", "/nodes/pve/qemu/100/status/current",
		"/cluster/firewall/groups/web", "/nodes/pve/qemu/100/firewall/rules", "/nodes/pve/qemu/100/firewall/ipset/ipfilter-net0",
		"/cluster/firewall/options", "/pools?poolid=team", "/nodes/pve/tasks", "/nodes/pve/storage/local-zfs/content",
		"/cluster/nextid"}
	before := map[string]string{}
	for _, p := range gets {
		before[p] = mustOK(t, sim, "GET", p, "")
	}
	dump := sim.Dump()
	id, secret := sim.Token()
	ca := sim.CAPEM()
	sim.Close()

	sim2, err := pvesim.New(pvesim.Options{Fixtures: true, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer sim2.Close()
	if id2, secret2 := sim2.Token(); id2 != id || secret2 != secret || !bytes.Equal(sim2.CAPEM(), ca) {
		t.Fatal("token or certificate changed across the restart")
	}
	for _, p := range gets {
		after := mustOK(t, sim2, "GET", p, "")
		if p == "/nodes/pve/qemu/100/status/current" {
			// uptime and cpu move on; the VM is still running with the same pid.
			for _, frag := range []string{`"status":"running"`, `"qmpstatus":"running"`} {
				if !strings.Contains(after, frag) {
					t.Errorf("after restart, status lacks %s: %s", frag, after)
				}
			}
			continue
		}
		if after != before[p] {
			t.Errorf("GET %s changed across the restart:\nbefore %s\nafter  %s", p, before[p], after)
		}
	}
	dump2 := sim2.Dump()
	dump.Requests, dump2.Requests = 0, 0
	if !reflect.DeepEqual(dump, dump2) {
		t.Errorf("dump changed:\nbefore %+v\nafter  %+v", dump, dump2)
	}
	if c, ok, _ := sim2.ReadFile("local-zfs:vm-100-disk-0", "/work/a.txt"); !ok || c != "hello" {
		t.Errorf("disk content lost: %q %v", c, ok)
	}
	if b, ok := sim2.GuestFile(100, "/etc/agentlab/x"); !ok || string(b) != "guest" {
		t.Errorf("guest file lost: %q %v", b, ok)
	}
	// New MACs after the restart do not repeat the ones handed out before.
	mustOK(t, sim2, "POST", "/nodes/pve/qemu/9000/clone", `{"newid":101}`)
	if d := sim2.Dump(); d.VMs[101].Config["net0"] == d.VMs[100].Config["net0"] {
		t.Errorf("clone after restart reused MAC %s", d.VMs[100].Config["net0"])
	}
}

// TestRunningTaskAfterRestart: a task whose worker died with the simulator is
// stopped with "unexpected status" (upid_read_status for a log without its
// final line); the lock it set stays, as after a killed PVE worker.
func TestRunningTaskAfterRestart(t *testing.T) {
	dir := t.TempDir()
	slow := pvesim.Durations{ByType: map[string]time.Duration{"qmclone": time.Hour}}
	sim, err := pvesim.New(pvesim.Options{Fixtures: true, StateDir: dir, Durations: slow})
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, sim, "POST", "/nodes/pve/qemu/9000/clone", `{"newid":100}`)
	sim.Close()

	sim2, err := pvesim.New(pvesim.Options{Fixtures: true, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer sim2.Close()
	tasks := sim2.Dump().Tasks
	last := tasks[len(tasks)-1]
	if last.Type != "qmclone" || last.Running || last.ExitStatus != "unexpected status" {
		t.Fatalf("task after restart: %+v", last)
	}
	if l := sim2.Dump().VMs[100].Config["lock"]; l != "clone" {
		t.Fatalf("lock after restart = %q, want clone", l)
	}
}

// TestDamagedStateRefused: a state file that is not exactly what was written
// never loads; leftovers of a write cut short are ignored and removed.
func TestDamagedStateRefused(t *testing.T) {
	dir := t.TempDir()
	sim, err := pvesim.New(pvesim.Options{Fixtures: true, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	sim.Close()
	leftover := filepath.Join(dir, ".tmp-pvesim-state.json-123")
	if err := os.WriteFile(leftover, []byte(`{"partial`), 0o600); err != nil {
		t.Fatal(err)
	}
	sim, err = pvesim.New(pvesim.Options{Fixtures: true, StateDir: dir})
	if err != nil {
		t.Fatalf("state with a leftover temp file: %v", err)
	}
	sim.Close()
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Fatalf("leftover temp file not removed: %v", err)
	}
	path := filepath.Join(dir, "pvesim-state.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{
		"truncated":   data[:len(data)-10],
		"header only": data[:bytes.IndexByte(data, '\n')+1],
		"bit flip":    append(append([]byte(nil), data[:len(data)-3]...), 'x', '}', '}'),
		"empty":       {},
	} {
		if err := os.WriteFile(path, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		if s, err := pvesim.New(pvesim.Options{Fixtures: true, StateDir: dir}); err == nil {
			s.Close()
			t.Errorf("%s state file loaded", name)
		} else if !strings.Contains(err.Error(), "damaged") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
