package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// usageError marks a mistake in how a command was called (exit code 2):
// unknown commands, arguments and flags, missing required flags. Every such
// error is created as a usageError; nothing is recognised by its text.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Exit codes: one per kind of mistake.
const (
	exitOK    = 0
	exitError = 1 // the command ran and failed (API error, unreachable agent, failed check)
	exitUsage = 2 // the command line is wrong; nothing was done
)

// exitCode maps an error from Execute to the process's exit code.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitError
}

// annotJSON = "none" marks a command whose output has no JSON form: --json
// is refused instead of ignored.
const annotJSON = "agentd/json"

// noJSON lists the commands without a JSON form, by path.
var noJSON = map[string]bool{
	"serve": true, "dev": true, "sim": true, "guest run": true, "config default": true,
	"host network render": true, "host network apply": true, "restore": true, "profile validate": true,
	"secrets init": true, "secrets set-env": true, "secrets unset-env": true, "secrets add-ssh-key": true,
	"secrets remove-ssh-key": true, "secrets set-git": true, "secrets validate": true,
	"workspace snapshot delete": true, "artifacts download": true,
}

// finishTree applies the command-line rules every command shares, after
// the whole tree is built (so commands added by any file get them):
//
//   - a command group (a command with subcommands and nothing to run of its
//     own, the root included) refuses an unknown subcommand or any argument
//     with a usageError and suggestions, instead of printing help and
//     succeeding; alone it prints its help;
//   - positional-argument errors of every command are usageErrors;
//   - missing required flags and violated flag groups are usageErrors.
func (g *options) finishTree(c *cobra.Command) {
	if c.HasSubCommands() && !c.Runnable() {
		c.Args = unknownSubcommand
		c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	} else if c.Args != nil {
		check := c.Args
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := check(cmd, a); err != nil {
				var ue usageError
				if errors.As(err, &ue) {
					return err
				}
				return usageError{fmt.Errorf("%w (see %s --help)", err, cmd.CommandPath())}
			}
			return nil
		}
	}
	if noJSON[strings.TrimPrefix(c.CommandPath(), "agentd ")] {
		if c.Annotations == nil {
			c.Annotations = map[string]string{}
		}
		c.Annotations[annotJSON] = "none"
	}
	if c.Runnable() {
		pre, preE := c.PreRun, c.PreRunE
		c.PreRun = nil
		c.PreRunE = func(cmd *cobra.Command, a []string) error {
			if err := cmd.ValidateRequiredFlags(); err != nil {
				return usageError{fmt.Errorf("%w (see %s --help)", err, cmd.CommandPath())}
			}
			if err := cmd.ValidateFlagGroups(); err != nil {
				return usageError{fmt.Errorf("%w (see %s --help)", err, cmd.CommandPath())}
			}
			if g.json && cmd.Annotations[annotJSON] == "none" {
				return usagef("%s has no --json output", cmd.CommandPath())
			}
			if preE != nil {
				return preE(cmd, a)
			}
			if pre != nil {
				pre(cmd, a)
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		g.finishTree(sub)
	}
}

// unknownSubcommand is the Args of a command group: any argument is an
// unknown subcommand.
func unknownSubcommand(cmd *cobra.Command, a []string) error {
	if len(a) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", a[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(a[0]); len(s) > 0 {
		msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t") + "\n"
	}
	return usageError{fmt.Errorf("%s\nRun '%s --help' for its commands", msg, cmd.CommandPath())}
}
