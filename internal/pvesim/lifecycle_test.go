package pvesim_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// waitTask polls a task until it stops and returns its exit status.
func waitTask(t *testing.T, sim *pvesim.Sim, body string) string {
	t.Helper()
	var r struct{ Data string }
	if err := json.Unmarshal([]byte(body), &r); err != nil || r.Data == "" {
		t.Fatalf("no UPID in %s", body)
	}
	for i := 0; i < 400; i++ {
		for _, task := range sim.Dump().Tasks {
			if task.UPID == r.Data && !task.Running {
				return task.ExitStatus
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("task %s did not finish", r.Data)
	return ""
}

// create_vm (API2/Qemu.pm) adds meta (MetaInfo::new_meta_info_string) and a
// generated vmgenid.
func TestCreateAddsMetaAndVMGenID(t *testing.T) {
	sim := newSim(t)
	createVM(t, sim, `{"vmid":300,"scsi0":"local-lvm:1"}`)
	c := getConfig(t, sim, "300")
	if m, _ := c["meta"].(string); !regexp.MustCompile(`^creation-qemu=\d+\.\d+\.\d+,ctime=\d+$`).MatchString(m) {
		t.Errorf("meta = %v", c["meta"])
	}
	if g, _ := c["vmgenid"].(string); !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`).MatchString(g) {
		t.Errorf("vmgenid = %v", c["vmgenid"])
	}
}

// clone_disk moves every drive of a full clone, the cloud-init one included,
// to the target storage.
func TestFullCloneMovesCloudinitToTargetStorage(t *testing.T) {
	sim := newSim(t)
	_, body := raw(t, sim, "POST", "/nodes/pve/qemu/9000/clone", `{"newid":301,"full":1,"storage":"local-zfs"}`, true)
	if st := waitTask(t, sim, body); st != "OK" {
		t.Fatalf("clone: %s", st)
	}
	c := getConfig(t, sim, "301")
	if !strings.HasPrefix(c["scsi0"].(string), "local-zfs:vm-301-disk-0,") || c["ide2"] != "local-zfs:vm-301-cloudinit,media=cdrom" {
		t.Fatalf("scsi0 %v ide2 %v", c["scsi0"], c["ide2"])
	}
}

// snapshot_create (AbstractConfig.pm) releases the flock after
// __snapshot_prepare: a stop during the volume snapshots fails check_lock at
// once; and a volume cannot carry one snapshot name twice (zfs snapshot fails,
// ZFSPoolPlugin volume_snapshot), which a shared workspace volume makes possible.
func TestSnapshotLockAndDuplicateNames(t *testing.T) {
	sim, err := pvesim.New(pvesim.Options{Fixtures: true, Durations: pvesim.Durations{ByType: map[string]time.Duration{"qmsnapshot": 300 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	createVM(t, sim, `{"vmid":300,"scsi0":"local-zfs:1"}`)
	_, snap := raw(t, sim, "POST", "/nodes/pve/qemu/300/snapshot", `{"snapname":"s1"}`, true)
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	_, stop := raw(t, sim, "POST", "/nodes/pve/qemu/300/status/stop", ``, true)
	if st := waitTask(t, sim, stop); st != "VM is locked (snapshot)" || time.Since(start) > 2*time.Second {
		t.Errorf("stop during snapshot: %q after %v", st, time.Since(start))
	}
	if st := waitTask(t, sim, snap); st != "OK" {
		t.Fatalf("snapshot: %s", st)
	}
	// VM 301 uses VM 300's volume, as a sandbox uses its workspace holder's disk.
	if err := sim.AddVM("pve", 301, map[string]string{"scsi1": "local-zfs:vm-300-disk-0"}, false); err != nil {
		t.Fatal(err)
	}
	_, dup := raw(t, sim, "POST", "/nodes/pve/qemu/301/snapshot", `{"snapname":"s1"}`, true)
	if st := waitTask(t, sim, dup); st != "zfs error: cannot create snapshot 'rpool/data/vm-300-disk-0@s1': dataset already exists" {
		t.Errorf("duplicate snapshot name: %q", st)
	}
	if snaps := sim.Dump().VMs[301].Snapshots; len(snaps) != 0 {
		t.Errorf("failed snapshot left in config: %v", snaps)
	}
	if c := getConfig(t, sim, "301"); c["lock"] != nil {
		t.Errorf("lock left: %v", c["lock"])
	}
}

// snapshot_rollback (AbstractConfig.pm) writes the snapshot's config but
// keeps the current description and unusedN (__snapshot_apply_config), and a
// volume plugged after the snapshot, owned by another VM or not, becomes an
// unusedN entry (QemuConfig __snapshot_rollback_get_unused) instead of
// staying attached: why agentd unplugs a workspace around a revert.
func TestRollbackKeepsDescriptionAndUnusesLaterDisks(t *testing.T) {
	sim := newSim(t)
	createVM(t, sim, `{"vmid":300,"scsi0":"local-lvm:1","description":"before"}`)
	createVM(t, sim, `{"vmid":301,"scsi0":"local-lvm:1"}`)
	_, snap := raw(t, sim, "POST", "/nodes/pve/qemu/300/snapshot", `{"snapname":"s1"}`, true)
	if st := waitTask(t, sim, snap); st != "OK" {
		t.Fatalf("snapshot: %s", st)
	}
	_, cfg := raw(t, sim, "POST", "/nodes/pve/qemu/300/config", `{"scsi1":"local-lvm:vm-301-disk-0","description":"after","cores":4}`, true)
	if st := waitTask(t, sim, cfg); st != "OK" {
		t.Fatalf("config: %s", st)
	}
	_, rb := raw(t, sim, "POST", "/nodes/pve/qemu/300/snapshot/s1/rollback", ``, true)
	if st := waitTask(t, sim, rb); st != "OK" {
		t.Fatalf("rollback: %s", st)
	}
	c := getConfig(t, sim, "300")
	if c["scsi1"] != nil || c["unused0"] != "local-lvm:vm-301-disk-0" {
		t.Errorf("the later disk after the rollback: scsi1 %v, unused0 %v", c["scsi1"], c["unused0"])
	}
	if c["description"] != "after" {
		t.Errorf("description %v, want the current one kept", c["description"])
	}
	if c["cores"] != nil && c["cores"] != float64(1) && c["cores"] != "1" {
		t.Errorf("cores %v: the snapshot's config was not restored", c["cores"])
	}
}
