package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/version"
)

func (g *options) newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "agentd",
		Short: "AgentLab host agent: disposable, isolated VMs for AI coding agents on Proxmox VE",
		Long: `agentd runs on a Proxmox VE host. "agentd serve" owns the Proxmox API token,
the state database and the sandbox lifecycle; "agentd dev" runs the same agent
against an embedded Proxmox simulator. Every other subcommand is the operator
CLI: it talks to a running agent over its Unix socket (default
/run/agentd/agentd.sock) or, with AGENTLAB_ENDPOINT/--endpoint, over HTTPS with
a bearer token.`,
		Example: `  # try everything locally, no Proxmox needed
  agentd dev
  # in another shell, with the variables agentd dev printed exported:
  agentd sandbox create --name demo --profile yolo-ephemeral
  agentd sandbox list --filter state=RUNNING
  agentd sandbox destroy demo`,
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see %s --help)", err, c.CommandPath())}
	})
	g.addClientFlags(root)
	root.AddGroup(&cobra.Group{ID: "agent", Title: "Run the agent:"}, &cobra.Group{ID: "ops", Title: "Operate sandboxes:"})
	for _, c := range []*cobra.Command{newServeCmd(), newDevCmd(), newSimCmd(), g.newConfigCmd(), g.newBackupCmd(), g.newRestoreCmd(), g.newHostCmd(), g.newSecretsCmd(), newGuestCmd()} {
		c.GroupID = "agent"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{g.newStatusCmd(), g.newProfileCmd(), g.newSandboxCmd(), g.newWorkspaceCmd(), g.newSessionCmd(), g.newEventsCmd(), g.newReconcileCmd(), g.newDoctorCmd(), g.newJobCmd(), g.newArtifactsCmd(), g.newPoolCmd(), g.newNodeCmd(), g.newTeamCmd(), g.newTokenCmd()} {
		c.GroupID = "ops"
		root.AddCommand(c)
	}
	root.AddCommand(g.newVersionCmd())
	g.addProgressFlags(root)
	g.addCompletions(root)
	g.finishTree(root)
	return root
}

// args checks positional arguments and names them in the error.
func args(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if len(a) != len(names) {
			if len(names) == 0 {
				return usagef("%s takes no arguments (see --help)", cmd.CommandPath())
			}
			return usagef("%s needs %d argument(s): %v, got %d (see --help)", cmd.CommandPath(), len(names), names, len(a))
		}
		return nil
	}
}

// optionalArg accepts no argument or one, what names it in the error.
func optionalArg(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if len(a) > 1 {
			return usagef("%s takes at most one %s, got %d arguments", cmd.CommandPath(), what, len(a))
		}
		return nil
	}
}

func (g *options) newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the agentd version",
		Args:  args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.json {
				return printJSON(cmd.OutOrStdout(), map[string]string{"version": version.Version})
			}
			fmt.Fprintln(cmd.OutOrStdout(), "agentd", version.Version)
			return nil
		},
	}
}
