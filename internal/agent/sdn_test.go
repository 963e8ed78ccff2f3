package agent_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/config"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// sdnCluster is a 3-node simulated cluster and the config of an agent that
// puts its network on the SDN zone "agentlab".
func sdnCluster(t *testing.T) (*pvesim.Sim, *config.Config, *pve.Client) {
	t.Helper()
	sim, err := pvesim.New(pvesim.Options{Fixtures: true, Nodes: pvesim.NodeNames(3), TemplatePerNode: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	id, secret := sim.Token()
	cfg := config.Default()
	cfg.ProxmoxURL, cfg.ProxmoxTokenID, cfg.ProxmoxTokenSecret, cfg.ProxmoxCAPEM, cfg.ProxmoxNode = sim.URL(), id, secret, sim.CAPEM(), sim.Node()
	cfg.SDN.Zone = "agentlab"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	pc, err := agent.ProxmoxClient(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sim, cfg, pc
}

// simDo is one raw API request to the simulator; it returns the status
// line and the data of the answer.
func simDo(t *testing.T, sim *pvesim.Sim, method, path, body string) (string, any) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(sim.CAPEM())
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequestWithContext(tctx(t), method, sim.URL()+path, strings.NewReader(body))
	id, secret := sim.Token()
	req.Header.Set("Authorization", "PVEAPIToken="+id+"="+secret)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var env struct {
		Data any `json:"data"`
	}
	json.Unmarshal(b, &env)
	return resp.Status, env.Data
}

func simGet(t *testing.T, sim *pvesim.Sim, path string) []map[string]any {
	t.Helper()
	status, data := simDo(t, sim, "GET", path, "")
	if !strings.HasPrefix(status, "200") {
		t.Fatalf("GET %s: %s", path, status)
	}
	var out []map[string]any
	b, _ := json.Marshal(data)
	json.Unmarshal(b, &out)
	return out
}

// simWait polls a task of the simulator until it ends OK.
func simWait(t *testing.T, sim *pvesim.Sim, upid string) {
	t.Helper()
	node := strings.Split(upid, ":")[1]
	for i := 0; i < 1000; i++ {
		_, data := simDo(t, sim, "GET", "/nodes/"+node+"/tasks/"+url.PathEscape(upid)+"/status", "")
		st, _ := data.(map[string]any)
		if st["status"] == "stopped" {
			if st["exitstatus"] != "OK" {
				t.Fatalf("task %s: %v", upid, st["exitstatus"])
			}
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("task %s did not end", upid)
}

func opStrings(chs []pve.SDNChange) []string {
	var out []string
	for _, c := range chs {
		out = append(out, c.Op+" "+c.Kind+" "+c.ID)
	}
	return out
}

// TestSDNApplyTwice: the first apply on a 3-node cluster creates the VXLAN
// zone (peers: the three nodes' addresses), the VNet and the agent subnet
// and applies them; the second finds everything in place and applied and
// writes nothing. A change of config (the MTU) is one update and an apply;
// an interrupted run (objects written, never applied) is finished by the
// next.
func TestSDNApplyTwice(t *testing.T) {
	sim, cfg, pc := sdnCluster(t)
	ctx := tctx(t)
	if cfg.AgentBridge != "agentnet" {
		t.Fatalf("agent bridge %q, want the VNet agentnet", cfg.AgentBridge)
	}
	// A dry run (render) writes nothing.
	_, changes, err := agent.EnsureSDN(ctx, cfg, pc, true)
	if err != nil || len(changes) != 4 {
		t.Fatalf("dry run: %v %v", changes, err)
	}
	if z := simGet(t, sim, "/cluster/sdn/zones"); len(z) != 0 {
		t.Fatalf("dry run wrote %v", z)
	}
	plan, changes, err := agent.EnsureSDN(ctx, cfg, pc, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"create zone agentlab", "create vnet agentnet", "create subnet agentlab-10.77.0.0-16", "apply sdn "}
	if got := opStrings(changes); !reflect.DeepEqual(got, want) {
		t.Fatalf("first apply: %v, want %v", got, want)
	}
	if !reflect.DeepEqual(plan.Peers, []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}) {
		t.Errorf("peers %v", plan.Peers)
	}
	// What the nodes run (the committed config), as Proxmox shows it.
	zones := simGet(t, sim, "/cluster/sdn/zones?running=1")
	if len(zones) != 1 || zones[0]["zone"] != "agentlab" || zones[0]["type"] != "vxlan" || zones[0]["peers"] != "127.0.0.1,127.0.0.2,127.0.0.3" || zones[0]["mtu"] != nil {
		t.Fatalf("running zones %v", zones)
	}
	vnets := simGet(t, sim, "/cluster/sdn/vnets?running=1")
	if len(vnets) != 1 || vnets[0]["vnet"] != "agentnet" || vnets[0]["zone"] != "agentlab" || vnets[0]["tag"] != 7700.0 || vnets[0]["alias"] != pve.SDNAlias {
		t.Fatalf("running vnets %v", vnets)
	}
	subs := simGet(t, sim, "/cluster/sdn/vnets/agentnet/subnets?running=1")
	if len(subs) != 1 || subs[0]["cidr"] != "10.77.0.0/16" || subs[0]["gateway"] != "10.77.0.1" {
		t.Fatalf("running subnets %v", subs)
	}
	for _, p := range []string{"/cluster/sdn/zones?pending=1", "/cluster/sdn/vnets?pending=1", "/cluster/sdn/vnets/agentnet/subnets?pending=1"} {
		for _, o := range simGet(t, sim, p) {
			if o["state"] != nil {
				t.Errorf("%s after apply: %v", p, o)
			}
		}
	}
	// The second run: nothing written, no apply.
	_, before := sim.RequestCount()
	if _, changes, err = agent.EnsureSDN(ctx, cfg, pc, false); err != nil || len(changes) != 0 {
		t.Fatalf("second apply: %v %v", changes, err)
	}
	_, after := sim.RequestCount()
	for k, n := range after {
		if !strings.HasPrefix(k, "GET ") && n != before[k] {
			t.Errorf("second apply sent %s (%d times)", k, n-before[k])
		}
	}
	// A changed MTU is one update, then an apply.
	cfg.SDN.MTU = 1400
	if _, changes, err = agent.EnsureSDN(ctx, cfg, pc, false); err != nil || !reflect.DeepEqual(opStrings(changes), []string{"update zone agentlab", "apply sdn "}) ||
		!reflect.DeepEqual(changes[0].Fields, []string{"mtu"}) {
		t.Fatalf("mtu change: %v %v", changes, err)
	}
	if z := simGet(t, sim, "/cluster/sdn/zones?running=1"); z[0]["mtu"] != 1400.0 {
		t.Fatalf("mtu not applied: %v", z)
	}
	// Written but not applied (a run killed before PUT /cluster/sdn): the
	// next run only applies.
	if st, _ := simDo(t, sim, "PUT", "/cluster/sdn/vnets/agentnet", `{"tag":7701}`); !strings.HasPrefix(st, "200") {
		t.Fatal(st)
	}
	cfg.SDN.Tag = 7701
	if _, changes, err = agent.EnsureSDN(ctx, cfg, pc, false); err != nil || !reflect.DeepEqual(opStrings(changes), []string{"apply sdn "}) {
		t.Fatalf("pending own change: %v %v", changes, err)
	}
	if v := simGet(t, sim, "/cluster/sdn/vnets?running=1"); v[0]["tag"] != 7701.0 {
		t.Fatalf("tag not applied: %v", v)
	}
}

// TestSDNRefusesForeignObjects: SDN objects of the ids agentd wants that it
// did not create, and others' pending SDN changes, are a clear error;
// nothing is written, nothing applied.
func TestSDNRefusesForeignObjects(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup []string // method path body
		want  string
	}{
		{"vnet without our alias", []string{
			`POST /cluster/sdn/zones {"zone":"agentlab","type":"vxlan","peers":"127.0.0.1"}`,
			`POST /cluster/sdn/vnets {"vnet":"agentnet","zone":"agentlab","tag":42}`,
			`PUT /cluster/sdn `}, `VNet agentnet exists (zone agentlab, alias "") and is not agentd's`},
		{"vnet in another zone", []string{
			`POST /cluster/sdn/zones {"zone":"theirs","type":"simple"}`,
			`POST /cluster/sdn/vnets {"vnet":"agentnet","zone":"theirs","alias":"agentlab managed by agentd"}`,
			`PUT /cluster/sdn `}, `VNet agentnet exists (zone theirs,`},
		{"zone of another type", []string{
			`POST /cluster/sdn/zones {"zone":"agentlab","type":"simple"}`,
			`PUT /cluster/sdn `}, "zone agentlab exists with type simple"},
		{"zone holding their vnets", []string{
			`POST /cluster/sdn/zones {"zone":"agentlab","type":"vxlan","peers":"127.0.0.1"}`,
			`POST /cluster/sdn/vnets {"vnet":"web","zone":"agentlab","tag":42}`}, "zone agentlab exists and holds VNet(s) web"},
		{"applied empty zone", []string{
			`POST /cluster/sdn/zones {"zone":"agentlab","type":"vxlan","peers":"127.0.0.9"}`,
			`PUT /cluster/sdn `}, "zone agentlab exists (applied, no VNet of agentd's in it)"},
		{"their pending change", []string{
			`POST /cluster/sdn/zones {"zone":"web","type":"simple"}`}, "SDN has pending changes agentd did not make (zone web (new))"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim, cfg, pc := sdnCluster(t)
			for _, s := range tc.setup {
				f := strings.SplitN(s, " ", 3)
				st, data := simDo(t, sim, f[0], f[1], f[2])
				if !strings.HasPrefix(st, "200") {
					t.Fatalf("%s: %s", s, st)
				}
				if up, ok := data.(string); ok && strings.HasPrefix(up, "UPID:") {
					simWait(t, sim, up)
				}
			}
			_, before := sim.RequestCount()
			_, changes, err := agent.EnsureSDN(tctx(t), cfg, pc, false)
			if !errors.Is(err, pve.ErrForeignSDN) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "agentd changes only SDN objects it created") {
				t.Fatalf("got %v (changes %v), want ErrForeignSDN with %q", err, changes, tc.want)
			}
			_, after := sim.RequestCount()
			for k, n := range after {
				if !strings.HasPrefix(k, "GET ") && n != before[k] {
					t.Errorf("refused apply still sent %s", k)
				}
			}
		})
	}
}
