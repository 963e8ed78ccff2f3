// Command agentd is the AgentLab host agent and its day-2 CLI (internal/cli).
package main

import (
	"context"
	"os"

	"github.com/agentlab/terraform-provider-agentlab/internal/cli"
)

func main() {
	// No signal handling here: the commands that wait install their own
	// (see cli.Run), and a command that does not keeps Ctrl-C's default.
	os.Exit(cli.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
