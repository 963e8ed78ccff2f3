// Package cli is agentd: the host agent's commands (serve, dev, sim) and the
// day-2 CLI. It is a library so that commands run in process in tests, each
// Run with its own flags.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// Run executes one command line (without the program name) and returns its
// exit code (see exitCode). ctx is every command's parent context: the
// commands that wait (serve, dev, sim, --follow, every API call) add their
// own Ctrl-C handling to it, the others keep the default (Ctrl-C ends agentd).
func Run(ctx context.Context, argv []string, stdout, stderr io.Writer) int {
	return new(options).runCLI(ctx, argv, stdout, stderr)
}

func (g *options) runCLI(ctx context.Context, argv []string, stdout, stderr io.Writer) int {
	root := g.newRootCmd()
	root.SetArgs(argv)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ec exitStatus
	if errors.As(err, &ec) {
		// The remote command's own status (exec, ssh): it said what it had to.
		return ec.code
	}
	var ae *api.Error
	var ue usageError
	if errors.As(err, &ue) && !errors.As(err, &ae) {
		// The CLI's own text (user input in it is %q-quoted): multi-line
		// suggestions are printed as they are.
		fmt.Fprintf(stderr, "Error: %s\n", err)
	} else if g.json && errors.As(err, &ae) {
		_ = printJSON(stdout, api.ErrorBody{Error: ae})
	} else if errors.As(err, &ae) {
		printf(stderr, "Error: %s (%s)\n", ae.Message, string(ae.Code))
	} else {
		printf(stderr, "Error: %s\n", err)
	}
	return exitCode(err)
}
