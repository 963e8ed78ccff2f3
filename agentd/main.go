// Command agentd is the AgentLab host agent and its day-2 CLI.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

func main() {
	os.Exit(runCLI(os.Args[1:], os.Stdout, os.Stderr))
}

// runCLI executes one command line and returns its exit code (see exitCode).
func runCLI(argv []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(argv)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
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
