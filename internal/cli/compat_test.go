package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestCompatFilters(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want url.Values
		err  string
	}{
		{[]string{"profile=x,state=RUNNING"}, url.Values{"profile": {"x"}, "state": {"RUNNING"}}, ""},
		{[]string{"state=FAILED,TIMEOUT", "profile=p"}, url.Values{"state": {"FAILED", "TIMEOUT"}, "profile": {"p"}}, ""},
		{[]string{"state=FAILED,TIMEOUT,name=n"}, url.Values{"state": {"FAILED", "TIMEOUT"}, "name": {"n"}}, ""},
		{[]string{"profile=a,b"}, nil, "profile takes one value"},
		{[]string{"profile=a", "profile=b"}, nil, "profile takes one value"},
		{[]string{"colour=red"}, nil, `unknown key "colour"`},
		{[]string{"state="}, nil, "needs a value"},
		{[]string{"RUNNING"}, nil, "want key=value"},
	} {
		got, err := parseFilters(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || exitCode(err) != exitUsage {
				t.Errorf("%v: err %v, want usage error %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v: %v %v, want %v", tc.in, got, err, tc.want)
		}
	}
	for in, want := range map[string]string{"120": "120m", "90m": "90m", "2h": "2h", "0": "0", "": ""} {
		if got := minutesTTL(in); got != want {
			t.Errorf("minutesTTL(%q) = %q, want %q", in, got, want)
		}
	}
	err := timeoutHint(fmt.Errorf("sandbox x still PROVISIONING: %w", context.DeadlineExceeded), "x")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "provisioning continues") {
		t.Errorf("timeout: %v", err)
	}
}

// TestCompatWithDev runs the FAQ's older spellings, filters, --json rules,
// completion and progress against agentd dev.
func TestCompatWithDev(t *testing.T) {
	startDevConfig(t)
	code, out := cliWith(&options{forceProgress: true}, "sandbox", "create", "--name", "demo", "--profile", "yolo-ephemeral")
	if code != 0 || !strings.Contains(out, "State:          RUNNING") || !strings.Contains(out, "[  0.") || !strings.Contains(out, "→ RUNNING") {
		t.Fatalf("create with progress: exit %d\n%s", code, out)
	}
	if code, out := cliWith(&options{forceProgress: true}, "sandbox", "create", "--name", "demo2", "--profile", "yolo-ephemeral", "--json"); code != 0 || strings.Contains(out, "s] ") {
		t.Errorf("create --json printed progress: %s", out)
	}
	if code, out := cliWith(&options{forceProgress: true}, "sandbox", "create", "--name", "demo3", "--profile", "yolo-ephemeral", "--quiet"); code != 0 || strings.Contains(out, "s] ") {
		t.Errorf("create --quiet printed progress: %s", out)
	}
	code, out = cli("sandbox", "lease", "renew", "demo", "--ttl", "120", "--json")
	if code != 0 || !strings.Contains(out, `"ttl_seconds": 7200`) {
		t.Errorf("lease renew --ttl 120: exit %d %s", code, out)
	}
	if code, out := cli("sandbox", "list", "--filter", "profile=yolo-ephemeral,state=RUNNING"); code != 0 || !strings.Contains(out, "demo ") {
		t.Errorf("comma filter: exit %d %s", code, out)
	}
	if code, out := cli("sandbox", "list", "--filter", "profile=interactive-dev,state=RUNNING"); code != 0 || strings.Contains(out, "demo") {
		t.Errorf("comma filter is not an AND: exit %d %s", code, out)
	}
	if code, out := cli("restore", "x", "--json"); code != exitUsage || !strings.Contains(out, "agentd restore has no --json output") {
		t.Errorf("restore --json: exit %d %s", code, out)
	}
	if code, out := cli("config", "check", "--json"); code != 0 || !strings.Contains(out, `"profiles": [`) {
		t.Errorf("config check --json: exit %d %s", code, out)
	}
	if code, out := cli("session", "fork", "s", "--name", "n", "--workspace", "team-a"); code != exitUsage || !strings.Contains(out, "give new:NAME") {
		t.Errorf("session fork --workspace existing: exit %d %s", code, out)
	}
	if code, out := cli("session", "fork", "nosuch", "--name", "n", "--workspace", "new:w"); code != exitError || !strings.Contains(out, "nosuch") {
		t.Errorf("session fork --workspace new:w: exit %d %s", code, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"__complete", "profile", "show", ""}, "yolo-ephemeral"},
		{[]string{"__complete", "sandbox", "create", "--profile", ""}, "interactive-dev"},
		{[]string{"__complete", "sandbox", "show", ""}, "demo"},
	} {
		if _, out := cli(tc.args...); !strings.Contains(out, tc.want) {
			t.Errorf("%v: %q lacks %q", tc.args, out, tc.want)
		}
	}
}

// TestTokenErrorsWithDev: a refused or missing token on the TLS listener says
// so, names the flag and variable to set and where the agent keeps its
// token, and is not mistaken for an agent that does not answer.
func TestTokenErrorsWithDev(t *testing.T) {
	d := startDevConfig(t)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"wrong", []string{"--token", strings.Repeat("x", 40), "status"},
			[]string{"invalid token", "refused the token", d.Info.Endpoint, "--token or AGENTLAB_TOKEN", "token_file", "(unauthorized)"}},
		{"missing", []string{"status"}, []string{"missing token", "--token or AGENTLAB_TOKEN", "token_file"}},
		{"json", []string{"--token", strings.Repeat("x", 40), "status", "--json"}, []string{`"code": "unauthorized"`, "invalid token"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "missing" {
				t.Setenv("AGENTLAB_TOKEN", "")
			}
			code, out := cli(tc.args...)
			if code != exitError {
				t.Errorf("exit %d, want %d", code, exitError)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q: %s", w, out)
				}
			}
			if strings.Contains(out, "running?") || strings.Contains(out, "cannot reach") {
				t.Errorf("a refused token reads as an unreachable agent: %s", out)
			}
		})
	}
}
