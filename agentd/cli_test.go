package main

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
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// TestCLISession runs examples/cli/session.sh (the session the README shows)
// with the real binary against agentd dev.
func TestCLISession(t *testing.T) {
	bin := buildAgentd(t)
	cmd := exec.Command("bash", "examples/cli/session.sh")
	cmd.Dir = ".."
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
	root := newRootCmd()
	walk(root)
	for _, path := range [][]string{{"sandbox", "destroy"}, {"sandbox", "list"}, {"sandbox", "create"}, {"dev"}, {"serve"}} {
		c, _, err := root.Find(path)
		if err != nil || c.Long == "" || c.Example == "" {
			t.Errorf("agentd %v: needs Long and Example help", path)
		}
	}
	// Completion scripts are generated for the usual shells.
	for _, sh := range []string{"bash", "zsh", "fish"} {
		r := newRootCmd()
		var b strings.Builder
		r.SetOut(&b)
		r.SetArgs([]string{"completion", sh})
		if err := r.Execute(); err != nil || !strings.Contains(b.String(), "agentd") {
			t.Errorf("completion %s: %v", sh, err)
		}
	}
}
