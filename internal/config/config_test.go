package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/strictyaml"
)

// The documented sample must be exactly the defaults and mention every key, so
// the documentation cannot drift from the code.
func TestSampleIsTheDefaults(t *testing.T) {
	c := Default()
	if err := strictyaml.Decode("default.yaml", []byte(Sample), c); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Fatalf("sample differs from Default():\n%+v\n%+v", c, Default())
	}
	ty := reflect.TypeOf(Config{})
	for i := 0; i < ty.NumField(); i++ {
		tag := ty.Field(i).Tag.Get("yaml")
		if tag != "-" && !strings.Contains(Sample, "\n"+tag+":") {
			t.Errorf("key %s is not documented in default.yaml", tag)
		}
	}
}

func TestLoadErrorsNameFileKeyAndReason(t *testing.T) {
	dir := t.TempDir()
	cases := []struct{ yaml, want string }{
		{"provisioning_timout: 5m\n", "c.yaml:1: provisioning_timout: unknown key"},
		{"provisioning_timeout: 10\n", "c.yaml:1: provisioning_timeout: invalid duration \"10\""},
		{"provisioning_timeout: 0s\n", "c.yaml: provisioning_timeout: must be greater than zero"},
		{"idle_stop_cpu_threshold: 5\n", "c.yaml: idle_stop_cpu_threshold: must be between 0 and 1, got 5"},
		{"placement:\n  cpu_overcommit: 0\n", "c.yaml: placement.cpu_overcommit: must be between 0.1 and 64 cores per CPU, got 0"},
		{"placement:\n  max_inflight_per_node: 40\n", "c.yaml: placement.max_inflight_per_node: must be between 1 and 16, got 40"},
		{"idle_stop_enabled: yes please\n", "c.yaml:1: idle_stop_enabled: want true or false"},
		{"artifact_max_bytes: lots\n", "c.yaml:1: artifact_max_bytes: want a whole number, got \"lots\""},
		{"proxmox_url: http://pve:8006\n", "c.yaml: proxmox_url: want https://"},
		{"proxmox_token_id: agentd\n", "c.yaml: proxmox_token_id: want user@realm!name"},
		{"state_dir: relative\n", "c.yaml: state_dir: must be an absolute path"},
		{"listen: 8845\n", "c.yaml: listen: want host:port"},
		{"ssh_public_keys: [hello]\n", "c.yaml: ssh_public_keys[0]: not an OpenSSH public key"},
		{"ssh_jump_host: \"-oProxyCommand=x\"\n", "c.yaml: ssh_jump_host: want USER@HOST or HOST"},
		{"ssh_jump_host: \"root@a b\"\n", "c.yaml: ssh_jump_host: want USER@HOST or HOST"},
		{"tls_cert: /x.pem\n", "c.yaml: tls_cert: tls_cert and tls_key must be set together"},
		{"reconcile_interval: 1m\nreconcile_interval: 2m\n", "c.yaml:2: reconcile_interval: key appears twice"},
		{"- a\n", "want a mapping of key: value at the top level"},
		{"metrics_listen: 0.0.0.0:9464\n", "c.yaml: metrics_listen: \"0.0.0.0:9464\" is not a loopback address"},
		{"log_format: xml\n", "c.yaml: log_format: must be text or json"},
		{"max_ttl: 30s\n", "c.yaml: max_ttl: must be 0 (no maximum) or whole seconds of at least 1m"},
		{"max_sandboxes: 0\n", "c.yaml: max_sandboxes: must be at least 1"},
		{"artifact_quota_job_bytes: 0\n", "c.yaml: artifact_quota_job_bytes: must be greater than zero"},
		{"guest_upload_min_rate: -1\n", "c.yaml: guest_upload_min_rate: must be greater than zero"},
		{"guest_read_timeout: 0s\n", "c.yaml: guest_read_timeout: must be greater than zero"},
		{"workspace_storage: local-lvm,foo=bar\n", "c.yaml: workspace_storage: \"local-lvm,foo=bar\" is not a Proxmox storage id"},
		{"workspace_storages: [local-zfs, x]\n", "c.yaml: workspace_storages[1]: \"x\" is not a Proxmox storage id"},
		{"snippets_storage: local/snippets\n", "c.yaml: snippets_storage: \"local/snippets\" is not a Proxmox storage id"},
		{"sdn:\n  zone: agent-lab\n", "c.yaml: sdn.zone: want 2 to 8 letters and digits starting with a letter (a Proxmox SDN id), got \"agent-lab\""},
		{"sdn:\n  zone: agentlab9\n", "c.yaml: sdn.zone: want 2 to 8 letters"},
		{"sdn:\n  zone: al\n  vnet: \"\"\n", "c.yaml: sdn.vnet: want 2 to 8 letters"},
		{"sdn:\n  zone: al\n  tag: 16777216\n", "c.yaml: sdn.tag: want a VXLAN network identifier from 1 to 16777215, got 16777216"},
		{"sdn:\n  zone: al\n  tag: 0\n", "c.yaml: sdn.tag: want a VXLAN network identifier"},
		{"sdn:\n  zone: al\n  mtu: 100\n", "c.yaml: sdn.mtu: want 0 (Proxmox's default) or an MTU from 576 to 65520, got 100"},
		{"sdn:\n  zone: al\n  peers: [10.0.0.1, pve2]\n", "c.yaml: sdn.peers[1]: want a node's IP address, got \"pve2\""},
		{"agent_bridge: vmbr9\nsdn:\n  zone: al\n", "c.yaml: agent_bridge: is \"vmbr9\" but sdn.zone is set: the agent bridge is the VNet sdn.vnet (\"agentnet\"); leave agent_bridge out"},
	}
	for _, tc := range cases {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p)
		if err == nil || !strings.Contains(err.Error(), strings.Replace(tc.want, "c.yaml", p, 1)) {
			t.Errorf("%q: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// TestSDNMakesTheVNetTheBridge: with sdn.zone set the agent bridge is the
// VNet (agent_bridge left out, or naming the VNet); without, it is untouched.
func TestSDNMakesTheVNetTheBridge(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ yaml, bridge string }{
		{"sdn:\n  zone: agentlab\n", "agentnet"},
		{"agent_bridge: vnet7\nsdn:\n  zone: agentlab\n  vnet: vnet7\n", "vnet7"},
		{"agent_bridge: vmbr2\n", "vmbr2"},
	} {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(tc.yaml+"proxmox_node: pve1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(p)
		if err != nil {
			t.Errorf("%q: %v", tc.yaml, err)
		} else if c.AgentBridge != tc.bridge {
			t.Errorf("%q: bridge %q, want %q", tc.yaml, c.AgentBridge, tc.bridge)
		}
	}
}

func TestLoadAppliesValuesOverDefaults(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("proxmox_url: https://pve.example:8006\nproxmox_node: pve1\nidle_stop_minutes_default: 0\nssh_public_keys:\n  - ssh-ed25519 AAAAC3Nz op@laptop\n"), 0o600)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.ProxmoxURL != "https://pve.example:8006/api2/json" || c.ProxmoxNode != "pve1" || c.IdleStopMinutesDefault != 0 ||
		len(c.SSHPublicKeys) != 1 || c.TokenFile != "/var/lib/agentd/api-token" || c.ReconcileInterval.String() != "30s" {
		t.Fatalf("loaded %+v", c)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("a missing --config file must be an error")
	}
}
