package cli

import (
	"fmt"
	"os"
	"sort"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/doctor"
)

func (g *options) newDoctorCmd() *cobra.Command {
	var out, cfgPath string
	cmd := &cobra.Command{
		Use:   "doctor --out FILE",
		Short: "Write a tar.gz for bug reports (status, loops, events, inventory, redacted config)",
		Long: `Collect what a maintainer needs to debug agentd into one tar.gz: status with
loop statistics, the last 1,000 events, sandboxes (destroyed ones included),
workspaces, sessions, orphans, versions, and the config file with secrets
redacted. The API token, the Proxmox token secret and --token are scrubbed
from every file. Safe to run at any time; it changes nothing.`,
		Example: `  agentd doctor --out /tmp/agentd-doctor.tar.gz --config /etc/agentd/config.yaml`,
		Args:    args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				var secrets []string
				for _, s := range []string{g.token, os.Getenv(client.EnvToken)} {
					if s != "" {
						secrets = append(secrets, s)
					}
				}
				files := doctor.Collect(ctx, c, cfgPath, secrets)
				if cfgPath != "" {
					files["host-check.txt"] = hostCheckText(ctx, cfgPath)
				}
				if err := doctor.Write(out, files); err != nil {
					return err
				}
				names := make([]string, 0, len(files))
				for n := range files {
					names = append(names, n)
				}
				sort.Strings(names)
				if g.json {
					return printJSON(cmd.OutOrStdout(), map[string]any{"out": out, "files": names})
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %v\n", out, names)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "bundle to write (required)")
	cmd.Flags().StringVar(&cfgPath, "config", os.Getenv(EnvConfig), "also include this config file, redacted (env "+EnvConfig+")")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}
