package pvesim_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// putConfig writes a config synchronously (PUT) and fails the test on an error.
func putConfig(t *testing.T, sim *pvesim.Sim, vmid, body string) {
	t.Helper()
	status, resp := raw(t, sim, "PUT", "/nodes/pve/qemu/"+vmid+"/config", body, true)
	if status != "200 OK" {
		t.Fatalf("PUT config %s: %s %s", body, status, resp)
	}
}

func getConfig(t *testing.T, sim *pvesim.Sim, vmid string) map[string]any {
	t.Helper()
	_, body := raw(t, sim, "GET", "/nodes/pve/qemu/"+vmid+"/config", "", true)
	var r struct{ Data map[string]any }
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	return r.Data
}

func createVM(t *testing.T, sim *pvesim.Sim, body string) {
	t.Helper()
	status, resp := raw(t, sim, "POST", "/nodes/pve/qemu", body, true)
	if status != "200 OK" {
		t.Fatalf("create %s: %s %s", body, status, resp)
	}
	waitUnlocked(t, sim, 300)
}

func waitUnlocked(t *testing.T, sim *pvesim.Sim, vmid int) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if vm, ok := sim.Dump().VMs[vmid]; ok && vm.Config["lock"] == "" {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("VM %d still locked or missing", vmid)
}

// Drives and NICs written in their other legal spellings come back in the form
// PVE stores: parse_drive/print_drive (QemuServer/Drive.pm), parse_net/print_net
// (QemuServer/Network.pm), create_disks (API2/Qemu.pm) and write_vm_config's
// unusedN cleanup (QemuServer.pm).
func TestConfigCanonicalForm(t *testing.T) {
	sim := newSim(t)
	createVM(t, sim, `{"vmid":300,"name":"spell","scsi0":"file=local-lvm:4,size=4294967296,iothread=1,discard=on",`+
		`"ide2":"file=local-lvm:cloudinit","net0":"model=virtio,bridge=vmbr0,firewall=yes","net1":"bridge=vmbr0,e1000=BC:24:11:12:34:56"}`)
	c := getConfig(t, sim, "300")
	want := map[string]string{
		"scsi0": "local-lvm:vm-300-disk-0,discard=on,iothread=1,size=4G",
		"ide2":  "local-lvm:vm-300-cloudinit,media=cdrom",
		"net1":  "e1000=BC:24:11:12:34:56,bridge=vmbr0",
	}
	for k, w := range want {
		if c[k] != w {
			t.Errorf("%s = %v, want %s", k, c[k], w)
		}
	}
	if n, _ := c["net0"].(string); !regexp.MustCompile(`^virtio=BC:24:11:[0-9A-F]{2}:[0-9A-F]{2}:[0-9A-F]{2},bridge=vmbr0,firewall=1$`).MatchString(n) {
		t.Errorf("net0 = %q, want a generated BC:24:11 MAC in print_net order", n)
	}
	// Re-writing an attached disk with new options keeps one size (the volume's
	// real one, volume_size_info) and leaves no unused entry for a volume in use.
	putConfig(t, sim, "300", `{"scsi0":"volume=local-lvm:vm-300-disk-0,size=1G,ssd=on,discard=on"}`)
	c = getConfig(t, sim, "300")
	if c["scsi0"] != "local-lvm:vm-300-disk-0,discard=on,size=4G,ssd=1" {
		t.Errorf("scsi0 = %v", c["scsi0"])
	}
	for k := range c {
		if strings.HasPrefix(k, "unused") {
			t.Errorf("bogus %s = %v for a volume still attached", k, c[k])
		}
	}
	// Detaching a disk the VM owns still registers it as unused0.
	putConfig(t, sim, "300", `{"delete":"scsi0"}`)
	if c = getConfig(t, sim, "300"); c["unused0"] != "local-lvm:vm-300-disk-0" {
		t.Errorf("unused0 = %v after detaching scsi0", c["unused0"])
	}
}

// Validator texts are PVE's: parse_property_string + check_object with the
// parameter as path, stringified by PVE::Exception; unknown node from
// PVE::Network::get_ip_from_hostname; unknown storage from Storage/Status.pm.
func TestValidatorErrorTexts(t *testing.T) {
	sim := newSim(t)
	cases := []struct{ method, path, body, status, frag string }{
		{"POST", "/nodes/pve/qemu/9000/config", `{"net0":"virtio,bridge=vmbr1,fwgroup=x"}`, "400 Parameter verification failed.",
			`"net0":"invalid format - format error\nnet0.fwgroup: property is not defined in schema and the schema does not allow additional properties\n"`},
		{"POST", "/nodes/pve/qemu/9000/config", `{"net0":"virtio,bridge=vmbr1,tag=0"}`, "400 Parameter verification failed.",
			`"net0":"invalid format - format error\nnet0.tag: value must have a minimum value of 1\n"`},
		{"GET", "/nodes/nosuch/qemu", "", "500 hostname lookup 'nosuch' failed - failed to get address info for: nosuch: Name or service not known", ``},
		{"GET", "/nodes/pve/storage/nosuch/status", "", "400 Parameter verification failed.", `"storage":"No such storage."`},
	}
	for _, c := range cases {
		status, body := raw(t, sim, c.method, c.path, c.body, true)
		if status != c.status || !strings.Contains(body, c.frag) {
			t.Errorf("%s %s %s: %s %s, want %s %s", c.method, c.path, c.body, status, body, c.status, c.frag)
		}
	}
}
