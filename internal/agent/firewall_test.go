package agent_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/netpolicy"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
)

// TestNetworkModesUseProxmoxFirewall: each profile mode ends as exactly one
// security-group rule on the VM, with the VM firewall on and net0 firewall=1,
// and the groups hold the mode's rules.
func TestNetworkModesUseProxmoxFirewall(t *testing.T) {
	d, _ := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	os.WriteFile(filepath.Join(d.Config.ProfilesDir, "modes.yaml"), []byte(`name: sealed
template_vmid: 9000
network:
  mode: "off"
---
name: tight
template_vmid: 9000
network:
  mode: allowlist
  allowlist: ["203.0.113.0/24:443", "198.51.100.7"]
`), 0o644)
	if err := d.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := tcpClient(t, d, d.Info.Token)
	pc := pveClient(t, d)
	before, _ := d.Sim.RequestCount()
	want := map[string]string{"yolo-ephemeral": "agentlab-nat", "sealed": "agentlab-off", "tight": "agentlab-a"}
	for prof, group := range want {
		name := "fw-" + strings.ReplaceAll(prof, "yolo-", "")
		c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: prof})
		sb, err := c.WaitSandbox(ctx, name, 0)
		if err != nil || sb.State != api.StateRunning {
			t.Fatalf("%s: %+v %v", prof, sb, err)
		}
		rules, opts, err := pc.VMFirewallRules(ctx, sb.VMID)
		if err != nil {
			t.Fatal(err)
		}
		if len(rules) != 1 || rules[0].Type != "group" || !strings.HasPrefix(rules[0].Action, group) || rules[0].Enable != 1 || len(rules[0].Errors) != 0 {
			t.Errorf("%s: VM rules %+v", prof, rules)
		}
		if opts["enable"] != float64(1) || opts["policy_in"] != "ACCEPT" || opts["policy_out"] != "ACCEPT" {
			t.Errorf("%s: VM firewall options %v", prof, opts)
		}
		if !strings.Contains(vms(d)[sb.VMID].Config["net0"], "firewall=1") {
			t.Errorf("%s: net0 without firewall=1", prof)
		}
	}
	_, byPath := d.Sim.RequestCount()
	_ = before
	if n := byPath["POST /nodes/{node}/qemu/{vmid}/firewall/rules"]; n != 3 {
		t.Errorf("%d VM rule creations, want 3", n)
	}
	if n := byPath["PUT /nodes/{node}/qemu/{vmid}/firewall/options"]; n != 3 {
		t.Errorf("%d VM option updates, want 3", n)
	}
	// The groups' rules.
	dump := func(g string) string {
		rs, err := pc.GroupRules(ctx, g)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rs {
			out = append(out, strings.TrimSpace(strings.Join([]string{r.Type, r.Action, r.Dest, r.Proto, r.DPort}, " ")))
			if r.Enable != 1 || len(r.Errors) > 0 {
				t.Errorf("%s: rule %+v not usable", g, r)
			}
		}
		return strings.Join(out, "\n")
	}
	head := "out ACCEPT 10.77.0.1 tcp 8844\nout ACCEPT 10.77.0.1 udp 53\nout ACCEPT 10.77.0.1 tcp 53\n"
	if got := dump("agentlab-off"); got != head+"out DROP" {
		t.Errorf("agentlab-off:\n%s", got)
	}
	if got := dump("agentlab-nat"); !strings.HasPrefix(got, head) || !strings.Contains(got, "out DROP 192.168.0.0/16") ||
		!strings.Contains(got, "out DROP 169.254.0.0/16") || !strings.Contains(got, "out DROP 100.64.0.0/10") || strings.HasSuffix(got, "out DROP") {
		t.Errorf("agentlab-nat:\n%s", got)
	}
	rules, _, _ := pc.VMFirewallRules(ctx, mustVMID(t, c, "fw-tight"))
	if got := dump(rules[0].Action); got != head+"out ACCEPT 203.0.113.0/24 tcp 443\nout ACCEPT 198.51.100.7/32\nout DROP" {
		t.Errorf("%s:\n%s", rules[0].Action, got)
	}
	// Applying again changes nothing (restart re-applies the groups).
	_, before2 := d.Sim.RequestCount()
	if err := d.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, after2 := d.Sim.RequestCount()
	if after2["POST /cluster/firewall/groups/{group}"] != before2["POST /cluster/firewall/groups/{group}"] {
		t.Error("re-applying unchanged groups rewrote their rules")
	}
	_ = pve.FwRule{}
}

func mustVMID(t *testing.T, c interface {
	Sandbox(context.Context, string) (*api.Sandbox, error)
}, name string) int {
	sb, err := c.Sandbox(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return sb.VMID
}

type setLog struct {
	mu  sync.Mutex
	ops []string
}

func (s *setLog) Add(_ context.Context, b netpolicy.Binding) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops = append(s.ops, fmt.Sprintf("add %s %s %s %v", b.Addr, b.MAC, b.Mode, b.Ports))
	return nil
}

func (s *setLog) Remove(_ context.Context, b netpolicy.Binding) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops = append(s.ops, fmt.Sprintf("remove %s %s %s %v", b.Addr, b.MAC, b.Mode, b.Ports))
	return nil
}

// TestModeSetsFollowAddresses: a sandbox's binding (assigned address, the MAC
// agentd derived from it, its bridge ports, its mode) is in the nftables sets
// exactly while its VM may run (BOOTING to RUNNING), before the first boot,
// and the address survives stop/start (the real sets are exercised with
// packets in internal/netpolicy).
func TestModeSetsFollowAddresses(t *testing.T) {
	log := &setLog{}
	_, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{Addresses: log}})
	ctx := tctx(t)
	sb := create(t, c, "sets")
	c.Stop(ctx, "sets")
	c.Start(ctx, "sets")
	sb2, _ := c.WaitSandbox(ctx, "sets", 0)
	c.Destroy(ctx, "sets", false)
	if sb2.IP != sb.IP {
		t.Fatalf("address changed across stop/start: %s → %s", sb.IP, sb2.IP)
	}
	a := netip.MustParseAddr(sb.IP)
	bind := fmt.Sprintf("%s %s nat %v", a, netpolicy.MAC(a), netpolicy.Ports(sb.VMID))
	want := []string{"add " + bind, "remove " + bind, "add " + bind, "remove " + bind}
	if strings.Join(log.ops, "; ") != strings.Join(want, "; ") {
		t.Fatalf("set updates:\n got %v\nwant %v", log.ops, want)
	}
}

// TestProxmoxFirewallBindsTheAddress: the VM firewall is bound to the
// sandbox's assigned address and agentd's MAC: ipfilter=1, macfilter=1, the
// ipfilter-net0 IP set holding exactly the address, net0 carrying the MAC and
// ipconfig0 the static address with the gateway.
func TestProxmoxFirewallBindsTheAddress(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	sb := create(t, c, "bound")
	set, ok := d.Sim.IPSet(sb.VMID, pve.IPFilterSet)
	if !ok || len(set) != 1 || set[0] != sb.IP {
		t.Fatalf("ipfilter-net0 of VM %d: %v %v (address %s)", sb.VMID, set, ok, sb.IP)
	}
	pc, _ := agent.ProxmoxClient(d.Config, nil)
	_, opts, err := pc.VMFirewallRules(tctx(t), sb.VMID)
	if err != nil || fmt.Sprint(opts["ipfilter"]) != "1" || fmt.Sprint(opts["macfilter"]) != "1" || fmt.Sprint(opts["enable"]) != "1" {
		t.Fatalf("firewall options %v %v", opts, err)
	}
	cfg, _ := pc.Config(tctx(t), sb.VMID)
	a := netip.MustParseAddr(sb.IP)
	if !strings.Contains(fmt.Sprint(cfg["net0"]), netpolicy.MAC(a).String()) || cfg["ipconfig0"] != "ip="+sb.IP+"/16,gw=10.77.0.1" || cfg["nameserver"] != "10.77.0.1" {
		t.Fatalf("config net0=%v ipconfig0=%v nameserver=%v", cfg["net0"], cfg["ipconfig0"], cfg["nameserver"])
	}
}

// TestBindingRemovedAfterRestart: agentd restarted while a sandbox RUNs must
// still remove its binding when it stops or is destroyed. Left in the sets,
// (tap<vmid>i0, MAC, address) would let the next VM Proxmox gives that VMID
// send as the old address, which IPAM hands to another sandbox later.
func TestBindingRemovedAfterRestart(t *testing.T) {
	log := &setLog{}
	d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{Addresses: log}})
	ctx := tctx(t)
	sb := create(t, c, "restarted")
	if err := d.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	c = tcpClient(t, d, d.Info.Token)
	if _, err := c.Destroy(ctx, "restarted", false); err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr(sb.IP)
	bind := fmt.Sprintf("%s %s nat %v", a, netpolicy.MAC(a), netpolicy.Ports(sb.VMID))
	log.mu.Lock()
	defer log.mu.Unlock()
	if n := len(log.ops); n == 0 || log.ops[n-1] != "remove "+bind {
		t.Fatalf("set updates after a restart and destroy:\n got %v\nwant the last to be remove %s", log.ops, bind)
	}
}

// failingSets refuses every Add (the tables are not loaded, nft is missing).
type failingSets struct{ setLog }

func (f *failingSets) Add(_ context.Context, b netpolicy.Binding) error {
	return fmt.Errorf("nft: Error: No such file or directory (table bridge agentlab)")
}

// TestUnboundSandboxDoesNotStart: a binding agentd cannot put in place fails
// the start instead of only being logged: on a kernel without nft bridge
// meta the bridge table does not filter a port it was never told about, so
// the VM would send as any address and MAC.
func TestUnboundSandboxDoesNotStart(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{Addresses: &failingSets{}}})
	ctx := tctx(t)
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "unbound", Profile: "yolo-ephemeral"}); err != nil {
		t.Fatal(err)
	}
	sb, err := c.WaitSandbox(ctx, "unbound", 0)
	if err == nil && sb.State == api.StateRunning {
		t.Fatalf("sandbox RUNNING although its binding failed")
	}
	got, _ := c.Sandbox(ctx, "unbound")
	if got == nil || !strings.Contains(got.Error, "bind ") {
		t.Fatalf("sandbox %+v: want a start failure naming the binding", got)
	}
	pc, _ := agent.ProxmoxClient(d.Config, nil)
	if st, err := pc.Status(ctx, got.VMID); err == nil && st.Status == "running" {
		t.Fatalf("VM %d runs unbound", got.VMID)
	}
}

// TestMissingSecurityGroupFailsTheCreate: a security group removed out of band
// (the VM rule would reference nothing) fails the create at the firewall step
// with an error naming the group and the command that recreates it, and the
// VM is not started.
func TestMissingSecurityGroupFailsTheCreate(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(d.Sim.CAPEM()))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	id, secret := d.Sim.Token()
	pveDo := func(method, path string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, method, d.Sim.URL()+path, nil)
		req.Header.Set("Authorization", "PVEAPIToken="+id+"="+secret)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// Empty the group (rules are addressed by position), then delete it.
	for {
		code, body := pveDo("GET", "/cluster/firewall/groups/agentlab-nat")
		if code != 200 {
			t.Fatalf("group: %d %s", code, body)
		}
		if !strings.Contains(body, `"pos"`) {
			break
		}
		if code, body := pveDo("DELETE", "/cluster/firewall/groups/agentlab-nat/0"); code != 200 {
			t.Fatalf("delete rule: %d %s", code, body)
		}
	}
	if code, body := pveDo("DELETE", "/cluster/firewall/groups/agentlab-nat"); code != 200 {
		t.Fatalf("delete group: %d %s", code, body)
	}
	c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "nogroup", Profile: "yolo-ephemeral"})
	sb, err := c.WaitSandbox(ctx, "nogroup", 0)
	if err != nil {
		t.Fatal(err)
	}
	if sb.State != api.StateFailed || !strings.Contains(sb.Error, "security group agentlab-nat does not exist (run agentd host network apply") {
		t.Fatalf("create without its security group: %s %q", sb.State, sb.Error)
	}
	if vm, ok := vms(d)[sb.VMID]; ok && vm.Running {
		t.Fatalf("the VM was started without its firewall rule")
	}
}

// TestOnlyThisNodesSandboxesBoundHere: agentd's own nftables sets hold the
// sandboxes of its own node only; another node's sandbox is bound by that
// node's agent (its node duties). Bound here as well, on an SDN VNet its MAC
// and address would count as this node's, which nothing from the tunnel
// may claim, and its frames from the other node would be dropped here.
func TestOnlyThisNodesSandboxesBoundHere(t *testing.T) {
	log := &setLog{}
	d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{Addresses: log}})
	ctx := tctx(t)
	here := d.Config.ProxmoxNode
	for _, node := range []string{here, "pve2"} {
		sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "on-" + node, Profile: "yolo-ephemeral", Node: node})
		if err != nil {
			t.Fatal(err)
		}
		if sb, err = c.WaitSandbox(ctx, sb.ID, 10*time.Millisecond); err != nil || sb.State != api.StateRunning || sb.Node != node {
			t.Fatalf("sandbox on %s: %+v %v", node, sb, err)
		}
		log.mu.Lock()
		bound := strings.Contains(strings.Join(log.ops, "; "), "add "+sb.IP+" ")
		log.mu.Unlock()
		if bound != (node == here) {
			t.Errorf("sandbox on %s (agentd on %s): bound in agentd's sets %v; set updates %v", node, here, bound, log.ops)
		}
	}
}
