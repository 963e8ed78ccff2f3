package hostcheck_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/hostcheck"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
)

func TestHostCheck(t *testing.T) {
	ctx := context.Background()
	d, err := agent.StartDev(ctx, agent.DevOptions{StateDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	id, secret := d.Sim.Token()
	pc, _ := pve.New(pve.Config{URL: d.Sim.URL(), TokenID: id, Secret: secret, Node: "pve", CAPEM: d.Sim.CAPEM()})
	profiles, err := profile.LoadDefaults("vmbr1")
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(d.Config.SnippetsDir, 0o755)
	good := t.TempDir()
	os.MkdirAll(filepath.Join(good, "sys/class/net/vmbr1/bridge"), 0o755)
	os.WriteFile(filepath.Join(good, "sys/class/net/vmbr1/bridge/no_linklocal_learn"), []byte("1\n"), 0o644)
	os.MkdirAll(filepath.Join(good, "proc/sys/net/ipv4"), 0o755)
	os.WriteFile(filepath.Join(good, "proc/sys/net/ipv4/ip_forward"), []byte("1\n"), 0o644)
	os.MkdirAll(filepath.Join(good, "proc/sys/net/bridge"), 0o755)
	os.WriteFile(filepath.Join(good, "proc/sys/net/bridge/bridge-nf-call-iptables"), []byte("1\n"), 0o644)
	have := func(string) (string, error) { return "/usr/sbin/x", nil }
	tables := func(_ context.Context, args ...string) (string, error) {
		return "table " + args[2] + " agentlab { set bindings {} ... ether daddr 01:80:c2:00:00:00-01:80:c2:00:00:0f drop ... chain to_sandbox { ... } }", nil
	}
	resolver, _ := net.Listen("tcp", "127.0.0.1:0")
	defer resolver.Close()
	dialResolver := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, resolver.Addr().String())
	}
	d.Sim.SetClusterFirewall(map[string]string{"enable": "1"})
	d.Config.GuestCheckSourceIP = true // dev mode's guests are local processes; a host's are not
	for _, r := range hostcheck.Run(ctx, d.Config, profiles, pc, hostcheck.Host{Root: good, LookPath: have, Nft: tables, Dial: dialResolver}) {
		if r.Status != hostcheck.OK {
			t.Errorf("healthy host: %+v", r)
		}
	}
	// A bare host and a broken template: every problem reported with a fix.
	d.Sim.AddVM("pve", 9100, map[string]string{"name": "not-a-template", "scsi0": "local-lvm:5", "memory": "512"}, false)
	p := *profiles["yolo-ephemeral"]
	p.Name, p.TemplateVMID = "broken", 9100
	profiles["broken"] = &p
	// By name: resolved to the node's template of that name, or reported.
	byName, ghost := *profiles["yolo-ephemeral"], *profiles["yolo-ephemeral"]
	byName.Name, byName.TemplateVMID, byName.Template = "byname", 0, "ubuntu-2404-agent"
	ghost.Name, ghost.TemplateVMID, ghost.Template = "ghost", 0, "no-such-template"
	profiles["byname"], profiles["ghost"] = &byName, &ghost
	missing := func(string) (string, error) { return "", errors.New("not found") }
	cfg := *d.Config
	cfg.SnippetsDir, cfg.SnippetsStorage = filepath.Join(t.TempDir(), "nope"), "local-lvm"
	cfg.GuestCheckSourceIP = false
	got := map[string]hostcheck.Result{}
	d.Sim.SetClusterFirewall(map[string]string{"enable": "0"})
	noTables := func(context.Context, ...string) (string, error) {
		return "Error: No such file or directory", errors.New("exit status 1")
	}
	// A ruleset from before the link-local and reply-chain fixes is older,
	// not loaded; a bridge that learns from link-local frames fails.
	older := func(_ context.Context, args ...string) (string, error) {
		return "table " + args[2] + " agentlab { set bindings {} ... @bindings ... drop comment \"default deny\" }", nil
	}
	learns := t.TempDir()
	os.MkdirAll(filepath.Join(learns, "sys/class/net/vmbr1/bridge"), 0o755)
	os.WriteFile(filepath.Join(learns, "sys/class/net/vmbr1/bridge/no_linklocal_learn"), []byte("0\n"), 0o644)
	seen := 0
	for _, r := range hostcheck.Run(ctx, d.Config, profiles, pc, hostcheck.Host{Root: learns, LookPath: have, Nft: older, Dial: dialResolver}) {
		switch r.Check {
		case "nft bridge agentlab", "nft inet agentlab":
			if r.Status != hostcheck.Fail || !strings.Contains(r.Detail, "older ruleset") {
				t.Errorf("a ruleset from before the fixes: %+v", r)
			}
		case "bridge no_linklocal_learn":
			if r.Status != hostcheck.Fail || r.Fix == "" || !strings.Contains(r.Fix, "no_linklocal_learn 1") {
				t.Errorf("a bridge learning from link-local frames: %+v", r)
			}
		default:
			continue
		}
		seen++
	}
	if seen != 3 {
		t.Errorf("checks of the older ruleset and the learning bridge: %d of 3", seen)
	}
	noResolver := func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("connection refused") }
	for _, r := range hostcheck.Run(ctx, &cfg, profiles, pc, hostcheck.Host{Root: t.TempDir(), LookPath: missing, Nft: noTables, Dial: noResolver}) {
		got[r.Check] = r
	}
	for check, want := range map[string]string{
		"bridge":                 "vmbr1 does not exist",
		"ip_forward":             "forwarding is off",
		"nftables":               "nft is not installed",
		"conntrack":              "idle auto-stop cannot see SSH sessions",
		"snippets_dir":           "does not exist",
		"snippets_storage":       "local-lvm does not allow snippets",
		"template 9100 (broken)": "not a template (qm template 9100); guest agent not enabled",
		"template 9000 (byname, interactive-dev, yolo-ephemeral, yolo-workspace)": "template with cloud-init",
		"template no-such-template (ghost)":                                       "no template of that name on node pve",
		"nft bridge agentlab":                                                     "the bridge table",
		"nft inet agentlab":                                                       "default-deny forward",
		"br_netfilter":                                                            "br_netfilter is not loaded",
		"datacenter firewall":                                                     "the datacenter firewall is off",
		"resolver":                                                                "nothing answers on 10.77.0.1:53",
		"guest_check_source_ip":                                                   "accepted from any address",
	} {
		r, ok := got[check]
		if !ok || !strings.Contains(r.Detail, want) {
			t.Errorf("%s: %+v, want detail with %q", check, r, want)
		}
		if ok && r.Status != hostcheck.OK && r.Fix == "" {
			t.Errorf("%s: failure without a fix", check)
		}
	}
	if got["conntrack"].Status != hostcheck.Warn || got["bridge"].Status != hostcheck.Fail {
		t.Errorf("statuses: %+v %+v", got["conntrack"], got["bridge"])
	}
}
