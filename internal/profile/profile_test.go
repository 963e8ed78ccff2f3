package profile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestShippedProfilesLoad(t *testing.T) {
	set, err := LoadDefaults("vmbr1")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(set.Names(), ","); got != "interactive-dev,yolo-ephemeral,yolo-workspace" {
		t.Fatalf("profiles = %s", got)
	}
	ws := set["yolo-workspace"]
	if !ws.Behavior.RequireWorkspace || ws.Network.Bridge != "vmbr1" || ws.Storage.Clone != "linked" || ws.Behavior.TTLDefault.String() != "8h0m0s" {
		t.Fatalf("yolo-workspace = %+v", ws)
	}
	if a := set["interactive-dev"].API(); a.Balloon != 4096 || a.IdleStopMinutes != 120 || a.Cores != 6 {
		t.Fatalf("interactive-dev API = %+v", a)
	}
}

func TestInvalidProfilesAreRejectedWithFileLineAndKey(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{"name: a\ntemplate_vmid: 9000\nresources:\n  cpus: 2\n", "p.yaml:4: resources.cpus: unknown key (known keys: cores, memory_mb, balloon)"},
		{"name: a\ntemplate_vmid: 9000\nresources:\n  cores: many\n", "p.yaml:4: resources.cores: want a whole number"},
		{"name: a\ntemplate_vmid: 9000\nbehavior:\n  ttl_default: 3\n", "p.yaml:4: behavior.ttl_default: invalid duration"},
		{"name: a\n", "p.yaml:1: profile a: template_vmid: must be a VMID"},
		{"name: a\ntemplate: ubuntu\ntemplate_vmid: 9000\n", "template, template_vmid: give one of them, not both"},
		{"name: a\ntemplate: ubuntu_24\n", `template: "ubuntu_24" is not a Proxmox VM name`},
		{"name: a\ntemplate: -ubuntu\n", `template: "-ubuntu" is not a Proxmox VM name`},
		{"name: Bad_Name\ntemplate_vmid: 9000\n", "profile Bad_Name: name: \"Bad_Name\" must be lowercase"},
		{"name: a\ntemplate_vmid: 9000\nnetwork:\n  mode: open\n", "network.mode: must be off, nat or allowlist, got \"open\""},
		{"name: a\ntemplate_vmid: 9000\nstorage:\n  storage: local-zfs\n", "storage.storage: only allowed with storage.clone: full"},
		{"name: a\ntemplate_vmid: 9000\nresources:\n  memory_mb: 1024\n  balloon: 2048\n", "resources.balloon: must be between 0 and memory_mb (1024)"},
		{"name: a\ntemplate_vmid: 9000\ntype: docker\n", "p.yaml:3: type: unknown key"},
		{"name: a\ntemplate_vmid: 9000\n---\nname: b\ntemplate_vmid: 0\n", "p.yaml:4: profile b: template_vmid"},
		{"", "p.yaml: no profile in file"},
		{"name: a\ntemplate_vmid: 9000\nnetwork:\n  mode: allowlist\n", "network.allowlist: mode allowlist needs at least one entry"},
		{"name: a\ntemplate_vmid: 9000\nnetwork:\n  allowlist: [1.2.3.4]\n", "network.allowlist: only used with network.mode: allowlist"},
		{"name: a\ntemplate_vmid: 9000\nnetwork:\n  mode: allowlist\n  allowlist: [\"1.2.3.0/24:99999\"]\n", "network.allowlist[0]: \"1.2.3.0/24:99999\": port must be 1-65535"},
		{"name: a\ntemplate_vmid: 9000\nnetwork:\n  mode: allowlist\n  allowlist: [example.com]\n", "is not an IPv4 address or CIDR"},
		{"name: a\ntemplate_vmid: 9000\nbehavior:\n  idle_action: pause\n", "behavior.idle_action: must be stop or hibernate, got \"pause\""},
		{"name: a\ntemplate_vmid: 9000\nbehavior:\n  clean_snapshot: maybe\n", "p.yaml:4: behavior.clean_snapshot"},
	}
	for _, tc := range cases {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(tc.yaml), 0o644)
		_, err := LoadDir(dir, "vmbr1")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n got %v\nwant %q", tc.yaml, err, tc.want)
		}
	}
}

// Every bad file is reported at once, and duplicates across files are named.
func TestLoadReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.yaml"), []byte("name: x\ntemplate_vmid: 9000\n---\nname: y\ntemplate_vmid: 9001\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "b.yml"), []byte("name: x\ntemplate_vmid: 9000\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "c.yaml"), []byte("name: z\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "README.md"), []byte("not a profile"), 0o644)
	_, err := LoadDir(dir, "vmbr1")
	if err == nil || !strings.Contains(err.Error(), "b.yml: profile x: name already defined in a.yaml") || !strings.Contains(err.Error(), "c.yaml:1: profile z") {
		t.Fatalf("got %v", err)
	}
	os.Remove(filepath.Join(dir, "b.yml"))
	os.Remove(filepath.Join(dir, "c.yaml"))
	set, err := LoadDir(dir, "vmbr9")
	if err != nil || len(set) != 2 || set["y"].Network.Bridge != "vmbr9" || set["y"].Source != filepath.Join(dir, "a.yaml") {
		t.Fatalf("set=%v err=%v", set, err)
	}
}

// behavior.clean_snapshot defaults to on and behavior.idle_action to stop;
// both are read as written and shown in the API.
func TestCleanSnapshotAndIdleActionKeys(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "p.yaml"), []byte("name: plain\ntemplate_vmid: 9000\n---\nname: custom\ntemplate_vmid: 9000\nbehavior:\n  clean_snapshot: false\n  idle_action: hibernate\n"), 0o644)
	set, err := LoadDir(dir, "vmbr1")
	if err != nil {
		t.Fatal(err)
	}
	if a := set["plain"].API(); !a.CleanSnapshot || a.IdleAction != IdleStop || !set["plain"].Behavior.TakesCleanSnapshot() {
		t.Fatalf("defaults: %+v", a)
	}
	if a := set["custom"].API(); a.CleanSnapshot || a.IdleAction != IdleHibernate || set["custom"].Behavior.TakesCleanSnapshot() {
		t.Fatalf("set: %+v", a)
	}
}
