package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// mustCLI runs a command that must succeed and returns its output.
func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	code, out := cli(args...)
	if code != 0 {
		t.Fatalf("agentd %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// wantAll fails for each of want that out lacks.
func wantAll(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

// issuedValue is the token value a create or rotate printed: the one line
// that is nothing but the value.
func issuedValue(t *testing.T, out string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "agt_") && !strings.Contains(l, " ") {
			return l
		}
	}
	t.Fatalf("no token value in:\n%s", out)
	return ""
}

// TestTeamsAndTokensWithDev walks a team's life against agentd dev over its
// HTTPS listener: a team with a quota, a member token printed once and used
// to create a sandbox in that team, the usage it shows, the quota refusal
// naming the flag that raises it, the actor in events, the TEAM column of a
// global caller, revocation and rotation taking effect at the next request,
// and --json output that parses.
func TestTeamsAndTokensWithDev(t *testing.T) {
	startDevConfig(t)
	out := mustCLI(t, "team", "create", "red", "--description", "red team", "--max-sandboxes", "2", "--max-cores", "64", "--max-ttl", "8h", "--max-artifact-bytes", "1G")
	wantAll(t, "team create", out, "Name:", "red", "Sandboxes:       0 / 2", "Cores:           0 / 64", "Memory MB:       0 / unlimited",
		"Artifact bytes:  0 / 1073741824", "Max TTL:         8h0m0s")

	out = mustCLI(t, "token", "create", "--name", "ci", "--team", "red")
	wantAll(t, "token create", out, "created token ci (team red, role member, expires never)", "shown only now")
	tok := issuedValue(t, out)

	// The member token creates in its own team without naming it.
	mustCLI(t, "--token", tok, "sandbox", "create", "--name", "build", "--profile", "yolo-ephemeral", "--ttl", "1h")
	wantAll(t, "team show", mustCLI(t, "team", "show", "red"), "Sandboxes:       1 / 2")
	var team api.Team
	if err := json.Unmarshal([]byte(mustCLI(t, "team", "show", "red", "--json")), &team); err != nil || team.Usage == nil || team.Usage.Sandboxes != 1 || team.Quota.Sandboxes != 2 {
		t.Errorf("team show --json: %+v %v", team, err)
	}
	wantAll(t, "status as the token", mustCLI(t, "--token", tok, "status"), "Caller: token:red/ci (team red, role member)")
	wantAll(t, "status as the agent", mustCLI(t, "status"), "Caller: token:agent (global, role admin, acting in every team)")
	wantAll(t, "status --team red", mustCLI(t, "--team", "red", "status"), "acting in team red")

	// Over the quota: the refusal names the flag of team update.
	mustCLI(t, "--token", tok, "sandbox", "create", "--name", "build2", "--profile", "yolo-ephemeral", "--ttl", "1h", "--no-wait")
	code, out := cli("--token", tok, "sandbox", "create", "--name", "build3", "--profile", "yolo-ephemeral", "--ttl", "1h", "--no-wait")
	if code != exitError {
		t.Errorf("third sandbox over a quota of 2: exit %d", code)
	}
	wantAll(t, "quota refusal", out, "team red quota sandboxes is 2", "agentd team update red --max-sandboxes N")
	// The TTL quota binds too.
	if code, out := cli("--token", tok, "sandbox", "create", "--name", "long", "--profile", "yolo-ephemeral", "--ttl", "9h", "--no-wait"); code != exitError || !strings.Contains(out, "team red quota ttl_seconds") {
		t.Errorf("ttl over the quota: exit %d %s", code, out)
	}
	// update changes only the flags given.
	out = mustCLI(t, "team", "update", "red", "--max-sandboxes", "3")
	wantAll(t, "team update", out, "Sandboxes:       2 / 3", "Cores:           ", "/ 64", "Max TTL:         8h0m0s", "red team")
	if code, out := cli("team", "update", "red"); code != exitUsage || !strings.Contains(out, "at least one") {
		t.Errorf("team update without flags: exit %d %s", code, out)
	}

	// A global caller sees both teams' sandboxes, with a TEAM column; in
	// one team, that team's only and no column.
	mustCLI(t, "sandbox", "create", "--name", "other", "--profile", "yolo-ephemeral", "--ttl", "1h", "--no-wait")
	out = mustCLI(t, "sandbox", "list")
	wantAll(t, "global sandbox list", out, "TEAM", "red      build ", "default  other ")
	out = mustCLI(t, "--team", "red", "sandbox", "list")
	if strings.Contains(out, "TEAM") || strings.Contains(out, "other") || !strings.Contains(out, "build") {
		t.Errorf("sandbox list --team red:\n%s", out)
	}
	mustCLI(t, "--team", "red", "workspace", "create", "--name", "red-ws", "--size", "1G")
	mustCLI(t, "workspace", "create", "--name", "default-ws", "--size", "1G")
	wantAll(t, "global workspace list", mustCLI(t, "workspace", "list"), "TEAM", "red      red-ws ", "default  default-ws ")
	if out := mustCLI(t, "--team", "red", "workspace", "list"); strings.Contains(out, "TEAM") || strings.Contains(out, "default-ws") {
		t.Errorf("workspace list --team red:\n%s", out)
	}
	var sbs api.SandboxList
	if err := json.Unmarshal([]byte(mustCLI(t, "sandbox", "list", "--json")), &sbs); err != nil || len(sbs.Sandboxes) != 3 {
		t.Errorf("sandbox list --json: %+v %v", sbs, err)
	}

	// Events name who acted; --team shows one team's.
	out = mustCLI(t, "events", "--team", "red", "--tail", "1000")
	wantAll(t, "events --team red", out, "token:red/ci", "build")
	if strings.Contains(out, "other") {
		t.Errorf("events --team red shows another team's sandbox:\n%s", out)
	}
	wantAll(t, "events", mustCLI(t, "events", "--tail", "1000"), "red        build", "default    other", "token:agent")

	// Token list: table and JSON, never a value.
	out = mustCLI(t, "token", "list")
	wantAll(t, "token list", out, "ID", "LAST USED", "ci", "red", "member")
	if strings.Contains(out, tok) {
		t.Errorf("token list shows a token value:\n%s", out)
	}
	var tl api.TokenList
	if err := json.Unmarshal([]byte(mustCLI(t, "token", "list", "--json")), &tl); err != nil || len(tl.Tokens) != 1 || tl.Tokens[0].Team != "red" || tl.Tokens[0].LastUsedAt == nil {
		t.Errorf("token list --json: %+v %v", tl, err)
	}

	// Rotate: the new value works, the old one is refused.
	out = mustCLI(t, "token", "rotate", "ci", "--ttl", "720h")
	wantAll(t, "token rotate", out, "rotated token ci", "shown only now")
	tok2 := issuedValue(t, out)
	if code, out := cli("--token", tok, "sandbox", "list"); code != exitError || !strings.Contains(out, "invalid token") {
		t.Errorf("the value before a rotate: exit %d %s", code, out)
	}
	mustCLI(t, "--token", tok2, "sandbox", "list")

	// Revoke: the next request with it fails and says why.
	wantAll(t, "token revoke", mustCLI(t, "token", "revoke", "ci"), "revoked token ci")
	code, out = cli("--token", tok2, "sandbox", "list")
	if code != exitError {
		t.Errorf("a revoked token: exit %d", code)
	}
	wantAll(t, "a revoked token's refusal", out, "token ci was revoked")
	if strings.Contains(out, "cannot reach") {
		t.Errorf("a revoked token reads as an unreachable agent: %s", out)
	}
	wantAll(t, "token list --all", mustCLI(t, "token", "list", "--all"), "ci")

	// A read token may look, not change.
	out = mustCLI(t, "token", "create", "--name", "viewer", "--team", "red", "--role", "read", "--json")
	var issued api.IssuedToken
	if err := json.Unmarshal([]byte(out), &issued); err != nil || issued.Value == "" || issued.Role != "read" || issued.Team != "red" {
		t.Fatalf("token create --json: %+v %v", issued, err)
	}
	mustCLI(t, "--token", issued.Value, "team", "show", "red")
	if code, out := cli("--token", issued.Value, "sandbox", "destroy", "build2"); code != exitError || !strings.Contains(out, "forbidden") {
		t.Errorf("destroy with a read token: exit %d %s", code, out)
	}

	// Deleting a team that holds sandboxes is refused; an empty one goes.
	if code, out := cli("team", "delete", "red"); code != exitError || !strings.Contains(out, "team_in_use") {
		t.Errorf("delete a team in use: exit %d %s", code, out)
	}
	mustCLI(t, "team", "create", "blue")
	var tlist api.TeamList
	if err := json.Unmarshal([]byte(mustCLI(t, "team", "list", "--json")), &tlist); err != nil || len(tlist.Teams) != 3 {
		t.Errorf("team list --json: %+v %v", tlist, err)
	}
	wantAll(t, "team list", mustCLI(t, "team", "list"), "blue", "red", "2 / 3", "default")
	wantAll(t, "team delete", mustCLI(t, "team", "delete", "blue"), "deleted team blue")

	// AGENTLAB_TEAM acts as --team does.
	t.Setenv("AGENTLAB_TEAM", "red")
	if out := mustCLI(t, "sandbox", "list"); strings.Contains(out, "TEAM") || strings.Contains(out, "other") {
		t.Errorf("sandbox list with AGENTLAB_TEAM=red:\n%s", out)
	}
	if out := mustCLI(t, "events", "--tail", "1000"); strings.Contains(out, "red        build") || strings.Contains(out, "other") {
		t.Errorf("events with AGENTLAB_TEAM=red show another team or a team column:\n%s", out)
	}
	t.Setenv("AGENTLAB_TEAM", "")

	// Completion offers team and token names.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"__complete", "team", "show", ""}, "red"},
		{[]string{"__complete", "--team", ""}, "default"},
		{[]string{"__complete", "token", "rotate", ""}, "viewer"},
	} {
		if _, out := cli(tc.args...); !strings.Contains(out, tc.want) {
			t.Errorf("%v: %q lacks %q", tc.args, out, tc.want)
		}
	}
}

// TestQuotaHintsNameRealFlags: the flag a quota refusal tells the operator to
// use exists on team update, for every quota key.
func TestQuotaHintsNameRealFlags(t *testing.T) {
	root := new(options).newRootCmd()
	update, _, err := root.Find([]string{"team", "update"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(api.TeamQuota{})
	var keys map[string]any
	_ = json.Unmarshal(b, &keys)
	for k := range keys {
		hint, ok := api.QuotaFlags[k]
		if !ok {
			t.Errorf("quota key %s has no flag in api.QuotaFlags", k)
			continue
		}
		name := strings.TrimPrefix(strings.Fields(hint)[0], "--")
		if update.Flags().Lookup(name) == nil {
			t.Errorf("quota key %s: hint %q names no flag of agentd team update", k, hint)
		}
	}
	e := api.QuotaError("red", "memory_mb", 1024, 1024, "this sandbox needs %d more MiB", 512)
	if !strings.Contains(e.Message, "agentd team update red --max-memory-mb N") {
		t.Errorf("quota error: %s", e.Message)
	}
}

func TestParseBytesAndQuotaFlags(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1048576": 1 << 20, "500M": 500 << 20, "2G": 2 << 30, "2GiB": 2 << 30, "1t": 1 << 40, "64K": 64 << 10, "3 MB": 3 << 20} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "lots", "-1", "1.5G", "2P", "99999999999999T"} {
		if _, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q) accepted", in)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"team", "create", "x", "--max-cores", "-1"}, "--max-cores must be 0 (no limit) or more"},
		{[]string{"team", "create", "x", "--max-ttl", "-1h"}, "--max-ttl must be 0"},
		{[]string{"team", "create", "x", "--max-ttl", "1500ms"}, "whole seconds"},
		{[]string{"team", "create", "x", "--max-artifact-bytes", "lots"}, "not a size such as"},
		{[]string{"team", "update", "x"}, "needs at least one of --description"},
		{[]string{"token", "create"}, `required flag(s) "name" not set`},
	} {
		if code, out := cli(append([]string{"--endpoint", "unix:///nonexistent.sock"}, tc.args...)...); code != exitUsage || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d %q, want usage error %q", tc.args, code, out, tc.want)
		}
	}
}
