package apischema

import "testing"

// The expected texts follow PVE::JSONSchema (parse_property_string, check_object,
// check_prop) and PVE::Exception::stringify, as pveproxy puts them in "errors".
func TestPropertyStringErrorsLikePVE(t *testing.T) {
	cfg, _ := Lookup("/nodes/{node}/qemu/{vmid}/config", "POST")
	cases := []struct{ key, val, want string }{
		{"net0", "virtio,bridge=vmbr0,fwgroup=x",
			"invalid format - format error\nnet0.fwgroup: property is not defined in schema and the schema does not allow additional properties\n"},
		{"net0", "virtio,bridge=vmbr0,tag=0", "invalid format - format error\nnet0.tag: value must have a minimum value of 1\n"},
		{"net0", "bridge=vmbr0", "invalid format - format error\nnet0.model: property is missing and it is not optional\n"},
		{"net0", "virtio,e1000", "invalid format - duplicate key in comma-separated list property: model\n"},
		{"net0", "model=virtio,virtio=BC:24:11:00:00:01", "invalid format - key alias 'model' is already defined\n"},
		{"net0", "virtio,bridge=vmbr0,firewall=maybe", "invalid format - format error\nnet0.firewall: type check ('boolean') failed - got 'maybe'\n"},
		{"scsi0", "size=4G", "invalid format - format error\nscsi0.file: property is missing and it is not optional\n"},
		{"scsi0", "local-lvm:4,=x", "invalid format - missing key in comma-separated list property\n"},
		{"ipconfig0", "ip=10.0.0.1/24,gw=10.0.0.999", "invalid format - format error\nipconfig0.gw: invalid format - value does not look like a valid IPv4 address\n\n"},
		{"ipconfig0", "gw=10.0.0.1", "invalid format - format error\nipconfig0.ip: missing property required by 'ipconfig0.gw'\n"},
		{"cicustom", "user=local:snippets/a.yaml,bogus=x",
			"invalid format - format error\ncicustom.bogus: property is not defined in schema and the schema does not allow additional properties\n"},
	}
	for _, c := range cases {
		got := cfg.Validate(map[string]any{"node": "pve", "vmid": "100", c.key: c.val})[c.key]
		if got != c.want {
			t.Errorf("%s=%s:\n got %q\nwant %q", c.key, c.val, got, c.want)
		}
	}
	// Every legal spelling is accepted: written-out default keys, aliases, boolean words.
	for _, ok := range []map[string]any{
		{"scsi0": "file=local-lvm:10,size=4294967296,discard=on,ssd=yes"},
		{"scsi0": "volume=local-lvm:vm-100-disk-0"},
		{"ide2": "file=local-lvm:cloudinit,media=cdrom"},
		{"net0": "model=virtio,bridge=vmbr0,macaddr=BC:24:11:00:00:01,firewall=on"},
		{"net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0"},
		{"ipconfig0": "ip=dhcp,ip6=auto"},
		{"agent": "enabled=1,fstrim_cloned_disks=1"},
	} {
		ok["node"], ok["vmid"] = "pve", "100"
		if errs := cfg.Validate(ok); len(errs) > 0 {
			t.Errorf("%v rejected: %v", ok, errs)
		}
	}
}

// Print follows print_property_string: default key (combined with its key alias)
// first, then the required keys, then the rest sorted; disk-size via format_size.
func TestPrintLikePVE(t *testing.T) {
	cfg, _ := Lookup("/nodes/{node}/qemu/{vmid}/config", "POST")
	net := cfg.Format("net0")
	d, err := net.Parse("bridge=vmbr0,model=virtio,firewall=yes,macaddr=BC:24:11:AA:BB:CC", "net0")
	if err != nil {
		t.Fatal(err)
	}
	if got := net.Print(d); got != "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1" {
		t.Fatalf("print_net = %q", got)
	}
	scsi := cfg.Format("scsi0")
	d, err = scsi.Parse("size=4294967296,file=local-lvm:vm-100-disk-0,iothread=1,discard=on", "scsi0")
	if err != nil {
		t.Fatal(err)
	}
	if got := scsi.Print(d); got != "local-lvm:vm-100-disk-0,discard=on,iothread=1,size=4G" {
		t.Fatalf("print_drive = %q", got)
	}
	for n, want := range map[int64]string{1023: "1023", 4 << 20: "4M", 1536 << 20: "1536M", 2 << 40: "2T", 0: "0T"} {
		if got := FormatSize(n); got != want {
			t.Errorf("format_size(%d) = %q, want %q", n, got, want)
		}
	}
}
