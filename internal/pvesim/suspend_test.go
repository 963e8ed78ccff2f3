package pvesim_test

import (
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// vm_suspend/vm_resume (API2/Qemu.pm, QemuServer/RunState.pm): a pause keeps
// the VM running with qmpstatus paused; todisk writes the RAM to
// vm-<vmid>-state-suspend-<date> on statestorage, sets vmstate and
// "lock: suspended" and stops QEMU; resume (vm_start) frees the state volume.
func TestSuspendResumeLikePVE(t *testing.T) {
	sim := newSim(t)
	createVM(t, sim, `{"vmid":300,"scsi0":"local-lvm:1","memory":"1024"}`)
	do := func(path, body, want string) {
		t.Helper()
		status, resp := raw(t, sim, "POST", "/nodes/pve/qemu/300/status/"+path, body, true)
		if status != "200 OK" {
			t.Fatalf("%s: %s %s", path, status, resp)
		}
		if st := waitTask(t, sim, resp); st != want {
			t.Fatalf("%s task: %s", path, st)
		}
	}
	if status, _ := raw(t, sim, "POST", "/nodes/pve/qemu/300/status/suspend", ``, true); status != "500 VM 300 not running" {
		t.Fatalf("suspend of a stopped VM: %s", status)
	}
	do("start", ``, "OK")
	do("suspend", ``, "OK")
	if _, st := raw(t, sim, "GET", "/nodes/pve/qemu/300/status/current", "", true); !strings.Contains(st, `"qmpstatus":"paused"`) || !strings.Contains(st, `"status":"running"`) {
		t.Fatalf("paused status: %s", st)
	}
	do("resume", ``, "OK")
	do("suspend", `{"todisk":1,"statestorage":"local-zfs"}`, "OK")
	vm := sim.Dump().VMs[300]
	state := "local-zfs:vm-300-state-suspend-" + time.Now().Format("2006-01-02")
	if vm.Running || vm.Config["lock"] != "suspended" || vm.Config["vmstate"] != state {
		t.Fatalf("hibernated VM: running %v config %v", vm.Running, vm.Config)
	}
	if v, ok := sim.Dump().Volumes[state]; !ok || v.Size != (1024*2+500)<<20 {
		t.Fatalf("vmstate volume %v %v", v, ok)
	}
	if status, _ := raw(t, sim, "POST", "/nodes/pve/qemu/300/config", `{"cores":2}`, true); status != "500 VM is locked (suspended)" {
		t.Fatalf("config of a hibernated VM: %s", status)
	}
	do("resume", ``, "OK")
	vm = sim.Dump().VMs[300]
	if _, left := sim.Dump().Volumes[state]; !vm.Running || vm.Config["lock"] != "" || vm.Config["vmstate"] != "" || left {
		t.Fatalf("after resume: running %v config %v state volume left %v", vm.Running, vm.Config, left)
	}
}

// Content.pm "copy": an imgcopy task copies a volume to the target volume ID;
// $real_volume_id ties both to the path's storage (a mismatch is reported on
// "volume", even for the target).
func TestStorageContentCopy(t *testing.T) {
	sim := newSim(t)
	if err := sim.AddVM("pve", 300, map[string]string{"scsi0": "local-lvm:1"}, false); err != nil {
		t.Fatal(err)
	}
	status, body := raw(t, sim, "POST", "/nodes/pve/storage/local-lvm/content/vm-300-disk-0", `{"target":"local-zfs:vm-300-disk-5"}`, true)
	if status != "400 Parameter verification failed." || !strings.Contains(body, `"volume":"storage ID mismatch (local-zfs != local-lvm)\n"`) {
		t.Fatalf("cross-storage copy: %s %s", status, body)
	}
	status, body = raw(t, sim, "POST", "/nodes/pve/storage/local-lvm/content/vm-300-disk-0", `{"target":"vm-300-disk-5"}`, true)
	if status != "200 OK" || !strings.Contains(body, ":imgcopy:") {
		t.Fatalf("copy: %s %s", status, body)
	}
	if st := waitTask(t, sim, body); st != "OK" {
		t.Fatalf("copy task: %s", st)
	}
	if v, ok := sim.Dump().Volumes["local-lvm:vm-300-disk-5"]; !ok || v.Size != 1<<30 || v.Owner != 300 {
		t.Fatalf("copied volume %+v %v", v, ok)
	}
}

// A VM started from its vmstate did not boot: the guest agent that was
// running when it hibernated answers at once, where a cold start waits for
// the boot delay; a reboot is a boot again.
func TestResumedGuestAnswersWithoutBooting(t *testing.T) {
	sim, err := pvesim.New(pvesim.Options{Fixtures: true, AgentBootDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	createVM(t, sim, `{"vmid":300,"scsi0":"local-lvm:1","agent":"1"}`)
	do := func(path, body string) {
		t.Helper()
		_, resp := raw(t, sim, "POST", "/nodes/pve/qemu/300/"+path, body, true)
		if st := waitTask(t, sim, resp); st != "OK" {
			t.Fatalf("%s task: %s", path, st)
		}
	}
	ping := func() string {
		status, _ := raw(t, sim, "POST", "/nodes/pve/qemu/300/agent/ping", ``, true)
		return status
	}
	do("status/start", ``)
	if st := ping(); st != "500 QEMU guest agent is not running" {
		t.Fatalf("ping while booting: %s", st)
	}
	do("status/suspend", `{"todisk":1}`)
	do("status/start", ``)
	if st := ping(); st != "200 OK" {
		t.Fatalf("ping after a resume from disk: %s", st)
	}
	do("status/reboot", ``)
	if st := ping(); st != "500 QEMU guest agent is not running" {
		t.Fatalf("ping after a reboot: %s", st)
	}
}
