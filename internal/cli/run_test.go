package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// runSplit runs one command line in process, keeping stdout and stderr apart.
func runSplit(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = Run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// apiWithSandbox is apiOnSocket holding one RUNNING sandbox named name.
func apiWithSandbox(t *testing.T, name string) string {
	t.Helper()
	st, ep := apiOnSocket(t)
	sb := &store.Sandbox{Sandbox: api.Sandbox{ID: "sbx-0123456789ab", Name: name, Profile: "p", State: api.StateRunning}}
	if err := st.CreateSandbox(context.Background(), sb, store.Event{Kind: "sandbox.requested", Message: "test"}); err != nil {
		t.Fatal(err)
	}
	return ep
}

// TestRunExitCodes: each kind of command-line mistake exits 2 with its
// message on stderr and nothing on stdout; API failures exit 1, with --json
// as the API's error object on stdout; help and version exit 0 on stdout.
func TestRunExitCodes(t *testing.T) {
	ep := apiWithSandbox(t, "alpha")
	gone := "unix://" + filepath.Join(t.TempDir(), "none.sock")
	for _, tc := range []struct {
		name       string
		args       []string
		code       int
		stdout     string // substring; "" means stdout must be empty
		stderr     string // substring; "" means stderr must be empty
		jsonStdout bool   // stdout must be one JSON value
	}{
		{"unknown subcommand suggests", []string{"sandbox", "destory", "x"}, exitUsage, "", "Did you mean this?\n\tdestroy", false},
		{"unknown top-level command suggests", []string{"sandboxx"}, exitUsage, "", "Did you mean this?\n\tsandbox", false},
		{"unknown word", []string{"zzqqxx"}, exitUsage, "", `unknown command "zzqqxx" for "agentd"`, false},
		{"missing argument", []string{"sandbox", "show"}, exitUsage, "", "agentd sandbox show needs 1 argument(s): [NAME|VMID|ID], got 0 (see --help)", false},
		{"extra argument", []string{"status", "extra"}, exitUsage, "", "agentd status takes no arguments", false},
		{"missing required flag", []string{"sandbox", "create", "--name", "x"}, exitUsage, "", `required flag(s) "profile" not set`, false},
		{"unknown flag", []string{"sandbox", "list", "--bogus"}, exitUsage, "", "unknown flag: --bogus (see agentd sandbox list --help)", false},
		{"bad flag value", []string{"--timeout", "soon", "status"}, exitUsage, "", `invalid argument "soon" for "--timeout"`, false},
		{"--json refused", []string{"--json", "restore", "x"}, exitUsage, "", "agentd restore has no --json output", false},
		{"--json refused after the command", []string{"secrets", "init", "--json"}, exitUsage, "", "agentd secrets init has no --json output", false},
		{"exec without --", []string{"--endpoint", ep, "sandbox", "exec", "alpha", "uname"}, exitUsage, "", "needs NAME, then -- and the command", false},
		{"bad filter", []string{"--endpoint", ep, "sandbox", "list", "--filter", "colour=red"}, exitUsage, "", `unknown key "colour"`, false},
		{"agent unreachable", []string{"--endpoint", gone, "status"}, exitError, "", "cannot reach agentd at unix://", false},
		{"API error names its code", []string{"--endpoint", ep, "sandbox", "show", "nosuch"}, exitError, "", "(sandbox_not_found)", false},
		{"API error as JSON", []string{"--endpoint", ep, "--json", "sandbox", "show", "nosuch"}, exitError, `"code": "sandbox_not_found"`, "", true},
		{"found", []string{"--endpoint", ep, "sandbox", "show", "alpha"}, exitOK, "State:          RUNNING", "", false},
		{"found as JSON", []string{"--endpoint", ep, "--json", "sandbox", "show", "alpha"}, exitOK, `"name": "alpha"`, "", true},
		{"group alone prints its help", []string{"sandbox"}, exitOK, "agentd sandbox [command]", "", false},
		{"--help", []string{"sandbox", "list", "--help"}, exitOK, "agentd sandbox list [flags]", "", false},
		{"version as JSON", []string{"--json", "version"}, exitOK, `"version"`, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runSplit(tc.args...)
			if code != tc.code {
				t.Errorf("agentd %v: exit %d, want %d\nstdout: %s\nstderr: %s", tc.args, code, tc.code, stdout, stderr)
			}
			for _, s := range []struct{ name, got, want string }{{"stdout", stdout, tc.stdout}, {"stderr", stderr, tc.stderr}} {
				if s.want == "" && s.got != "" {
					t.Errorf("agentd %v: %s should be empty, got %q", tc.args, s.name, s.got)
				}
				if !strings.Contains(s.got, s.want) {
					t.Errorf("agentd %v: %s %q lacks %q", tc.args, s.name, s.got, s.want)
				}
			}
			if tc.jsonStdout {
				var v any
				if err := json.Unmarshal([]byte(stdout), &v); err != nil {
					t.Errorf("agentd %v: stdout is not JSON (%v): %q", tc.args, err, stdout)
				}
			}
		})
	}
}

// TestRunsShareNoFlags: Runs in the same process at the same time, one with
// --json against one agent and one printing tables from another, each see
// only their own flags (run it with -race).
func TestRunsShareNoFlags(t *testing.T) {
	epA, epB := apiWithSandbox(t, "alpha"), apiWithSandbox(t, "bravo")
	const rounds = 10
	var wg sync.WaitGroup
	errs := make(chan string, 4*rounds)
	for i := 0; i < rounds; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			code, out, errOut := runSplit("--endpoint", epA, "--json", "sandbox", "list")
			var l api.SandboxList
			if err := json.Unmarshal([]byte(out), &l); code != exitOK || err != nil || len(l.Sandboxes) != 1 || l.Sandboxes[0].Name != "alpha" {
				errs <- fmt.Sprintf("--json list of A: exit %d: %s%s", code, out, errOut)
			}
		}()
		go func() {
			defer wg.Done()
			code, out, errOut := runSplit("--endpoint", epB, "sandbox", "list")
			if code != exitOK || !strings.HasPrefix(out, "NAME ") || !strings.Contains(out, "\nbravo ") || strings.Contains(out, "alpha") {
				errs <- fmt.Sprintf("table of B: exit %d: %s%s", code, out, errOut)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestRunHonoursContext: the context given to Run bounds the command (an
// embedding program's cancellation reaches the API calls).
func TestRunHonoursContext(t *testing.T) {
	ep := apiWithSandbox(t, "alpha")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errOut bytes.Buffer
	if code := Run(ctx, []string{"--endpoint", ep, "sandbox", "show", "alpha"}, &out, &errOut); code != exitError || !strings.Contains(errOut.String(), "context canceled") {
		t.Errorf("sandbox show with a cancelled context: exit %d, stdout %q, stderr %q; want exit 1 naming the cancellation", code, out.String(), errOut.String())
	}
}
