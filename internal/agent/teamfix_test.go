package agent_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// TestRollbackKeepsTeamQuota: a snapshot restore or a revert replaces the
// VM's config with the snapshot's, so a sandbox shrunk since it was taken
// would grow back past its team's quota. Both are refused with the quota's
// 429 while the team has no room (the VM untouched), and once there is room
// the row counts the restored cores at once.
func TestRollbackKeepsTeamQuota(t *testing.T) {
	e := startTeams(t, agent.DevOptions{}, map[string]api.TeamQuota{"a": {Cores: 8}})
	ctx := tctx(t)
	c := e.aMemberC
	x := create(t, c, "x") // 4 cores, the clean snapshot too
	if _, err := c.CreateSandboxSnapshot(ctx, "x", api.CreateSandboxSnapshotRequest{Name: "big"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Resize(ctx, "x", api.ResizeRequest{Cores: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "y", Profile: "yolo-ephemeral", Cores: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitSandbox(ctx, "y", 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	cores := func() any { return vms(e.d)[x.VMID].Config["cores"] }
	before := cores()
	// 2 + 5 in use of 8: bringing x back to 4 needs 2 more than there is.
	for name, try := range map[string]func() error{
		"restore": func() error { _, err := c.RestoreSandboxSnapshot(ctx, "x", "big"); return err },
		"revert":  func() error { _, err := c.Revert(ctx, "x", api.RevertRequest{}); return err },
	} {
		err := try()
		wantCode(t, err, 429, api.CodeQuotaExceeded)
		ae := err.(*api.Error)
		if ae.Limit == nil || ae.Limit.Key != "team a quota cores" || ae.Limit.Value != 8 || ae.Limit.Used != 7 {
			t.Fatalf("%s: refusal's limit %+v", name, ae.Limit)
		}
		if got := cores(); got != before {
			t.Fatalf("%s refused, but the VM's cores went %v → %v", name, before, got)
		}
	}
	tm, err := c.Team(ctx, "a")
	if err != nil || tm.Usage.Cores != 7 {
		t.Fatalf("usage after the refusals: %+v %v", tm, err)
	}
	// With room again, the rollback happens and is counted at once.
	if _, err := c.Resize(ctx, "y", api.ResizeRequest{Cores: 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RestoreSandboxSnapshot(ctx, "x", "big"); err != nil {
		t.Fatalf("restore within the quota: %v", err)
	}
	if tm, err = c.Team(ctx, "a"); err != nil || tm.Usage.Cores != 8 {
		t.Fatalf("usage after the restore: %+v %v", tm.Usage, err)
	}
	// Now full: y may not grow, and a create is refused.
	_, err = c.Resize(ctx, "y", api.ResizeRequest{Cores: 5})
	wantCode(t, err, 429, api.CodeQuotaExceeded)
	if _, err := c.Resize(ctx, "x", api.ResizeRequest{Cores: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Revert(ctx, "x", api.RevertRequest{}); err != nil {
		t.Fatalf("revert within the quota: %v", err)
	}
	if tm, err = c.Team(ctx, "a"); err != nil || tm.Usage.Cores != 8 {
		t.Fatalf("usage after the revert: %+v %v", tm.Usage, err)
	}
}

// TestDeletedTeamsHistoryStaysItsOwn: rows name their team by name, so a
// team deleted and created again under the same name must not inherit the
// old one's destroyed sandboxes, artifacts, workspaces, events or revoked
// tokens; a global caller still finds them, under the tombstone name.
func TestDeletedTeamsHistoryStaysItsOwn(t *testing.T) {
	d, g := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	if _, err := g.CreateTeam(ctx, api.CreateTeamRequest{Name: "c"}); err != nil {
		t.Fatal(err)
	}
	oldTok := issue(t, g, "old", "c", "admin", "")
	old := tcpClient(t, d, oldTok.Value)
	sb := create(t, old, "box")
	bs := bootstrapOf(t, d, sb.ID)
	code, gb := fetch(t, bs.URL, bs.Token)
	if code != 200 {
		t.Fatalf("bootstrap: %d", code)
	}
	if code := post(t, gb.ArtifactURL+"?name=secret.txt", gb.ArtifactToken, strings.NewReader("old team's result")); code != 201 {
		t.Fatalf("upload: %d", code)
	}
	if _, err := old.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "w", Size: "5G"}); err != nil {
		t.Fatal(err)
	}
	if _, err := old.DeleteWorkspace(ctx, "w"); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Destroy(ctx, "box", false); err != nil {
		t.Fatal(err)
	}
	if _, err := old.WaitSandbox(ctx, sb.ID, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	evs, err := old.Events(ctx, "", 0, 0)
	if err != nil || len(evs.Events) == 0 {
		t.Fatalf("old team's events: %+v %v", evs, err)
	}
	lastOld := evs.Events[len(evs.Events)-1].ID
	if _, err := g.RevokeToken(ctx, oldTok.ID); err != nil {
		t.Fatal(err)
	}
	if err := g.DeleteTeam(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.CreateTeam(ctx, api.CreateTeamRequest{Name: "c"}); err != nil {
		t.Fatal(err)
	}
	nc := tcpClient(t, d, issue(t, g, "new", "c", "admin", "").Value)

	all := url.Values{"all": {"true"}}
	if l, err := nc.Sandboxes(ctx, all); err != nil || len(l) != 0 {
		t.Fatalf("the new team lists the old one's sandboxes: %+v %v", l, err)
	}
	if _, err := nc.Sandbox(ctx, sb.ID); err == nil {
		t.Fatal("the new team reads the old team's sandbox")
	}
	if a, err := nc.Artifacts(ctx, sb.ID); err == nil {
		t.Fatalf("the new team reads the old team's artifacts: %+v", a)
	}
	if l, err := nc.Workspaces(ctx); err != nil || len(l) != 0 {
		t.Fatalf("workspaces: %+v %v", l, err)
	}
	if l, err := nc.Jobs(ctx); err != nil || len(l) != 0 {
		t.Fatalf("jobs: %+v %v", l, err)
	}
	toks, err := nc.Tokens(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		if tk.Name == "old" {
			t.Fatalf("the new team lists the old team's token: %+v", tk)
		}
	}
	evs, err = nc.Events(ctx, "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Events {
		if e.ID <= lastOld || e.SandboxID == sb.ID || strings.Contains(e.Message, "deleted") {
			t.Fatalf("the new team sees the old team's event %+v", e)
		}
	}
	// The history is kept, for a global caller, under the tombstone.
	l, err := g.Sandboxes(ctx, all)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range l {
		if s.ID == sb.ID {
			found = strings.HasPrefix(s.Team, "c~deleted-")
		}
	}
	if !found {
		t.Fatalf("global caller: old sandbox not kept under a tombstone: %+v", l)
	}
}

// TestTokenCannotOutliveItsIssuer: an expiring team admin token may not
// create or rotate a token into one that expires later than itself, or
// never (its own expiry would then bind nothing); within its expiry it may.
// Tokens without expiry (and the socket) are not bound.
func TestTokenCannotOutliveItsIssuer(t *testing.T) {
	e := startTeams(t, agent.DevOptions{}, nil)
	ctx := tctx(t)
	lead := issue(t, e.global, "lead", "a", "admin", "1h")
	lc := tcpClient(t, e.d, lead.Value)
	refused := func(what string, err error) {
		t.Helper()
		wantCode(t, err, 400, api.CodeInvalidField)
		if ae := err.(*api.Error); ae.Field != "ttl" || !strings.Contains(ae.Message, "outlive") || !strings.Contains(ae.Message, lead.ExpiresAt.UTC().Format(time.RFC3339)) {
			t.Fatalf("%s: refusal %+v", what, ae)
		}
	}
	_, err := lc.CreateToken(ctx, api.CreateTokenRequest{Name: "forever", Team: "a", Role: "admin"})
	refused("no ttl", err)
	_, err = lc.CreateToken(ctx, api.CreateTokenRequest{Name: "longer", Team: "a", Role: "member", TTL: "2h"})
	refused("a longer ttl", err)
	short, err := lc.CreateToken(ctx, api.CreateTokenRequest{Name: "short", Team: "a", Role: "member", TTL: "30m"})
	if err != nil || short.ExpiresAt == nil || short.ExpiresAt.After(*lead.ExpiresAt) {
		t.Fatalf("a token within the issuer's expiry: %+v %v", short, err)
	}
	// Rotating, another token or itself, is bound the same way.
	_, err = lc.RotateToken(ctx, "short", api.RotateTokenRequest{})
	refused("rotate another to no expiry", err)
	_, err = lc.RotateToken(ctx, "lead", api.RotateTokenRequest{TTL: "3h"})
	refused("rotate itself to a later expiry", err)
	if _, err := lc.RotateToken(ctx, "short", api.RotateTokenRequest{TTL: "10m"}); err != nil {
		t.Fatalf("rotate within the expiry: %v", err)
	}
	// Nothing refused was issued.
	toks, err := e.global.Tokens(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		if tk.Name == "forever" || tk.Name == "longer" {
			t.Fatalf("a refused token exists: %+v", tk)
		}
		if tk.Name == "lead" && !tk.ExpiresAt.Equal(*lead.ExpiresAt) {
			t.Fatalf("lead's expiry changed: %v → %v", lead.ExpiresAt, tk.ExpiresAt)
		}
	}
	// A team admin token without expiry, and the socket, are unbound.
	if _, err := e.aAdminC.CreateToken(ctx, api.CreateTokenRequest{Name: "forever", Team: "a", Role: "member"}); err != nil {
		t.Fatalf("unexpiring issuer: %v", err)
	}
	if _, err := e.global.CreateToken(ctx, api.CreateTokenRequest{Name: "forever2", Team: "a", Role: "admin"}); err != nil {
		t.Fatalf("socket: %v", err)
	}
}
