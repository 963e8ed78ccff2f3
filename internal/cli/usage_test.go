package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// cli runs the CLI in process and returns its exit code and output.
func cli(args ...string) (int, string) {
	var out bytes.Buffer
	code := Run(context.Background(), args, &out, &out)
	return code, out.String()
}

// cliWith is cli with a Run's state that no flag sets (forceProgress).
func cliWith(o *options, args ...string) (int, string) {
	var out bytes.Buffer
	code := o.runCLI(context.Background(), args, &out, &out)
	return code, out.String()
}

// groups lists the path of every command group (the root included).
func groups() [][]string {
	var out [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		if !c.HasSubCommands() || c.Hidden {
			return
		}
		out = append(out, path)
		for _, sub := range c.Commands() {
			walk(sub, append(append([]string{}, path...), sub.Name()))
		}
	}
	walk(new(options).newRootCmd(), nil)
	return out
}

// TestUsageUnknownSubcommand: in every command group, a mistyped subcommand
// exits 2 with a suggestion (nothing runs), an unknown word exits 2, and the
// group alone prints its help and exits 0.
func TestUsageUnknownSubcommand(t *testing.T) {
	gs := groups()
	if len(gs) < 10 {
		t.Fatalf("only %d command groups: %v", len(gs), gs)
	}
	for _, path := range gs {
		name := strings.TrimSpace("agentd " + strings.Join(path, " "))
		t.Run(name, func(t *testing.T) {
			root := new(options).newRootCmd()
			grp, _, _ := root.Find(path)
			var first string
			for _, s := range grp.Commands() {
				if s.IsAvailableCommand() && len(s.Name()) > 3 {
					first = s.Name()
					break
				}
			}
			if first != "" {
				typo := first[:len(first)-2] + first[len(first)-1:] + first[len(first)-2:len(first)-1] // swap the last two letters
				code, out := cli(append(append([]string{}, path...), typo, "x")...)
				if code != exitUsage || !strings.Contains(out, `unknown command "`+typo+`"`) || !strings.Contains(out, "Did you mean this?\n\t"+first) {
					t.Errorf("%s %s x: exit %d, %q; want exit 2 suggesting %s", name, typo, code, out, first)
				}
			}
			code, out := cli(append(append([]string{}, path...), "zzqqxx")...)
			if code != exitUsage || !strings.Contains(out, `unknown command "zzqqxx"`) {
				t.Errorf("%s zzqqxx: exit %d, %q; want exit 2", name, code, out)
			}
			if code, out := cli(path...); code != exitOK || !strings.Contains(out, name+" [command]") {
				t.Errorf("%s alone: exit %d, %q; want its help", name, code, out)
			}
		})
	}
}

// TestUsageErrorsAreTyped: every kind of command-line mistake exits 2, each
// from a usageError, never recognised by its text.
func TestUsageErrorsAreTyped(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sandbox", "destory", "x"}, "Did you mean this?\n\tdestroy"},
		{[]string{"sandboxx"}, "Did you mean this?\n\tsandbox"},
		{[]string{"sandbox", "show"}, "needs 1 argument(s)"},
		{[]string{"sandbox", "show", "a", "b"}, "needs 1 argument(s)"},
		{[]string{"status", "extra"}, "takes no arguments"},
		{[]string{"sim", "extra"}, `unknown command "extra" for "agentd sim"`},
		{[]string{"sandbox", "create", "--name", "x"}, `required flag(s) "profile" not set`},
		{[]string{"sandbox", "list", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"sandbox", "list", "--filter", "colour=red"}, `unknown key "colour"`},
		{[]string{"workspace", "delete", "w"}, "repeat with --yes"},
	} {
		code, out := cli(tc.args...)
		if code != exitUsage || !strings.Contains(out, tc.want) {
			t.Errorf("agentd %v: exit %d, %q; want exit 2 with %q", tc.args, code, out, tc.want)
		}
	}
	root := new(options).newRootCmd()
	root.SetArgs([]string{"sandbox", "create", "--name", "x"})
	root.SetOut(&bytes.Buffer{})
	if err := root.Execute(); exitCode(err) != exitUsage {
		t.Errorf("required flag error %v is not a usageError", err)
	}
}
