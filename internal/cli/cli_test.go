package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func buildAgentd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "agentd")
	if out, err := exec.Command("go", "build", "-o", bin, "../../agentd").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// TestCLISession runs examples/cli/session.sh (the session the README shows)
// with the real binary against agentd dev.
func TestCLISession(t *testing.T) {
	bin := buildAgentd(t)
	cmd := exec.Command("bash", "examples/cli/session.sh")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "AGENTD="+bin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("session failed: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{
		"Proxmox VE 9.1.2: reachable",
		"NAME             TEMPLATE",
		"State:          RUNNING",
		"demo  100   RUNNING  10.77.",
		"Linux demo 6.8.0",
		"patch text",
		"exit status 3",
		"clean-state  false",
		"sandbox demo restored to clean-state",
		"deleted snapshot clean-state of demo",
		"reverted to snapshot clean",
		"cannot resume sandbox demo: it is RUNNING, only a SUSPENDED (hibernated) sandbox can be resumed; it is already running",
		"stop --all would stop 1 sandbox(es): demo; re-run with --yes",
		`"stopped": [`,
		`"failed": []`,
		"(uplink):20000  192.168.1.0/24",
		"(uplink):20080  192.168.0.0/16",
		"unexposed port 3000 of demo",
		"add --public to mean it",
		"exit status 2",
		"State:          SUSPENDED",
		"Root disk:  60 GiB",
		"Pending:    [cores memory_mb] (applied at the next start)",
		"State:          STOPPED",
		`"state": "RUNNING"`,
		"State:          DESTROYED",
		"sandbox.destroy",
		"Volume:       local-lvm:vm-100-disk-0",
		"Workspace:  team-a",
		"before-refactor",
		"workspace team-a: ok",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("session output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(s)
	}
}

// TestExitCodesAndErrors: usage errors exit 2, API errors exit 1 and name the
// code; --json prints the API's error object.
func TestExitCodesAndErrors(t *testing.T) {
	bin := buildAgentd(t)
	sock := "unix://" + filepath.Join(t.TempDir(), "none.sock")
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"sandbox", "show"}, 2, "needs 1 argument(s)"},
		{[]string{"sandbox", "create", "--name", "x"}, 2, `required flag(s) "profile" not set`},
		{[]string{"sandbox", "list", "--filter", "colour=red"}, 2, `unknown key "colour"`},
		{[]string{"sandbox", "list", "--bogus"}, 2, "unknown flag: --bogus"},
		{[]string{"nosuch"}, 2, "unknown command"},
		{[]string{"sandbox", "revert", "demo"}, 2, "re-run with --yes"},
		{[]string{"sandbox", "stop", "demo", "--yes"}, 2, "--yes, --profile and --filter go with --all"},
		{[]string{"sandbox", "stop", "--all", "demo"}, 2, "stop --all takes no sandbox name"},
		{[]string{"sandbox", "exec", "demo", "uname"}, 2, "needs NAME, then -- and the command"},
		{[]string{"--endpoint", sock, "status"}, 1, "cannot reach agentd at unix://"},
		{[]string{"--endpoint", "http://127.0.0.1:1", "status"}, 1, "must be unix:// or https://"},
		{[]string{"profile", "validate", "/nonexistent.yaml"}, 1, "no such file"},
	}
	for _, tc := range cases {
		cmd := exec.Command(bin, tc.args...)
		out, _ := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != tc.code || !strings.Contains(string(out), tc.want) {
			t.Errorf("agentd %v: exit %d, output %q; want exit %d with %q", tc.args, cmd.ProcessState.ExitCode(), out, tc.code, tc.want)
		}
	}
}

// TestHelpIsComplete: every command has a one-line summary; every command that
// runs something says how (Long or Example) or is self-explanatory by its args.
func TestHelpIsComplete(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		if c.Short == "" {
			t.Errorf("%s has no Short help", c.CommandPath())
		}
		for _, f := range []string{"json", "endpoint", "token"} {
			if c.Runnable() && c.Flag(f) == nil {
				t.Errorf("%s lacks --%s", c.CommandPath(), f)
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	root := new(options).newRootCmd()
	walk(root)
	for _, path := range [][]string{{"sandbox", "destroy"}, {"sandbox", "list"}, {"sandbox", "create"}, {"dev"}, {"serve"}} {
		c, _, err := root.Find(path)
		if err != nil || c.Long == "" || c.Example == "" {
			t.Errorf("agentd %v: needs Long and Example help", path)
		}
	}
	// Completion scripts are generated for the usual shells.
	for _, sh := range []string{"bash", "zsh", "fish"} {
		r := new(options).newRootCmd()
		var b strings.Builder
		r.SetOut(&b)
		r.SetArgs([]string{"completion", sh})
		if err := r.Execute(); err != nil || !strings.Contains(b.String(), "agentd") {
			t.Errorf("completion %s: %v", sh, err)
		}
	}
}

// TestGuideCommandsExist checks every `agentd …` command in the guides
// against the real command tree: the subcommand exists, its flags parse and
// the argument count is accepted.
func TestGuideCommandsExist(t *testing.T) {
	files, _ := filepath.Glob("../../templates/guides/*.md.tmpl")
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			for _, cmdline := range extractAgentd(line) {
				n++
				args := shellFields(cmdline)[1:]
				root := new(options).newRootCmd()
				c, rest, err := root.Find(args)
				if err != nil || c == root {
					t.Errorf("%s: %q: unknown command", filepath.Base(f), cmdline)
					continue
				}
				if err := c.ParseFlags(rest); err != nil {
					t.Errorf("%s: %q: %v", filepath.Base(f), cmdline, err)
					continue
				}
				if c.Args != nil {
					if err := c.Args(c, c.Flags().Args()); err != nil {
						t.Errorf("%s: %q: %v", filepath.Base(f), cmdline, err)
					}
				}
			}
		}
	}
	if n < 40 {
		t.Fatalf("only %d agentd commands found in the guides", n)
	}
}

// extractAgentd finds `agentd …` invocations in a line: whole shell lines and
// inline code spans.
func extractAgentd(line string) []string {
	var out []string
	trim := strings.TrimSpace(line)
	for _, p := range []string{"bin/agentd ", "agentd "} {
		if strings.HasPrefix(trim, p) {
			cmd := strings.SplitN(strings.TrimPrefix(trim, p), " #", 2)[0]
			cmd = strings.TrimSuffix(strings.TrimSpace(cmd), "&")
			cmd = strings.SplitN(cmd, " && ", 2)[0]
			return []string{"agentd " + cmd}
		}
	}
	parts := strings.Split(line, "`")
	for i := 1; i < len(parts); i += 2 {
		if s := parts[i]; strings.HasPrefix(s, "agentd ") && !strings.ContainsAny(s, "…<[|") {
			out = append(out, s)
		}
	}
	return out
}

// TestVMTemplateExample checks examples/vm-template: the script parses, and the
// runner unit starts `agentd guest run` with flags this binary accepts.
func TestVMTemplateExample(t *testing.T) {
	if out, err := exec.Command("bash", "-n", "../../examples/vm-template/build-template.sh").CombinedOutput(); err != nil {
		t.Fatalf("build-template.sh: %v %s", err, out)
	}
	unit, err := os.ReadFile("../../examples/vm-template/agentlab-runner.service")
	if err != nil {
		t.Fatal(err)
	}
	var exec string
	for _, l := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
			exec = v
		}
	}
	args := strings.Fields(exec)
	if len(args) < 3 || filepath.Base(args[0]) != "agentd" {
		t.Fatalf("ExecStart=%s", exec)
	}
	root := new(options).newRootCmd()
	c, rest, err := root.Find(args[1:])
	if err != nil || c.CommandPath() != "agentd guest run" {
		t.Fatalf("ExecStart runs %v: %v", c.CommandPath(), err)
	}
	if err := c.ParseFlags(rest); err != nil {
		t.Fatalf("ExecStart flags: %v", err)
	}
	if v, _ := c.Flags().GetString("secrets-dir"); !strings.HasPrefix(v, "/run/") {
		t.Fatalf("secrets must go to a tmpfs under /run, not %s", v)
	}
}

// shellFields splits a command line like sh does for simple quoting.
func shellFields(s string) []string {
	var out []string
	var cur strings.Builder
	in, q := false, rune(0)
	for _, r := range s {
		switch {
		case q != 0 && r == q:
			q = 0
		case q != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			q, in = r, true
		case r == ' ' || r == '\t':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}
