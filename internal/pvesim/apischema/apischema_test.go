package apischema

import "testing"

func TestValidateLikePVE(t *testing.T) {
	cfg, ok := Lookup("/nodes/{node}/qemu/{vmid}/config", "POST")
	if !ok {
		t.Fatal("config POST missing from generated schema")
	}
	cases := []struct {
		params map[string]any
		key    string
		want   string
	}{
		{map[string]any{"node": "pve", "vmid": "100", "cores": "x"}, "cores", "type check ('integer') failed - got 'x'"},
		{map[string]any{"node": "pve", "vmid": "100", "cores": "0"}, "cores", "value must have a minimum value of 1"},
		{map[string]any{"node": "pve", "vmid": "100", "onboot": "yes"}, "onboot", "type check ('boolean') failed - got 'yes'"},
		{map[string]any{"node": "pve", "vmid": "100", "sshkeys": "ssh-ed25519 AAA"}, "sshkeys", "invalid format - invalid urlencoded string: ssh-ed25519 AAA\n"},
		{map[string]any{"node": "pve", "vmid": "100", "tags": "ok;bad tag!"}, "tags", "invalid format - invalid characters in tag\n"},
		{map[string]any{"node": "pve", "vmid": "100", "net99": "virtio"}, "net99", "property is not defined in schema and the schema does not allow additional properties"},
		{map[string]any{"node": "pve", "vmid": "100", "scsi1": "local-lvm:vm-1-disk-0,bogus=1"}, "scsi1",
			// parse_property_string autovivifies the unknown key's schema, so check_object reports it.
			"invalid format - format error\nscsi1.bogus: property is not defined in schema and the schema does not allow additional properties\n"},
		{map[string]any{"node": "pve", "vmid": "12"}, "vmid", "invalid format - value does not look like a valid VM ID\n"},
		{map[string]any{"vmid": "100"}, "node", "property is missing and it is not optional"},
	}
	for _, c := range cases {
		errs := cfg.Validate(c.params)
		if errs[c.key] != c.want {
			t.Errorf("%v: %s = %q, want %q", c.params, c.key, errs[c.key], c.want)
		}
	}
	ok1 := cfg.Validate(map[string]any{"node": "pve", "vmid": 100.0, "cores": 4.0, "onboot": true,
		"net0": "virtio=BC:24:11:00:00:01,bridge=vmbr1,firewall=1", "memory": "4096", "tags": "agentlab;sbx",
		"cicustom": "user=local:snippets/a.yaml", "sshkeys": "ssh-ed25519%20AAAA%20a%40b", "scsi1": "local-lvm:vm-500-disk-0,size=10G"})
	if len(ok1) != 0 {
		t.Fatalf("valid config rejected: %v", ok1)
	}
	if got := cfg.Type("net3"); got != "string" {
		t.Fatalf("Type(net3) = %q", got)
	}
}
