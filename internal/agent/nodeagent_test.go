package agent_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

// TestNodeAgentDuties: a node agent's token gets its node's duties (the
// ruleset binds the sandboxes on that node and no other's) and nothing
// else; its SSH report is what idle stop knows of that node, and a node with
// no fresh report has its sandboxes' activity unknown, never idle.
func TestNodeAgentDuties(t *testing.T) {
	clk := &fakeClock{t: time.Now().UTC().Truncate(time.Second)}
	ct := &fakeConntrack{}
	d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{Now: clk.Now, Conntrack: ct.list, NoLoops: true}})
	ctx := tctx(t)
	on := oneOnEachNode(t, d, c)
	for _, sb := range on {
		d.Sim.SetCPU(sb.VMID, 0.01)
	}
	tok, err := c.CreateToken(ctx, api.CreateTokenRequest{Name: "pve2-agent", Role: "node", Node: "pve2"})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := client.New(client.Config{Endpoint: d.Info.Endpoint, Token: tok.Value, CACert: d.Info.CACert})
	if err != nil {
		t.Fatal(err)
	}
	du, err := nc.NodeDuties(ctx, "pve2")
	if err != nil || du.Bindings != 1 {
		t.Fatalf("pve2's duties: %+v %v", du, err)
	}
	if !strings.Contains(du.Ruleset, on["pve2"].IP) || strings.Contains(du.Ruleset, on["pve1"].IP) || strings.Contains(du.Ruleset, on["pve3"].IP) {
		t.Fatalf("pve2's ruleset binds the wrong sandboxes (pve2 %s, pve1 %s, pve3 %s):\n%s", on["pve2"].IP, on["pve1"].IP, on["pve3"].IP, du.Ruleset)
	}
	if _, err := nc.NodeDuties(ctx, "pve1"); !client.IsNotFound(err) {
		t.Fatalf("pve2's agent asking for pve1's duties: %v", err)
	}
	if _, err := nc.Sandboxes(ctx, url.Values{}); !api.IsCode(err, api.CodeForbidden) {
		t.Fatalf("a node-agent token listing sandboxes: %v", err)
	}
	if _, err := c.CreateToken(ctx, api.CreateTokenRequest{Name: "x", Role: "node"}); !api.IsCode(err, api.CodeInvalidField) {
		t.Fatalf("a node token without its node: %v", err)
	}
	// pve2 reports an SSH session to its sandbox; pve3 never reports.
	if err := nc.ReportNode(ctx, "pve2", api.NodeReport{Version: "test", SSHFlows: []string{on["pve2"].IP}, Bindings: 1}); err != nil {
		t.Fatal(err)
	}
	ns, err := c.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if (n.Agent != nil) != (n.Name == "pve2") || n.Agent != nil && (!n.Agent.Fresh || n.Agent.Bindings != 1) {
			t.Fatalf("node %s agent %+v", n.Name, n.Agent)
		}
	}
	clk.Add(31 * time.Minute) // past yolo-ephemeral's 30 min window
	if err := nc.ReportNode(ctx, "pve2", api.NodeReport{Version: "test", SSHFlows: []string{on["pve2"].IP}}); err != nil {
		t.Fatal(err)
	}
	if err := d.Manager.IdleStop(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]api.State{"pve1": api.StateStopped, "pve2": api.StateRunning, "pve3": api.StateRunning}
	for node, w := range want {
		if got, _ := c.Sandbox(ctx, on[node].ID); got.State != w {
			t.Errorf("sandbox on %s is %s after 31 idle minutes, want %s (pve1: local conntrack shows nothing; pve2: its agent reports SSH; pve3: no agent, activity unknown)", node, got.State, w)
		}
	}
}

// TestGuestRelay: a node agent relays its guests' requests to agentd, which
// believes the guest's address only from the agent of the node that
// address's sandbox runs on: a guest cannot claim another guest's address
// through a header, and one node's agent cannot speak for another node's
// guests.
func TestGuestRelay(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Nodes: 3, Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	on := oneOnEachNode(t, d, c)
	relay := func(node string) http.Handler {
		tok, err := c.CreateToken(ctx, api.CreateTokenRequest{Name: node + "-agent", Role: "node", Node: node})
		if err != nil {
			t.Fatal(err)
		}
		nc, err := client.New(client.Config{Endpoint: d.Info.Endpoint, Token: tok.Value, CACert: d.Info.CACert})
		if err != nil {
			t.Fatal(err)
		}
		return nc.GuestRelay(node)
	}
	pve2, pve3 := relay("pve2"), relay("pve3")
	ask := func(h http.Handler, from string, hdr map[string]string) (int, string) {
		req := httptest.NewRequest("GET", "/healthz", nil)
		req.RemoteAddr = net.JoinHostPort(from, "40000")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	if code, body := ask(pve2, on["pve2"].IP, nil); code != 200 || body != "ok\n" {
		t.Fatalf("pve2's guest through pve2's relay: %d %s", code, body)
	}
	// The guest's team header selects nothing and tells nothing.
	if code, body := ask(pve2, on["pve2"].IP, map[string]string{api.TeamHeader: "no-such-team"}); code != 200 {
		t.Fatalf("pve2's guest with a team header: %d %s", code, body)
	}
	for _, tc := range []struct {
		name string
		h    http.Handler
		from string
		hdr  map[string]string
	}{
		{"pve1's guest through pve2's relay", pve2, on["pve1"].IP, nil},
		{"pve2's guest through pve3's relay", pve3, on["pve2"].IP, nil},
		{"a stranger claiming pve2's guest's address", pve2, "10.99.0.7", map[string]string{api.GuestAddrHeader: on["pve2"].IP}},
		{"a stranger with the relay's own route in the path", pve2, "10.99.0.7", map[string]string{"X-Forwarded-For": on["pve2"].IP}},
	} {
		if code, body := ask(tc.h, tc.from, tc.hdr); code != http.StatusForbidden || !strings.Contains(body, "is not the address of a sandbox on node") {
			t.Errorf("%s: %d %s, want 403", tc.name, code, body)
		}
	}
	// The relay's route is for node agents only: a team or admin token is
	// not a node and cannot name a guest address.
	raw, err := client.New(client.Config{Endpoint: d.Info.Endpoint, Token: d.Info.Token, CACert: d.Info.CACert})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := ask(raw.GuestRelay("pve2"), on["pve2"].IP, nil); code != http.StatusForbidden {
		t.Fatalf("the admin token relaying for pve2: %d %s, want 403", code, body)
	}
}

// oneOnEachNode creates a running sandbox on each node of a 3-node dev
// cluster (placement spreads them) and returns them by node.
func oneOnEachNode(t *testing.T, d *agent.Dev, c *client.Client) map[string]*api.Sandbox {
	t.Helper()
	ctx := tctx(t)
	on := map[string]*api.Sandbox{}
	for _, n := range []string{"s1", "s2", "s3"} {
		sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: n, Profile: "yolo-ephemeral", TTL: "0"})
		if err != nil {
			t.Fatal(err)
		}
		if sb, err = c.WaitSandbox(ctx, sb.ID, 10*time.Millisecond); err != nil || sb.State != api.StateRunning {
			t.Fatalf("%s: %+v %v", n, sb, err)
		}
		on[sb.Node] = sb
	}
	if len(on) != 3 {
		t.Fatalf("sandboxes on %v, want one per node", on)
	}
	return on
}
