package agent_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/backup"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

// caller is one principal of the auth matrix: a bearer token on TCP, or the
// Unix socket.
type caller struct {
	name   string
	token  string
	socket bool
	team   string // Agentlab-Team header
}

// call sends one request as c and returns the status and the body.
func call(t testing.TB, d *agent.Dev, c caller, method, path, body string) (int, string) {
	t.Helper()
	base := d.Info.Endpoint
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	if c.socket {
		base = "http://agentd"
		tr = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", d.Info.Socket)
		}}
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.team != "" {
		req.Header.Set(api.TeamHeader, c.team)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s as %s: %v", method, path, c.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func errCode(body string) api.Code {
	var eb api.ErrorBody
	if json.Unmarshal([]byte(body), &eb) != nil || eb.Error == nil {
		return ""
	}
	return eb.Error.Code
}

// teamsDev is an agent with teams a and b and a token of every kind.
type teamsDev struct {
	d                                *agent.Dev
	global                           *client.Client
	aRead, aMember, aAdmin, bMember  string
	aReadC, aMemberC, aAdminC, bMemC *client.Client
	expired, revoked                 string
}

func issue(t testing.TB, c *client.Client, name, team, role, ttl string) *api.IssuedToken {
	t.Helper()
	tok, err := c.CreateToken(tctx(t), api.CreateTokenRequest{Name: name, Team: team, Role: role, TTL: ttl})
	if err != nil {
		t.Fatalf("token %s: %v", name, err)
	}
	return tok
}

func startTeams(t testing.TB, o agent.DevOptions, quotas map[string]api.TeamQuota) *teamsDev {
	t.Helper()
	d, c := startDev(t, o)
	ctx := tctx(t)
	for _, n := range []string{"a", "b"} {
		if _, err := c.CreateTeam(ctx, api.CreateTeamRequest{Name: n, Quota: quotas[n]}); err != nil {
			t.Fatal(err)
		}
	}
	e := &teamsDev{d: d, global: c}
	e.aRead = issue(t, c, "reader", "a", "read", "").Value
	e.aMember = issue(t, c, "dev", "a", "member", "").Value
	e.aAdmin = issue(t, c, "boss", "a", "admin", "").Value
	e.bMember = issue(t, c, "dev", "b", "member", "").Value
	e.expired = issue(t, c, "brief", "a", "admin", "1ms").Value
	rv := issue(t, c, "gone", "a", "admin", "")
	if _, err := c.RevokeToken(ctx, rv.ID); err != nil {
		t.Fatal(err)
	}
	e.revoked = rv.Value
	e.aReadC, e.aMemberC, e.aAdminC, e.bMemC = tcpClient(t, d, e.aRead), tcpClient(t, d, e.aMember), tcpClient(t, d, e.aAdmin), tcpClient(t, d, e.bMember)
	time.Sleep(5 * time.Millisecond) // let the 1ms token expire
	return e
}

// teamAObjects are real objects of team a that fill the matrix's paths.
type teamAObjects struct {
	sbx              *api.Sandbox
	ws               *api.Workspace
	ses              *api.Session
	job              *api.Job
	sbxRefs, wsRefs  []string
	sesRefs, jobRefs []string
	artifactRefs     []string
}

func makeTeamA(t *testing.T, e *teamsDev) *teamAObjects {
	t.Helper()
	ctx := tctx(t)
	c := e.aMemberC
	o := &teamAObjects{sbx: create(t, c, "box")}
	ws, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "data", Size: "5G"})
	if err != nil {
		t.Fatal(err)
	}
	o.ws = ws
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "sesws", Size: "5G"}); err != nil {
		t.Fatal(err)
	}
	if o.ses, err = c.CreateSession(ctx, api.CreateSessionRequest{Name: "work", Profile: "yolo-workspace", Workspace: "sesws"}); err != nil {
		t.Fatal(err)
	}
	if o.job, err = c.RunJob(ctx, api.RunJobRequest{Profile: "yolo-ephemeral", Task: "true"}); err != nil {
		t.Fatal(err)
	}
	if o.ws, err = c.Workspace(ctx, "data"); err != nil {
		t.Fatal(err)
	}
	o.sbxRefs = []string{o.sbx.ID, o.sbx.Name, strconv.Itoa(o.sbx.VMID), o.job.ID}
	o.wsRefs = []string{o.ws.ID, o.ws.Name}
	if o.ws.HolderVMID != 0 {
		o.wsRefs = append(o.wsRefs, strconv.Itoa(o.ws.HolderVMID))
	}
	o.sesRefs = []string{o.ses.ID, o.ses.Name}
	o.jobRefs = []string{o.job.ID}
	// An artifact of a's sandbox, uploaded as its guest does.
	bs := bootstrapOf(t, e.d, o.sbx.ID)
	code, g := fetch(t, bs.URL, bs.Token)
	if code != 200 {
		t.Fatalf("bootstrap: %d", code)
	}
	if code := post(t, g.ArtifactURL+"?name=out.txt", g.ArtifactToken, strings.NewReader("result")); code != 201 {
		t.Fatalf("upload: %d", code)
	}
	arts, err := c.Artifacts(ctx, o.sbx.ID)
	if err != nil || len(arts) != 1 {
		t.Fatalf("artifacts %+v %v", arts, err)
	}
	o.artifactRefs = []string{strconv.FormatInt(arts[0].ID, 10)}
	return o
}

// fill replaces the path parameters of a route pattern with ref (for the
// object the route names) and fixed values for the rest.
func fill(path, ref string) string {
	repl := map[string]string{"{ref}": ref, "{ws}": ref, "{s}": ref, "{id}": ref, "{port}": "8080",
		"{profile}": "yolo-ephemeral", "{bundle}": "default", "{name}": "snap"}
	if strings.HasPrefix(path, "/v1/teams/") || strings.HasPrefix(path, "/v1/tokens/") {
		repl["{name}"], repl["{ref}"] = ref, ref
	}
	if strings.HasPrefix(path, "/v1/secrets/") {
		repl["{name}"] = "X"
	}
	for k, v := range repl {
		path = strings.ReplaceAll(path, k, v)
	}
	return path
}

// bodyFor is a minimal body that passes each handler's own validation, so
// that the answer is about who asks (a handler checking its body before its
// lookup would otherwise answer 400 to anyone).
func bodyFor(method, path, sandboxID string) string {
	switch {
	case strings.HasSuffix(path, "/lease/renew"):
		return `{"ttl":"1h"}`
	case strings.HasSuffix(path, "/exec"):
		return `{"command":["true"]}`
	case strings.HasSuffix(path, "/snapshots") && method == "POST":
		return `{"name":"snap2"}`
	case strings.HasPrefix(path, "/v1/sandboxes/") && strings.HasSuffix(path, "/resize"):
		return `{"cores":2}`
	case strings.HasPrefix(path, "/v1/workspaces/") && strings.HasSuffix(path, "/resize"):
		return `{"size_gb":6}`
	case strings.HasSuffix(path, "/ports") && method == "POST":
		return `{"port":8080}`
	case strings.HasSuffix(path, "/attach"):
		return `{"sandbox":"` + sandboxID + `"}`
	case strings.HasSuffix(path, "/fork"):
		return `{"name":"forked"}`
	case strings.HasPrefix(path, "/v1/workspaces/") && strings.HasSuffix(path, "/move"):
		return `{"node":"pve"}`
	case method == "GET" || method == "DELETE":
		return ""
	}
	return `{}`
}

// refsFor lists the references of team a's object that the route's path
// names ("" when it names none of a's objects).
func refsFor(path string, o *teamAObjects, tokenID string) []string {
	switch {
	case strings.Contains(path, "/v1/sandboxes/{ref}"):
		return o.sbxRefs
	case strings.Contains(path, "{ws}"):
		return o.wsRefs
	case strings.Contains(path, "{s}"):
		return o.sesRefs
	case strings.HasPrefix(path, "/v1/jobs/{id}"):
		return o.jobRefs
	case strings.HasPrefix(path, "/v1/artifacts/{id}"):
		return o.artifactRefs
	case strings.HasPrefix(path, "/v1/teams/{name}"):
		return []string{"a"}
	case strings.HasPrefix(path, "/v1/tokens/{ref}"):
		return []string{tokenID}
	}
	return nil
}

// TestAuthMatrix walks every registered route as every kind of principal:
// deny by default, a team's token sees nothing of another team (404, never
// 403 or 200), host routes are for global principals. A route added
// without a row in this walk fails it (its permission is unknown here).
func TestAuthMatrix(t *testing.T) {
	e := startTeams(t, agent.DevOptions{}, nil)
	o := makeTeamA(t, e)
	d := e.d
	aTok := issue(t, e.global, "victim", "a", "read", "")
	routes := d.API.Routes()
	if len(routes) < 60 {
		t.Fatalf("only %d routes registered", len(routes))
	}
	sort.Slice(routes, func(i, j int) bool { return routes[i].Pattern < routes[j].Pattern })
	known := map[string]bool{"public": true, "team read": true, "team write": true, "team admin": true, "host read": true, "host write": true, "node agent": true, "guest relay": true}
	nodeTok, err := e.global.CreateToken(tctx(t), api.CreateTokenRequest{Name: "pve-agent", Role: "node", Node: "pve"})
	if err != nil {
		t.Fatal(err)
	}
	type outcome int
	const (
		allowed outcome = iota
		deny401
		deny403
		hidden404
	)
	expect := func(perm, method string, p caller) (outcome, api.Code) {
		switch p.name {
		case "none", "garbage":
			return deny401, api.CodeUnauthorized
		case "expired":
			return deny401, api.CodeTokenExpired
		case "revoked":
			return deny401, api.CodeTokenRevoked
		case "socket", "agent":
			if perm == "guest relay" {
				return deny403, api.CodeForbidden
			}
			return allowed, ""
		case "node":
			if perm == "node agent" || perm == "guest relay" {
				return hidden404, "" // the walk names node "snap", not its own
			}
			return deny403, api.CodeForbidden
		}
		role := map[string]string{"a-read": "read", "a-member": "member", "a-admin": "admin", "b-member": "member"}[p.name]
		switch perm {
		case "host read", "host write", "node agent", "guest relay":
			return deny403, api.CodeForbidden
		case "team admin":
			if role != "admin" {
				return deny403, api.CodeForbidden
			}
		case "team write":
			if role == "read" {
				return deny403, api.CodeForbidden
			}
		case "team read":
			if role == "read" && method != "GET" {
				return deny403, api.CodeForbidden
			}
		}
		if p.name == "b-member" {
			return hidden404, ""
		}
		return allowed, ""
	}
	principals := []caller{{name: "none"}, {name: "garbage", token: "agt_not-a-token"}, {name: "expired", token: e.expired},
		{name: "revoked", token: e.revoked}, {name: "b-member", token: e.bMember}, {name: "a-read", token: e.aRead},
		{name: "a-member", token: e.aMember}, {name: "a-admin", token: e.aAdmin}, {name: "agent", token: d.Info.Token}, {name: "node", token: nodeTok.Value},
		{name: "socket", socket: true}}
	checks := map[outcome]int{}
	for _, rt := range routes {
		if !known[rt.Perm] {
			t.Errorf("%s: permission %q has no row in this matrix", rt.Pattern, rt.Perm)
			continue
		}
		method, path, _ := strings.Cut(rt.Pattern, " ")
		if rt.Perm == "public" {
			for _, p := range principals {
				if st, body := call(t, d, p, method, path, ""); st != 200 {
					t.Errorf("%s as %s: %d %s", rt.Pattern, p.name, st, body)
				}
			}
			continue
		}
		refs := refsFor(path, o, aTok.ID)
		for _, p := range principals {
			want, code := expect(rt.Perm, method, p)
			targets := refs
			if want == allowed && method != "GET" || len(targets) == 0 {
				// Allowed callers change nothing real: a ghost object
				// proves the route let them through without destroying
				// what the rest of the walk needs.
				targets = []string{"ghost"}
			}
			if want == hidden404 && len(refs) == 0 && p.name != "node" {
				want = allowed // a route naming no object: b acts in its own team
			}
			for _, ref := range targets {
				pth := fill(path, ref)
				st, body := call(t, d, p, method, pth, bodyFor(method, path, o.sbx.ID))
				got := errCode(body)
				checks[want]++
				switch want {
				case deny401:
					if st != 401 || got != code {
						t.Errorf("%s %s as %s: %d %s, want 401 %s", method, pth, p.name, st, body, code)
					}
				case deny403:
					if st != 403 || got != code {
						t.Errorf("%s %s as %s: %d %s, want 403 %s", method, pth, p.name, st, body, code)
					}
				case hidden404:
					if st != 404 {
						t.Errorf("%s %s as %s (team a's object): %d %s, want 404", method, pth, p.name, st, body)
					}
				case allowed:
					if st == 401 || st == 403 || st >= 500 && st != 502 {
						t.Errorf("%s %s as %s: %d %s, want it let through", method, pth, p.name, st, body)
					}
				}
			}
		}
	}
	t.Logf("%d routes; checks: %d allowed, %d 401, %d 403, %d hidden 404", len(routes), checks[allowed], checks[deny401], checks[deny403], checks[hidden404])
	// Nothing of team a was touched by the denied calls.
	ctx := tctx(t)
	if sb, err := e.aMemberC.Sandbox(ctx, o.sbx.ID); err != nil || sb.State != api.StateRunning {
		t.Fatalf("team a's sandbox after the walk: %+v %v", sb, err)
	}
	if w, err := e.aMemberC.Workspace(ctx, o.ws.ID); err != nil || w.SizeGB != o.ws.SizeGB {
		t.Fatalf("team a's workspace after the walk: %+v %v", w, err)
	}
	if _, err := e.aReadC.Status(ctx); err != nil {
		t.Fatalf("a's read token after the walk: %v", err)
	}
}

// TestRevocationIsImmediate: a revoked or rotated token fails on the very
// next request; the rotated value works.
func TestRevocationIsImmediate(t *testing.T) {
	e := startTeams(t, agent.DevOptions{}, nil)
	ctx := tctx(t)
	tok := issue(t, e.global, "ci", "a", "member", "")
	c := tcpClient(t, e.d, tok.Value)
	if _, err := c.Sandboxes(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.global.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sandboxes(ctx, nil); !api.IsCode(err, api.CodeTokenRevoked) {
		t.Fatalf("revoked token's next request: %v", err)
	}
	tok2 := issue(t, e.aAdminC, "ci2", "", "read", "")
	old := tcpClient(t, e.d, tok2.Value)
	if _, err := old.Sandboxes(ctx, nil); err != nil {
		t.Fatal(err)
	}
	rot, err := e.aAdminC.RotateToken(ctx, tok2.ID, api.RotateTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Sandboxes(ctx, nil); !api.IsCode(err, api.CodeUnauthorized) {
		t.Fatalf("old value after rotate: %v", err)
	}
	if _, err := tcpClient(t, e.d, rot.Value).Sandboxes(ctx, nil); err != nil {
		t.Fatalf("rotated value: %v", err)
	}
	// A team admin cannot reach another team's tokens, nor make one.
	if _, err := e.aAdminC.RevokeToken(ctx, "dev"); err != nil {
		t.Fatalf("a's admin revokes a's own dev token: %v", err)
	}
	if _, err := e.bMemC.Sandboxes(ctx, nil); err != nil {
		t.Fatalf("b's dev token must survive a's revoke of its own dev: %v", err)
	}
	_, err = e.aAdminC.CreateToken(ctx, api.CreateTokenRequest{Name: "x", Team: "b", Role: "admin"})
	wantCode(t, err, 403, api.CodeForbidden)
	_, err = e.aAdminC.CreateToken(ctx, api.CreateTokenRequest{Name: "x", Team: "", Role: "admin"})
	if err != nil {
		t.Fatalf("a team admin's token without team is its team's: %v", err)
	}
}

func teamClient(t testing.TB, d *agent.Dev, token, team string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Endpoint: d.Info.Endpoint, Token: token, CACert: d.Info.CACert, Team: team})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCrossTeamReferences: a team reaches none of another team's objects
// through a reference in a body, the same name lives in two teams, and a
// global caller must say which team it means.
func TestCrossTeamReferences(t *testing.T) {
	e := startTeams(t, agent.DevOptions{}, nil)
	ctx := tctx(t)
	a, b, d := e.aMemberC, e.bMemC, e.d
	wsA, err := a.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "src", Size: "5G"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{wsA.ID, wsA.Name} {
		_, err = b.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "thief", Profile: "yolo-workspace", Workspace: ref})
		wantCode(t, err, 404, api.CodeWorkspaceNotFound)
		_, err = b.CreateSession(ctx, api.CreateSessionRequest{Name: "thief", Profile: "yolo-workspace", Workspace: ref})
		wantCode(t, err, 404, api.CodeWorkspaceNotFound)
		_, err = b.RunJob(ctx, api.RunJobRequest{Profile: "yolo-workspace", Task: "true", Workspace: ref})
		wantCode(t, err, 404, api.CodeWorkspaceNotFound)
	}
	// A global admin cannot attach a's workspace to b's sandbox either.
	sbB := create(t, b, "boxb")
	_, err = e.global.AttachWorkspace(ctx, wsA.ID, sbB.ID)
	wantCode(t, err, 404, api.CodeWorkspaceNotFound)
	if w, _ := e.global.Workspace(ctx, wsA.ID); w == nil || w.AttachedSandbox != "" {
		t.Fatalf("a's workspace after the refused attach: %+v", w)
	}
	// A's job: b cannot cancel it, list its artifacts, or find its sandbox.
	job, err := a.RunJob(ctx, api.RunJobRequest{Profile: "yolo-ephemeral", Task: "true"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.CancelJob(ctx, job.ID)
	wantCode(t, err, 404, api.CodeJobNotFound)
	_, err = b.Sandbox(ctx, job.ID)
	wantCode(t, err, 404, api.CodeSandboxNotFound)
	for _, p := range []string{"/v1/jobs/" + job.ID + "/artifacts", "/v1/artifacts/1"} {
		if st, body := call(t, d, caller{name: "b", token: e.bMember}, "GET", p, ""); st != 404 {
			t.Fatalf("b reads %s: %d %s", p, st, body)
		}
	}
	// Events: b sees none of a's, whatever it asks for.
	for _, q := range []string{"", "?team=a", "?team=default"} {
		st, body := call(t, d, caller{name: "b", token: e.bMember}, "GET", "/v1/events"+q, "")
		var l api.EventList
		if st != 200 || json.Unmarshal([]byte(body), &l) != nil {
			t.Fatalf("b's events%s: %d %s", q, st, body)
		}
		for _, ev := range l.Events {
			if ev.Team != "b" || ev.Workspace == "src" || ev.SandboxID == job.SandboxID {
				t.Fatalf("b's events%s show %+v", q, ev)
			}
		}
		if q == "" && len(l.Events) == 0 {
			t.Fatal("b sees none of its own events")
		}
	}
	// The same name in two teams.
	sbA := create(t, a, "dev")
	sbB2 := create(t, b, "dev")
	if sbA.ID == sbB2.ID || sbA.Team != "a" || sbB2.Team != "b" {
		t.Fatalf("dev in a %+v, dev in b %+v", sbA, sbB2)
	}
	if got, err := b.Sandbox(ctx, "dev"); err != nil || got.ID != sbB2.ID {
		t.Fatalf("b's dev: %+v %v", got, err)
	}
	_, err = e.global.Sandbox(ctx, "dev")
	wantCode(t, err, 409, api.CodeAmbiguous)
	if got, err := teamClient(t, d, d.Info.Token, "a").Sandbox(ctx, "dev"); err != nil || got.ID != sbA.ID {
		t.Fatalf("global with team a: %+v %v", got, err)
	}
	if got, err := teamClient(t, d, d.Info.Token, "b").Sandbox(ctx, "dev"); err != nil || got.ID != sbB2.ID {
		t.Fatalf("global with team b: %+v %v", got, err)
	}
	// The VM names tell the teams apart in Proxmox.
	names := map[string]bool{}
	for _, v := range vms(d) {
		names[v.Config["name"]] = true
	}
	if !names["a-dev"] || !names["b-dev"] {
		t.Fatalf("VM names %v, want a-dev and b-dev", names)
	}
	// Host views ignore the team header: a's and b's VMs are never orphans
	// to a global caller acting in a.
	for _, p := range []string{"/v1/orphans"} {
		st, body := call(t, d, caller{name: "agent", token: d.Info.Token, team: "a"}, "GET", p, "")
		if st != 200 || strings.Contains(body, `"vmid"`) {
			t.Fatalf("GET %s acting in a: %d %s", p, st, body)
		}
	}
	st, body := call(t, d, caller{name: "agent", token: d.Info.Token, team: "a"}, "POST", "/v1/reconcile", `{"dry_run":true}`)
	var rep api.ReconcileReport
	if st != 200 || json.Unmarshal([]byte(body), &rep) != nil || len(rep.Orphans) != 0 || len(rep.Actions) != 0 || rep.Checked == 0 {
		t.Fatalf("reconcile acting in a: %d %s", st, body)
	}
	// Status: a team token sees its team's counts, not the host's loops
	// (their errors name any team's objects).
	if st, err := b.Status(ctx); err != nil || st.Loops != nil || st.Caller.Team != "b" {
		t.Fatalf("b's status: %+v %v", st, err)
	} else if n := st.Sandboxes[api.StateRunning] + st.Sandboxes[api.StateProvisioning] + st.Sandboxes[api.StateBooting]; n > 3 {
		t.Fatalf("b's status counts %d live sandboxes, b has 3: %+v", n, st.Sandboxes)
	}
	if st, err := e.global.Status(ctx); err != nil || len(st.Loops) == 0 {
		t.Fatalf("global status: %+v %v", st, err)
	}
	// A global caller's header must name a team that exists.
	_, err = teamClient(t, d, d.Info.Token, "nosuch").Sandboxes(ctx, nil)
	wantCode(t, err, 404, api.CodeTeamNotFound)
	_, err = teamClient(t, d, d.Info.Token, "Not A Team").Sandboxes(ctx, nil)
	wantCode(t, err, 400, api.CodeBadRequest)
	// A team token naming another team is refused; naming its own is fine.
	_, err = teamClient(t, d, e.bMember, "a").Sandbox(ctx, "dev")
	wantCode(t, err, 403, api.CodeForbidden)
	if _, err := teamClient(t, d, e.bMember, "b").Sandbox(ctx, "dev"); err != nil {
		t.Fatal(err)
	}
	// A global caller's session resume and workspace fork land in the
	// object's team, not in default.
	wsB, err := b.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "wsb", Size: "5G"})
	if err != nil {
		t.Fatal(err)
	}
	fk, err := e.global.ForkWorkspace(ctx, wsB.ID, api.ForkRequest{Name: "wsb-copy"})
	if err != nil || fk.Team != "b" {
		t.Fatalf("global fork of b's workspace: %+v %v", fk, err)
	}
	ses, err := b.CreateSession(ctx, api.CreateSessionRequest{Name: "sb", Profile: "yolo-workspace", Workspace: "wsb"})
	if err != nil {
		t.Fatal(err)
	}
	if ses, err = b.WaitSession(ctx, ses.ID, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := e.global.StopSession(ctx, ses.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.global.ResumeSession(ctx, ses.ID); err != nil {
		t.Fatal(err)
	}
	if ses, err = b.WaitSession(ctx, ses.ID, 10*time.Millisecond); err != nil || ses.Sandbox == "" {
		t.Fatalf("resumed: %+v %v", ses, err)
	}
	if sb, err := b.Sandbox(ctx, ses.Sandbox); err != nil || sb.Team != "b" {
		t.Fatalf("the resumed session's sandbox: %+v %v", sb, err)
	}
	// A global caller's session fork lands in the source's team; its job in
	// the team it names.
	if _, err := e.global.StopSession(ctx, ses.ID); err != nil {
		t.Fatal(err)
	}
	fs, err := e.global.ForkSession(ctx, ses.ID, api.ForkSessionRequest{Name: "sb-fork"})
	if err != nil || fs.Team != "b" {
		t.Fatalf("global fork of b's session: %+v %v", fs, err)
	}
	if w, err := b.Workspace(ctx, "sb-fork"); err != nil || w.Team != "b" {
		t.Fatalf("the fork's workspace: %+v %v", w, err)
	}
	jb, err := teamClient(t, d, d.Info.Token, "b").RunJob(ctx, api.RunJobRequest{Profile: "yolo-ephemeral", Task: "true"})
	if err != nil || jb.Team != "b" {
		t.Fatalf("global job acting in b: %+v %v", jb, err)
	}
	if sb, err := b.Sandbox(ctx, jb.ID); err != nil || sb.Team != "b" {
		t.Fatalf("the job's sandbox: %+v %v", sb, err)
	}
	// Workspace events by id, as a global caller, are that workspace's only
	// (not another team's workspace of the same name).
	if _, err := a.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "wsb", Size: "5G"}); err != nil {
		t.Fatal(err)
	}
	st, body = call(t, d, caller{name: "agent", token: d.Info.Token}, "GET", "/v1/workspaces/"+wsB.ID+"/events", "")
	var l api.EventList
	if st != 200 || json.Unmarshal([]byte(body), &l) != nil {
		t.Fatalf("%d %s", st, body)
	}
	for _, ev := range l.Events {
		if ev.Team != "b" {
			t.Fatalf("events of b's wsb show team %s's: %+v", ev.Team, ev)
		}
	}
}

// TestTeamQuotasUnderConcurrency: twelve concurrent creates against a quota
// of three: exactly three succeed, the rest are 429 naming the quota, usage
// never passes the quota, and destroying one frees a slot.
func TestTeamQuotasUnderConcurrency(t *testing.T) {
	cases := []struct {
		key   string
		quota api.TeamQuota
		req   func(i int) api.CreateSandboxRequest
	}{
		{"sandboxes", api.TeamQuota{Sandboxes: 3}, func(i int) api.CreateSandboxRequest {
			return api.CreateSandboxRequest{Name: fmt.Sprintf("q%d", i), Profile: "yolo-ephemeral"}
		}},
		{"cores", api.TeamQuota{Cores: 12}, func(i int) api.CreateSandboxRequest { // 4 cores each
			return api.CreateSandboxRequest{Name: fmt.Sprintf("q%d", i), Profile: "yolo-ephemeral"}
		}},
		{"memory_mb", api.TeamQuota{MemoryMB: 3 * 6144}, func(i int) api.CreateSandboxRequest {
			return api.CreateSandboxRequest{Name: fmt.Sprintf("q%d", i), Profile: "yolo-ephemeral"}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.key, func(t *testing.T) {
			e := startTeams(t, agent.DevOptions{}, map[string]api.TeamQuota{"a": tc.quota})
			ctx := tctx(t)
			errs := make(chan error, 12)
			for i := 0; i < 12; i++ {
				go func(i int) {
					_, err := e.aMemberC.CreateSandbox(ctx, tc.req(i))
					errs <- err
				}(i)
			}
			ok := 0
			for i := 0; i < 12; i++ {
				err := <-errs
				if err == nil {
					ok++
					continue
				}
				wantCode(t, err, 429, api.CodeQuotaExceeded)
				ae := err.(*api.Error)
				if ae.Limit == nil || ae.Limit.Key != "team a quota "+tc.key || ae.Limit.Used > ae.Limit.Value {
					t.Fatalf("refusal's limit: %+v", ae.Limit)
				}
			}
			if ok != 3 {
				t.Fatalf("%d creates succeeded, want 3", ok)
			}
			tm, err := e.aMemberC.Team(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			if tm.Usage.Sandboxes != 3 || tm.Quota.Cores > 0 && tm.Usage.Cores > tm.Quota.Cores || tm.Quota.MemoryMB > 0 && tm.Usage.MemoryMB > tm.Quota.MemoryMB {
				t.Fatalf("usage %+v over quota %+v", *tm.Usage, tm.Quota)
			}
			// Team b and default are not limited by a's quota.
			if _, err := e.bMemC.CreateSandbox(ctx, tc.req(99)); err != nil {
				t.Fatalf("team b: %v", err)
			}
			// Growing a sandbox is bound by the quota too.
			if tc.key != "sandboxes" {
				list, _ := e.aMemberC.Sandboxes(ctx, nil)
				sb, err := e.aMemberC.WaitSandbox(ctx, list[0].Name, 10*time.Millisecond)
				if err != nil {
					t.Fatal(err)
				}
				_, err = e.aMemberC.Resize(ctx, sb.Name, api.ResizeRequest{Cores: 8, MemoryMB: 8192})
				wantCode(t, err, 429, api.CodeQuotaExceeded)
				// Shrinking is always allowed, and frees room to grow back.
				if _, err := e.aMemberC.Resize(ctx, sb.Name, api.ResizeRequest{Cores: 2, MemoryMB: 4096}); err != nil {
					t.Fatalf("shrink: %v", err)
				}
				if _, err := e.aMemberC.Resize(ctx, sb.Name, api.ResizeRequest{Cores: 4, MemoryMB: 6144}); err != nil {
					t.Fatalf("grow back within the quota: %v", err)
				}
			}
			list, err := e.aMemberC.Sandboxes(ctx, nil)
			if err != nil || len(list) != 3 {
				t.Fatalf("%d sandboxes %v", len(list), err)
			}
			if _, err := e.aMemberC.WaitSandbox(ctx, list[0].Name, 10*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			if _, err := e.aMemberC.Destroy(ctx, list[0].Name, false); err != nil {
				t.Fatal(err)
			}
			if _, err := e.aMemberC.WaitSandbox(ctx, list[0].ID, 10*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			if _, err := e.aMemberC.CreateSandbox(ctx, tc.req(50)); err != nil {
				t.Fatalf("after a destroy: %v", err)
			}
		})
	}
	t.Run("workspace_gb", func(t *testing.T) {
		e := startTeams(t, agent.DevOptions{}, map[string]api.TeamQuota{"a": {WorkspaceGB: 15}})
		ctx := tctx(t)
		errs := make(chan error, 12)
		for i := 0; i < 12; i++ {
			go func(i int) {
				_, err := e.aMemberC.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: fmt.Sprintf("w%d", i), Size: "5G"})
				errs <- err
			}(i)
		}
		ok := 0
		for i := 0; i < 12; i++ {
			if err := <-errs; err == nil {
				ok++
			} else {
				wantCode(t, err, 429, api.CodeQuotaExceeded)
			}
		}
		tm, err := e.aMemberC.Team(ctx, "a")
		if ok != 3 || err != nil || tm.Usage.WorkspaceGB != 15 {
			t.Fatalf("%d workspaces, usage %+v %v", ok, tm, err)
		}
		ws, _ := e.aMemberC.Workspaces(ctx)
		_, err = e.aMemberC.ResizeWorkspace(ctx, ws[0].Name, api.ResizeWorkspaceRequest{SizeGB: 6})
		wantCode(t, err, 429, api.CodeQuotaExceeded)
		_, err = e.aMemberC.ForkWorkspace(ctx, ws[0].Name, api.ForkRequest{Name: "copy"})
		wantCode(t, err, 429, api.CodeQuotaExceeded)
		_, err = e.aMemberC.CreateSession(ctx, api.CreateSessionRequest{Name: "s", Profile: "yolo-workspace", Workspace: "new:nw", WorkspaceSize: "5G"})
		wantCode(t, err, 429, api.CodeQuotaExceeded)
	})
	t.Run("ttl", func(t *testing.T) {
		e := startTeams(t, agent.DevOptions{}, map[string]api.TeamQuota{"a": {TTLSeconds: 3600}})
		ctx := tctx(t)
		_, err := e.aMemberC.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "long", Profile: "yolo-ephemeral", TTL: "2h"})
		wantCode(t, err, 400, api.CodeTTLTooLong)
		if ae := err.(*api.Error); ae.Limit == nil || ae.Limit.Key != "team a quota ttl_seconds" || ae.Limit.Value != 3600 {
			t.Fatalf("limit %+v", ae.Limit)
		}
		if _, err := e.aMemberC.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "ok", Profile: "yolo-ephemeral", TTL: "30m"}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.aMemberC.WaitSandbox(ctx, "ok", 10*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		_, err = e.aMemberC.Renew(ctx, "ok", "3h")
		wantCode(t, err, 400, api.CodeTTLTooLong)
		// A global caller renewing a's sandbox is held to a's quota too.
		_, err = e.global.Renew(ctx, "ok", "3h")
		wantCode(t, err, 400, api.CodeTTLTooLong)
		if _, err := e.bMemC.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "long", Profile: "yolo-ephemeral", TTL: "2h"}); err != nil {
			t.Fatalf("team b has no ttl quota: %v", err)
		}
	})
}

// syncBuffer is a log sink safe for the agent's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestTokenValuesAreNeverKept: a token's value is answered once, at create
// or rotate, and appears nowhere after: not in the log (at debug), the
// events, the token list, the database file and its WAL, nor a backup.
func TestTokenValuesAreNeverKept(t *testing.T) {
	var logs syncBuffer
	e := startTeams(t, agent.DevOptions{Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}, nil)
	ctx := tctx(t)
	d := e.d
	tok := issue(t, e.global, "secret", "a", "admin", "")
	rot, err := e.global.RotateToken(ctx, tok.ID, api.RotateTokenRequest{TTL: "24h"})
	if err != nil {
		t.Fatal(err)
	}
	values := []string{tok.Value, rot.Value, e.aMember, e.bMember, e.revoked, e.expired}
	for _, v := range values {
		if !strings.HasPrefix(v, "agt_") || len(v) < 30 {
			t.Fatalf("token value %q: want agt_ and a long random part", v)
		}
	}
	// Use them, including the refused ones, so that every path that could
	// log a token runs.
	for _, v := range values {
		call(t, d, caller{name: "x", token: v}, "GET", "/v1/sandboxes", "")
		call(t, d, caller{name: "x", token: v}, "POST", "/v1/sandboxes", `{"name":"x"}`)
	}
	ac := tcpClient(t, d, rot.Value)
	create(t, ac, "box")
	if _, err := ac.RevokeToken(ctx, "dev"); err != nil {
		t.Fatal(err)
	}
	where := map[string]string{"log": logs.String()}
	_, where["events"] = call(t, d, caller{name: "agent", token: d.Info.Token}, "GET", "/v1/events?tail=1000", "")
	_, where["tokens"] = call(t, d, caller{name: "agent", token: d.Info.Token}, "GET", "/v1/tokens?all=true", "")
	_, where["a's tokens"] = call(t, d, caller{name: "a", token: rot.Value}, "GET", "/v1/tokens?all=true", "")
	if !strings.Contains(where["tokens"], tok.ID) || !strings.Contains(where["events"], "token.rotated") {
		t.Fatalf("the list or the events lack the token: %s", where["tokens"])
	}
	db := backup.DBPath(d.Config)
	for _, f := range []string{db, db + "-wal"} {
		b, err := os.ReadFile(f)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		where[filepath.Base(f)] = string(b)
	}
	out := filepath.Join(t.TempDir(), "backup.tar.gz")
	if _, err := backup.Backup(ctx, d.Config, out, backup.Options{}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	archive, err := io.ReadAll(zr)
	if err != nil || len(archive) == 0 {
		t.Fatalf("backup: %d bytes %v", len(archive), err)
	}
	where["backup"] = string(archive)
	if !strings.Contains(where["agentd.db"], "tok-") && !strings.Contains(where["agentd.db-wal"], "tok-") {
		t.Fatal("the database files hold no token row: the check reads the wrong files")
	}
	for _, v := range values {
		secret := strings.TrimPrefix(v, "agt_")
		for w, text := range where {
			if strings.Contains(text, secret) {
				t.Errorf("a token value is in the %s", w)
			}
		}
	}
}

// TestProfileLimitedToTeams: a profile with teams: [a] is team a's alone:
// team b neither sees it nor creates a sandbox or a session with it.
func TestProfileLimitedToTeams(t *testing.T) {
	e := startTeams(t, agent.DevOptions{}, nil)
	ctx := tctx(t)
	d := e.d
	prof := "name: a-only\ntemplate_vmid: 9000\nteams: [a]\n"
	if err := os.WriteFile(filepath.Join(d.Config.ProfilesDir, "a-only.yaml"), []byte(prof), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	a, b, global := tcpClient(t, d, e.aMember), tcpClient(t, d, e.bMember), tcpClient(t, d, d.Info.Token)
	// To b's token the profile does not exist, as GET /v1/profiles says;
	// the refusal names neither team a nor a's limit.
	_, err := b.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "x", Profile: "a-only"})
	wantCode(t, err, 404, api.CodeProfileNotFound)
	if strings.Contains(err.Error(), "limited") || strings.Contains(err.Error(), "teams") {
		t.Fatalf("refusal leaks the profile's teams: %v", err)
	}
	// No other check of the request runs first and tells the profile apart
	// from one that does not exist.
	_, err = b.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "x", Profile: "a-only", TTL: "bogus"})
	wantCode(t, err, 404, api.CodeProfileNotFound)
	_, ghost := b.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "x", Profile: "ghost", TTL: "bogus"})
	if strings.ReplaceAll(err.Error(), "a-only", "ghost") != ghost.Error() {
		t.Fatalf("refusals differ: %v / %v", err, ghost)
	}
	// A global admin acting for b is told why.
	_, err = teamClient(t, d, d.Info.Token, "b").CreateSandbox(ctx, api.CreateSandboxRequest{Name: "x", Profile: "a-only"})
	wantCode(t, err, 403, api.CodeForbidden)
	if !strings.Contains(err.Error(), "limited to teams a") {
		t.Fatalf("admin refusal does not say why: %v", err)
	}
	// Refusals list the profiles b may use, not a's.
	for _, p := range []string{"ghost", ""} {
		_, err = b.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "x", Profile: p})
		if err == nil || strings.Contains(err.Error(), "a-only") || !strings.Contains(err.Error(), "yolo-ephemeral") {
			t.Fatalf("profile %q: %v", p, err)
		}
		_, err = b.CreateSession(ctx, api.CreateSessionRequest{Name: "x", Profile: p, Workspace: "w"})
		if err == nil || strings.Contains(err.Error(), "a-only") {
			t.Fatalf("session profile %q: %v", p, err)
		}
	}
	if _, err := b.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "w", Size: "5G"}); err != nil {
		t.Fatal(err)
	}
	_, err = b.CreateSession(ctx, api.CreateSessionRequest{Name: "s", Profile: "a-only", Workspace: "w"})
	wantCode(t, err, 404, api.CodeProfileNotFound)
	_, err = b.RunJob(ctx, api.RunJobRequest{Profile: "a-only", Task: "true"})
	wantCode(t, err, 404, api.CodeProfileNotFound)
	for who, c := range map[string]*client.Client{"b": b, "global in b": teamClient(t, d, d.Info.Token, "b")} {
		ps, err := c.Profiles(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if p.Name == "a-only" {
				t.Fatalf("%s lists a-only", who)
			}
		}
		_, err = c.Profile(ctx, "a-only")
		wantCode(t, err, 404, api.CodeProfileNotFound)
	}
	// Forking b's session onto the profile is refused before the fork: no
	// workspace is left behind.
	src, err := b.CreateSession(ctx, api.CreateSessionRequest{Name: "s2", Profile: "yolo-workspace", Workspace: "w"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitSession(ctx, src.ID, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := b.StopSession(ctx, src.ID); err != nil {
		t.Fatal(err)
	}
	_, err = b.ForkSession(ctx, "s2", api.ForkSessionRequest{Name: "s3", Profile: "a-only"})
	wantCode(t, err, 404, api.CodeProfileNotFound)
	if ws, _ := b.Workspaces(ctx); len(ws) != 1 {
		t.Fatalf("b's workspaces after the refused fork: %+v", ws)
	}
	if _, err := a.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "x", Profile: "a-only"}); err != nil {
		t.Fatalf("team a: %v", err)
	}
	if _, err := global.Profile(ctx, "a-only"); err != nil {
		t.Fatalf("global: %v", err)
	}
	// A global caller creating without a team creates in default, which the
	// profile does not allow either.
	_, err = global.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "y", Profile: "a-only"})
	wantCode(t, err, 403, api.CodeForbidden)
}

// TestPoolClaimTakesTheClaimersTeam: a warm-pool member claimed by team b's
// create is b's sandbox: its team, its VM name, its history; an unclaimed
// member is no team's, even one a pre-teams database left in default.
func TestPoolClaimTakesTheClaimersTeam(t *testing.T) {
	e := startTeams(t, agent.DevOptions{}, nil)
	ctx := tctx(t)
	d := e.d
	setPool(t, e.global, 1, 2)
	member := pooledRows(t, d)[0]
	sb, err := e.bMemC.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "pb", Profile: poolProfile})
	if err != nil {
		t.Fatal(err)
	}
	if sb.ID != member.ID || sb.Team != "b" {
		t.Fatalf("claim: %+v, member %s", sb, member.ID)
	}
	if sb, err = e.bMemC.WaitSandbox(ctx, "pb", 10*time.Millisecond); err != nil || sb.State != api.StateRunning {
		t.Fatalf("%+v %v", sb, err)
	}
	if n := vms(d)[sb.VMID].Config["name"]; n != "b-pb" {
		t.Fatalf("claimed VM is named %q, want b-pb", n)
	}
	evs, err := e.bMemC.Events(ctx, "pb", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, ev := range evs.Events {
		kinds = append(kinds, ev.Kind)
	}
	if !strings.Contains(strings.Join(kinds, " "), "pool.member_requested") {
		t.Fatalf("b sees its sandbox's history without the member's part: %v", kinds)
	}
	// Unclaimed members: a default-team token reaches none, by id or list.
	waitReady(t, e.global, 1)
	var next *api.Sandbox
	for _, r := range pooledRows(t, d) {
		next = &r.Sandbox
	}
	if _, err := d.Store.DB().ExecContext(ctx, `UPDATE sandboxes SET team='default' WHERE name=id`); err != nil {
		t.Fatal(err)
	}
	def := issue(t, e.global, "dflt", "default", "member", "").Value
	for _, p := range []string{"/v1/sandboxes/" + next.ID, "/v1/sandboxes/" + strconv.Itoa(next.VMID)} {
		if st, body := call(t, d, caller{name: "default", token: def}, "GET", p, ""); st != 404 {
			t.Fatalf("default team reads member %s: %d %s", p, st, body)
		}
	}
	if st, body := call(t, d, caller{name: "default", token: def}, "POST", "/v1/sandboxes/"+next.ID+"/exec", `{"command":["true"]}`); st != 404 {
		t.Fatalf("default team execs in a member: %d %s", st, body)
	}
	if _, body := call(t, d, caller{name: "default", token: def}, "GET", "/v1/sandboxes?pooled=true", ""); strings.Contains(body, next.ID) {
		t.Fatalf("default team lists a member: %s", body)
	}
	if st, _ := call(t, d, caller{name: "agent", token: d.Info.Token}, "GET", "/v1/sandboxes/"+next.ID, ""); st != 200 {
		t.Fatalf("global reads a member: %d", st)
	}
}

// TestTeamArtifactQuota: quota artifact_bytes bounds all of a team's
// artifacts together (413, as the other artifact quotas), usage shows them, and
// another team cannot list or download them.
func TestTeamArtifactQuota(t *testing.T) {
	e := startTeams(t, agent.DevOptions{}, map[string]api.TeamQuota{"a": {ArtifactBytes: 100}})
	ctx := tctx(t)
	d := e.d
	var grants []api.GuestBootstrap
	for _, n := range []string{"g1", "g2"} {
		sb := create(t, e.aMemberC, n)
		code, g := fetch(t, bootstrapOf(t, d, sb.ID).URL, bootstrapOf(t, d, sb.ID).Token)
		if code != 200 || g.ArtifactToken == "" {
			t.Fatalf("bootstrap of %s: %d", n, code)
		}
		grants = append(grants, g)
	}
	up := func(g api.GuestBootstrap, name string, n int) int {
		return post(t, g.ArtifactURL+"?name="+name, g.ArtifactToken, bytes.NewReader(bytes.Repeat([]byte("x"), n)))
	}
	if code := up(grants[0], "one.txt", 60); code != 201 {
		t.Fatalf("first upload: %d", code)
	}
	// The second sandbox's upload counts the first's bytes: the quota is
	// the team's, not a sandbox's.
	if code := up(grants[1], "two.txt", 60); code != 413 {
		t.Fatalf("upload past the team's quota: %d, want 413 (as every artifact quota)", code)
	}
	if code := up(grants[1], "small.txt", 40); code != 201 {
		t.Fatalf("upload within the team's quota: %d", code)
	}
	tm, err := e.aMemberC.Team(ctx, "a")
	if err != nil || tm.Usage.ArtifactBytes != 100 {
		t.Fatalf("usage %+v %v", tm, err)
	}
	arts, err := e.aMemberC.Artifacts(ctx, "g1")
	if err != nil || len(arts) != 1 {
		t.Fatalf("artifacts %+v %v", arts, err)
	}
	id := strconv.FormatInt(arts[0].ID, 10)
	if st, _ := call(t, d, caller{name: "a", token: e.aRead}, "GET", "/v1/artifacts/"+id, ""); st != 200 {
		t.Fatalf("a's download: %d", st)
	}
	for _, p := range []string{"/v1/artifacts/" + id, "/v1/sandboxes/" + arts[0].SandboxID + "/artifacts"} {
		if st, body := call(t, d, caller{name: "b", token: e.bMember}, "GET", p, ""); st != 404 {
			t.Fatalf("b reads %s: %d %s", p, st, body)
		}
	}
}

// TestSessionResumeAtTeamQuota: a resume replaces the session's sandbox, so
// at the team's quota it succeeds and takes the old sandbox's slot, which a
// concurrent create cannot take in between; a resume the quota has no room
// for is refused before anything is destroyed, leaving the old sandbox and
// the session as they were.
func TestSessionResumeAtTeamQuota(t *testing.T) {
	e := startTeams(t, agent.DevOptions{}, map[string]api.TeamQuota{"a": {Sandboxes: 2}})
	ctx := tctx(t)
	c := e.aMemberC
	if _, err := c.CreateSession(ctx, api.CreateSessionRequest{Name: "s", Profile: "yolo-workspace", Workspace: "new:s-ws", WorkspaceSize: "5G"}); err != nil {
		t.Fatal(err)
	}
	s := resume(t, c, "s")
	create(t, c, "other") // the team is at its quota
	usage := func() int64 {
		t.Helper()
		tm, err := c.Team(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		return tm.Usage.Sandboxes
	}
	for round := 0; round < 3; round++ {
		old := s.Sandbox
		if _, err := c.Stop(ctx, old); err != nil {
			t.Fatal(err)
		}
		if sb, err := c.WaitSandbox(ctx, old, 10*time.Millisecond); err != nil || sb.State != api.StateStopped {
			t.Fatalf("stop %s: %+v %v", old, sb, err)
		}
		// A create racing the resume for the slot the old sandbox frees.
		grab := make(chan error, 1)
		go func() {
			_, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: fmt.Sprintf("grab%d", round), Profile: "yolo-ephemeral"})
			grab <- err
		}()
		if _, err := c.ResumeSession(ctx, "s"); err != nil {
			t.Fatalf("round %d: resume at quota: %v", round, err)
		}
		wantCode(t, <-grab, 429, api.CodeQuotaExceeded)
		var err error
		if s, err = c.WaitSession(ctx, "s", 10*time.Millisecond); err != nil || s.State != "RUNNING" || s.Sandbox == old {
			t.Fatalf("round %d: session after resume: %+v %v", round, s, err)
		}
		if n := usage(); n != 2 {
			t.Fatalf("round %d: team a holds %d sandboxes, want its quota 2", round, n)
		}
	}
	// Lower the quota below what the team holds: a resume now needs a slot
	// the team does not have, and is refused with nothing changed.
	if _, err := e.global.UpdateTeam(ctx, "a", api.UpdateTeamRequest{Quota: api.TeamQuota{Sandboxes: 1}}); err != nil {
		t.Fatal(err)
	}
	old := s.Sandbox
	if _, err := c.Stop(ctx, old); err != nil {
		t.Fatal(err)
	}
	if sb, err := c.WaitSandbox(ctx, old, 10*time.Millisecond); err != nil || sb.State != api.StateStopped {
		t.Fatalf("stop %s: %+v %v", old, sb, err)
	}
	before, err := c.Session(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ResumeSession(ctx, "s")
	wantCode(t, err, 429, api.CodeQuotaExceeded)
	if sb, err := c.Sandbox(ctx, old); err != nil || sb.State != api.StateStopped {
		t.Fatalf("the old sandbox after a refused resume: %+v %v", sb, err)
	}
	after, err := c.Session(ctx, "s")
	if err != nil || after.Sandbox != old || after.SandboxVMID != before.SandboxVMID {
		t.Fatalf("session after a refused resume: %+v (before %+v) %v", after, before, err)
	}
	if n := usage(); n != 2 {
		t.Fatalf("team a holds %d sandboxes after a refused resume, want 2", n)
	}
	// With room again, the same session resumes on its workspace.
	if _, err := e.global.UpdateTeam(ctx, "a", api.UpdateTeamRequest{Quota: api.TeamQuota{Sandboxes: 2}}); err != nil {
		t.Fatal(err)
	}
	if s = resume(t, c, "s"); s.State != "RUNNING" || s.Sandbox == old {
		t.Fatalf("resume with room: %+v", s)
	}
}
