package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
)

func signalContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
}

func (g *options) newStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the agent: version, Proxmox reachability, sandboxes by state",
		Args:  args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				st, err := c.Status(ctx)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), st)
				}
				out := cmd.OutOrStdout()
				printf(out, "agentd %s on node %s (endpoint %s), up since %s\n", st.Version, st.Node, c.Endpoint(), st.StartedAt.Local().Format("2006-01-02 15:04:05"))
				printf(out, "instance %s (written into every VM this agent creates)\n", st.InstanceID)
				printf(out, "%s\n", callerLine(st.Caller))
				if st.Proxmox.Reachable {
					printf(out, "Proxmox VE %s: reachable\n", st.Proxmox.Version)
				} else {
					printf(out, "Proxmox: UNREACHABLE: %s\n", st.Proxmox.Error)
				}
				printf(out, "Profiles: %s\nSandboxes:", strings.Join(st.Profiles, ", "))
				none := true
				for _, s := range api.States {
					if n := st.Sandboxes[s]; n > 0 {
						printf(out, " %s=%d", s, n)
						none = false
					}
				}
				if none {
					fmt.Fprint(out, " none")
				}
				fmt.Fprintln(out)
				if len(st.Nodes) > 1 {
					fmt.Fprintln(out)
					if err := g.printNodes(out, st.Nodes, false); err != nil {
						return err
					}
				}
				if st.IdleStop != "" {
					printf(out, "Idle stop: %s\n", st.IdleStop)
				}
				if len(st.Loops) > 0 {
					names := make([]string, 0, len(st.Loops))
					for n := range st.Loops {
						names = append(names, n)
					}
					sort.Strings(names)
					var rows [][]string
					for _, n := range names {
						l := st.Loops[n]
						rows = append(rows, []string{n, l.Every, fmtTime(l.LastRun), fmt.Sprintf("%.1f ms", l.DurationMS), fmt.Sprint(l.Runs), fmt.Sprint(l.Errors), dash(l.LastError)})
					}
					fmt.Fprintln(out)
					return g.table(out, "LOOP\tEVERY\tLAST RUN\tDURATION\tRUNS\tERRORS\tLAST ERROR", rows)
				}
				return nil
			})
		},
	}
}

func (g *options) newProfileCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "profile", Aliases: []string{"profiles"}, Short: "List, show and validate profiles"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the agent's profiles",
		Args:  args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				ps, err := c.Profiles(ctx)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), api.ProfileList{Profiles: ps})
				}
				var rows [][]string
				for _, p := range ps {
					rows = append(rows, []string{p.Name, templateOf(p), fmt.Sprint(p.Cores), fmt.Sprint(p.MemoryMB),
						fmt.Sprint(p.RootSizeGB), p.NetworkMode, p.TTLDefault, fmt.Sprint(p.WorkspaceRequired)})
				}
				return g.table(cmd.OutOrStdout(), "NAME\tTEMPLATE\tCORES\tMEMORY MB\tROOT GB\tNETWORK\tTTL\tWORKSPACE", rows)
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "show NAME",
		Short: "Show one profile",
		Args:  args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				p, err := c.Profile(ctx, a[0])
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), p)
				}
				idle := "inherit"
				if p.IdleStopMinutes >= 0 {
					idle = fmt.Sprintf("%d min", p.IdleStopMinutes)
				}
				printf(cmd.OutOrStdout(), "Name:        %s\nDescription: %s\nTemplate:    %s (%s clone)\nResources:   %d cores, %d MiB (balloon %d)\nRoot disk:   %d GiB\nNetwork:     %s on %s\nTTL:         %s\nKeepalive:   %t\nIdle stop:   %s\nWorkspace:   required=%t\nSource:      %s\n",
					p.Name, dash(p.Description), templateOf(*p), p.Clone, p.Cores, p.MemoryMB, p.Balloon, p.RootSizeGB, p.NetworkMode, p.Bridge, p.TTLDefault, p.Keepalive, idle, p.WorkspaceRequired, p.Source)
				return nil
			})
		},
	})
	var bridge string
	validate := &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check profile files offline (no agent needed)",
		Args: func(cmd *cobra.Command, a []string) error {
			if len(a) == 0 {
				return usagef("profile validate needs at least one FILE")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, a []string) error {
			failed := 0
			for _, f := range a {
				data, err := os.ReadFile(f)
				if err == nil {
					var ps []*profile.Profile
					if ps, err = profile.Parse(f, data, bridge); err == nil {
						for _, p := range ps {
							printf(cmd.OutOrStdout(), "%s: profile %s ok\n", f, p.Name)
						}
						continue
					}
				}
				failed++
				printf(cmd.ErrOrStderr(), "%s\n", err)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d file(s) invalid", failed, len(a))
			}
			return nil
		},
	}
	validate.Flags().StringVar(&bridge, "bridge", "vmbr1", "agent_bridge to assume for profiles without network.bridge")
	cmd.AddCommand(validate)
	return cmd
}

// callerLine says who the agent took the caller for and where it acts.
func callerLine(c api.Caller) string {
	team, acting := "team "+c.Team, ""
	if c.Team == "" {
		team, acting = "global", ", acting in every team"
		if c.ActingIn != "" {
			acting = ", acting in team " + c.ActingIn
		}
	}
	return fmt.Sprintf("Caller: %s (%s, role %s%s)", c.Actor, team, c.Role, acting)
}

// templateOf is how a profile names its template: its VMID, or its name
// (resolved on each node).
func templateOf(p api.Profile) string {
	if p.Template != "" {
		return p.Template
	}
	return fmt.Sprint(p.TemplateVMID)
}
