// Command agentd is the AgentLab host agent and its day-2 CLI.
package main

import (
	"errors"
	"os"
	"strings"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

func main() {
	root := newRootCmd()
	err := root.Execute()
	if err == nil {
		return
	}
	var ec exitStatus
	if errors.As(err, &ec) {
		// The remote command's own status (exec, ssh): it said what it had to.
		os.Exit(ec.code)
	}
	var ae *api.Error
	if g.json && errors.As(err, &ae) {
		_ = printJSON(os.Stdout, api.ErrorBody{Error: ae})
	} else if errors.As(err, &ae) {
		printf(os.Stderr, "Error: %s (%s)\n", ae.Message, string(ae.Code))
	} else {
		printf(os.Stderr, "Error: %s\n", err)
	}
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "required flag") {
		os.Exit(2)
	}
	os.Exit(1)
}
