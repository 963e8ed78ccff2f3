package agent_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

// TestSandboxExec runs commands through the guest agent against agentd dev:
// output, exit codes, stdin, a missing program, the timeout, bad requests and
// the states exec is refused in; each exec is recorded as activity.
func TestSandboxExec(t *testing.T) {
	_, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	sb := create(t, c, "ex")

	res, err := c.Exec(ctx, "ex", api.ExecRequest{Command: []string{"sh", "-c", "echo hello; echo oops >&2; exit 7"}})
	if err != nil || !res.Exited || res.ExitCode == nil || *res.ExitCode != 7 || res.Stdout != "hello\n" || res.Stderr != "oops\n" || res.PID == 0 {
		t.Fatalf("exec: %+v %v", res, err)
	}
	res, err = c.Exec(ctx, "ex", api.ExecRequest{Command: []string{"cat"}, Stdin: "piped in"})
	if err != nil || res.Stdout != "piped in" || *res.ExitCode != 0 {
		t.Fatalf("stdin: %+v %v", res, err)
	}
	res, err = c.Exec(ctx, "ex", api.ExecRequest{Command: []string{"hostname"}})
	if err != nil || res.Stdout != "ex\n" {
		t.Fatalf("hostname: %+v %v", res, err)
	}
	_, err = c.Exec(ctx, "ex", api.ExecRequest{Command: []string{"nosuch-program"}})
	wantCode(t, err, 422, api.CodeExecFailed)

	res, err = c.Exec(ctx, "ex", api.ExecRequest{Command: []string{"sleep", "30"}, TimeoutSeconds: 1})
	if err != nil || res.Exited || !res.TimedOut || res.ExitCode != nil {
		t.Fatalf("timeout: %+v %v", res, err)
	}

	for _, bad := range []struct {
		req   api.ExecRequest
		field string
	}{
		{api.ExecRequest{}, "command"},
		{api.ExecRequest{Command: []string{""}}, "command"},
		{api.ExecRequest{Command: []string{"cat"}, Stdin: strings.Repeat("x", api.ExecMaxStdin+1)}, "stdin"},
		{api.ExecRequest{Command: []string{"true"}, TimeoutSeconds: 7200}, "timeout_seconds"},
		{api.ExecRequest{Command: []string{"true"}, TimeoutSeconds: -1}, "timeout_seconds"},
	} {
		_, err := c.Exec(ctx, "ex", bad.req)
		var ae *api.Error
		if wantCode(t, err, 400, api.CodeInvalidField); !asAPI(err, &ae) || ae.Field != bad.field {
			t.Errorf("%+v: %v, want field %s", bad.req, err, bad.field)
		}
	}
	if got, _ := c.Sandbox(ctx, "ex"); got.LastUsedAt == nil {
		t.Fatal("exec did not record activity")
	}
	if !hasKind(t, c, "ex", "sandbox.exec") {
		t.Fatal("no sandbox.exec event")
	}
	if _, err := c.Stop(ctx, sb.Name); err != nil {
		t.Fatal(err)
	}
	_, err = c.Exec(ctx, "ex", api.ExecRequest{Command: []string{"true"}})
	wantCode(t, err, 409, api.CodeInvalidState)
	if !strings.Contains(err.Error(), "start it first") {
		t.Fatalf("stopped: %v", err)
	}
	_, err = c.Exec(ctx, "nosuch", api.ExecRequest{Command: []string{"true"}})
	wantCode(t, err, 404, api.CodeSandboxNotFound)
}

func asAPI(err error, ae **api.Error) bool { return errors.As(err, ae) }

// hasKind reports whether the sandbox has an event of kind.
func hasKind(t testing.TB, c *client.Client, ref, kind string) bool {
	t.Helper()
	l, err := c.Events(tctx(t), ref, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range l.Events {
		if e.Kind == kind {
			return true
		}
	}
	return false
}
