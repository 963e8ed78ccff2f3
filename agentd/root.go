package main

import (
	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/version"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "agentd",
		Short: "AgentLab host agent: disposable, isolated VMs for AI coding agents on Proxmox VE",
		Long: `agentd runs on a Proxmox VE host. It owns the Proxmox API token, the state
database and the secrets, and runs the sandbox lifecycle. Its other subcommands
are the operator CLI.`,
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newSimCmd())
	return root
}
