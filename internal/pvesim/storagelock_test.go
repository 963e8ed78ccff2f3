package pvesim_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// lockSim is a simulator whose storage lock is held far longer than a
// waiter waits for it: a clone that finds the lock taken always times out,
// so which clones contend decides the outcome, not the machine's speed.
func lockSim(t *testing.T, o pvesim.Options) *pvesim.Sim {
	t.Helper()
	o.Fixtures = true
	o.Durations = pvesim.Durations{StorageLock: 400 * time.Millisecond}
	o.StorageLockTimeout = 50 * time.Millisecond
	sim, err := pvesim.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	return sim
}

// cloneAll posts one linked clone per (node, template, newid) at once and
// returns each task's exit status by newid.
func cloneAll(t *testing.T, sim *pvesim.Sim, clones [][3]string) map[string]string {
	t.Helper()
	out := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range clones {
		wg.Add(1)
		go func(node, tmpl, newid string) {
			defer wg.Done()
			st, body := raw(t, sim, "POST", "/nodes/"+node+"/qemu/"+tmpl+"/clone", fmt.Sprintf(`{"newid":%s}`, newid), true)
			if st != "200 OK" {
				t.Errorf("clone %s: %s %s", newid, st, body)
				return
			}
			exit := waitTask(t, sim, body)
			mu.Lock()
			out[newid] = exit
			mu.Unlock()
		}(c[0], c[1], c[2])
	}
	wg.Wait()
	return out
}

// Linked clones of one node's template queue on that node's storage lock
// (cluster_lock_storage → lock_file on /var/lock/pve-manager/pve-storage-
// local-lvm); a clone that cannot get it within the timeout fails with
// PVE's text and leaves neither a VM nor a volume behind.
func TestStorageLockTimeoutFailsClone(t *testing.T) {
	sim := lockSim(t, pvesim.Options{})
	var clones [][3]string
	for i := 0; i < 4; i++ {
		clones = append(clones, [3]string{"pve", "9000", fmt.Sprint(500 + i)})
	}
	got := cloneAll(t, sim, clones)
	const want = "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout"
	ok, failed := 0, 0
	d := sim.Dump()
	for newid, exit := range got {
		switch exit {
		case "OK":
			ok++
		case want:
			failed++
			var id int
			fmt.Sscan(newid, &id)
			if _, left := d.VMs[id]; left {
				t.Errorf("failed clone %s left its VM", newid)
			}
			for volid, v := range d.Volumes {
				if v.Owner == id {
					t.Errorf("failed clone %s left volume %s", newid, volid)
				}
			}
		default:
			t.Errorf("clone %s: exit status %q, want OK or %q", newid, exit, want)
		}
	}
	if ok == 0 || failed == 0 {
		t.Errorf("%d clones OK, %d timed out: four clones at once on one storage lock need both", ok, failed)
	}
	if n := sim.StorageLockTimeouts(); n < int64(failed) {
		t.Errorf("StorageLockTimeouts = %d, want at least %d", n, failed)
	}
	// The lock is free again once the holders are done.
	if exit := cloneAll(t, sim, [][3]string{{"pve", "9000", "600"}})["600"]; exit != "OK" {
		t.Errorf("clone after the contention: %q", exit)
	}
}

// A local storage's lock is the node's own flock: clones on two nodes at
// once do not wait for each other.
func TestStorageLockIsPerNodeForLocalStorage(t *testing.T) {
	sim := lockSim(t, pvesim.Options{Nodes: []string{"pve", "pve2"}, TemplatePerNode: true})
	got := cloneAll(t, sim, [][3]string{{"pve", "9000", "500"}, {"pve2", "9001", "501"}})
	for newid, exit := range got {
		if exit != "OK" {
			t.Errorf("clone %s: %q (one clone per node must not contend)", newid, exit)
		}
	}
	if n := sim.StorageLockTimeouts(); n != 0 {
		t.Errorf("StorageLockTimeouts = %d", n)
	}
}

// A shared storage's lock is cluster-wide (cfs_lock_storage): its timeout
// is pmxcfs's "cfs-lock 'storage-<id>' error: got lock request timeout".
func TestStorageLockSharedIsClusterLock(t *testing.T) {
	sim := lockSim(t, pvesim.Options{Nodes: []string{"pve", "pve2"}, SharedTemplate: true})
	got := cloneAll(t, sim, [][3]string{{"pve", "9000", "500"}, {"pve", "9000", "501"}, {"pve", "9000", "502"}})
	const want = "clone failed: cfs-lock 'storage-shared' error: got lock request timeout"
	failed := 0
	for newid, exit := range got {
		if exit == want {
			failed++
		} else if exit != "OK" {
			t.Errorf("clone %s: %q", newid, exit)
		}
	}
	if failed == 0 {
		t.Errorf("no clone timed out on the shared storage's lock: %v", got)
	}
}

// destroy_vm frees each disk with vdisk_free in an eval: a disk whose
// storage lock times out stays, and the task ends with a warning naming
// it, not an error.
func TestStorageLockTimeoutInDestroyWarns(t *testing.T) {
	sim := lockSim(t, pvesim.Options{})
	if exit := cloneAll(t, sim, [][3]string{{"pve", "9000", "500"}})["500"]; exit != "OK" {
		t.Fatalf("clone: %q", exit)
	}
	// A clone holds the lock while the destroy wants it.
	st, cl := raw(t, sim, "POST", "/nodes/pve/qemu/9000/clone", `{"newid":501}`, true)
	if st != "200 OK" {
		t.Fatalf("clone: %s", st)
	}
	time.Sleep(100 * time.Millisecond) // the clone's worker holds the lock for 400 ms
	st, body := raw(t, sim, "DELETE", "/nodes/pve/qemu/500", "", true)
	if st != "200 OK" {
		t.Fatalf("destroy: %s %s", st, body)
	}
	exit := waitTask(t, sim, body)
	waitTask(t, sim, cl)
	d := sim.Dump()
	left := 0
	for _, v := range d.Volumes {
		if v.Owner == 500 {
			left++
		}
	}
	if _, ok := d.VMs[500]; ok {
		t.Errorf("VM 500 still there after its destroy")
	}
	if !strings.HasPrefix(exit, "WARNINGS: ") || left == 0 {
		t.Errorf("destroy exit %q with %d volumes of VM 500 left; want warnings and the disk it could not free kept", exit, left)
	}
}
