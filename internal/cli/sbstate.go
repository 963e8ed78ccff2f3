package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

func (g *options) sandboxRevertCmd() *cobra.Command {
	var yes, deleteNewer, noWait bool
	cmd := &cobra.Command{
		Use:   "revert NAME|VMID|ID --yes",
		Short: "Roll a sandbox back to its clean snapshot (before its first boot), keeping its workspace",
		Long: `Revert rolls the sandbox's disks back to the "clean" snapshot agentd took
before the first boot (profile behavior.clean_snapshot, on by default):
everything written to them since is lost. The workspace is not: it is
detached first, kept out of the rollback, and attached again. A running
sandbox is shut down, reverted and started again (this command waits until
it runs unless --no-wait); a stopped one stays stopped.

On ZFS storage Proxmox rolls back only to the most recent snapshot: revert is
refused while snapshots newer than clean exist, naming them, unless
--delete-newer deletes them first. A sandbox without a clean snapshot
(profile turned it off, created before agentd took them, or storage that
cannot snapshot) is refused (404) with the reason.`,
		Example: `  agentd sandbox revert demo --yes
  agentd sandbox revert demo --yes --delete-newer --json`,
		Args:              args("NAME|VMID|ID"),
		ValidArgsFunction: g.completeSandboxes,
		RunE: func(cmd *cobra.Command, a []string) error {
			if !yes {
				return usagef("revert discards everything written to sandbox %s's disks since its first boot (its workspace is kept); re-run with --yes", a[0])
			}
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				start, after := time.Now(), lastEventID(c, ctx, a[0])
				sb, err := c.Revert(ctx, a[0], api.RevertRequest{DeleteNewer: deleteNewer})
				if err != nil {
					return err
				}
				if sb.State == api.StateBooting && !noWait {
					if sb, err = g.waitSandbox(cmd, c, ctx, sb.ID, after, start); err != nil {
						return err
					}
					if err := g.printSandbox(cmd.OutOrStdout(), sb); err != nil {
						return err
					}
					if sb.State != api.StateRunning {
						return fmt.Errorf("sandbox %s was reverted but did not start again: %s", sb.Name, sb.Error)
					}
					return nil
				}
				return g.printSandbox(cmd.OutOrStdout(), sb)
			})
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm that the sandbox's disk changes are discarded")
	cmd.Flags().BoolVar(&deleteNewer, "delete-newer", false, "on ZFS, delete the snapshots newer than clean first")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return while a running sandbox is still starting again")
	return cmd
}

func (g *options) sandboxResumeCmd() *cobra.Command {
	var noWait bool
	cmd := &cobra.Command{
		Use:   "resume NAME|VMID|ID",
		Short: "Resume a hibernated (SUSPENDED) sandbox and wait until it runs",
		Long: `Resume loads a hibernated sandbox's RAM back from its vmstate volume: its
processes go on where they were, at the same address, and its lease moves on
by the time it slept (unless lease_counts_while_paused). Only a SUSPENDED
sandbox can be resumed; a STOPPED one is started with "agentd sandbox start".`,
		Example: `  agentd sandbox pause demo
  agentd sandbox resume demo`,
		Args:              args("NAME|VMID|ID"),
		ValidArgsFunction: g.completeSandboxes,
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				start, after := time.Now(), lastEventID(c, ctx, a[0])
				sb, err := c.Resume(ctx, a[0])
				if err != nil {
					return err
				}
				if !noWait {
					if sb, err = g.waitSandbox(cmd, c, ctx, sb.ID, after, start); err != nil {
						return err
					}
				}
				if err := g.printSandbox(cmd.OutOrStdout(), sb); err != nil {
					return err
				}
				if sb.State != api.StateRunning && !noWait {
					return fmt.Errorf("sandbox %s did not resume: %s", sb.Name, sb.Error)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return as soon as the resume is accepted")
	return cmd
}

// stopAllResult is stop --all's answer.
type stopAllResult struct {
	Stopped []api.Sandbox   `json:"stopped"`
	Failed  []stopAllFailed `json:"failed"`
}

type stopAllFailed struct {
	Sandbox string `json:"sandbox"`
	Error   string `json:"error"`
}

// withStopAll gives "sandbox stop" its --all form: every RUNNING or
// SUSPENDED sandbox (narrowed by --profile and --filter, the list syntax),
// only with --yes.
func (g *options) withStopAll(cmd *cobra.Command) *cobra.Command {
	var all, yes bool
	var prof string
	var filters []string
	one, oneArgs := cmd.RunE, cmd.Args
	cmd.Use = "stop NAME|VMID|ID | --all --yes [--profile P] [--filter k=v]"
	cmd.Example = `  agentd sandbox stop demo
  agentd sandbox stop --all --profile yolo-ephemeral --yes
  agentd sandbox stop --all --filter name=demo --yes --json`
	cmd.Args = func(c *cobra.Command, a []string) error {
		if all {
			if len(a) > 0 {
				return usagef("stop --all takes no sandbox name (narrow it with --profile or --filter)")
			}
			return nil
		}
		if yes || prof != "" || len(filters) > 0 {
			return usagef("--yes, --profile and --filter go with --all")
		}
		return oneArgs(c, a)
	}
	cmd.RunE = func(c *cobra.Command, a []string) error {
		if !all {
			return one(c, a)
		}
		q, err := parseFilters(filters)
		if err != nil {
			return err
		}
		if prof != "" {
			if q.Has("profile") && q.Get("profile") != prof {
				return usagef("--profile %s and --filter profile=%s disagree", prof, q.Get("profile"))
			}
			q.Set("profile", prof)
		}
		if !q.Has("state") {
			q["state"] = []string{string(api.StateRunning), string(api.StateSuspended)}
		}
		return g.withClient(c, func(cl *client.Client, ctx contextT) error {
			sbs, err := cl.Sandboxes(ctx, q)
			if err != nil {
				return err
			}
			var names []string
			for _, s := range sbs {
				names = append(names, s.Name)
			}
			if !yes {
				if len(names) == 0 {
					return usagef("stop --all matches no running or hibernated sandbox; nothing to stop")
				}
				return usagef("stop --all would stop %d sandbox(es): %s; re-run with --yes", len(names), strings.Join(names, ", "))
			}
			res := stopAllResult{Stopped: []api.Sandbox{}, Failed: []stopAllFailed{}}
			for _, s := range sbs {
				sb, err := cl.Stop(ctx, s.Name)
				if err != nil {
					res.Failed = append(res.Failed, stopAllFailed{Sandbox: s.Name, Error: err.Error()})
					continue
				}
				res.Stopped = append(res.Stopped, *sb)
			}
			w := c.OutOrStdout()
			if g.json {
				err = printJSON(w, res)
			} else if len(res.Stopped) == 0 && len(res.Failed) == 0 {
				_, err = fmt.Fprintln(w, "no running or hibernated sandbox matched; nothing stopped")
			} else if len(res.Stopped) > 0 {
				err = g.printSandboxes(w, res.Stopped)
			}
			if err != nil {
				return err
			}
			if len(res.Failed) > 0 {
				var parts []string
				for _, f := range res.Failed {
					parts = append(parts, f.Sandbox+": "+f.Error)
				}
				return fmt.Errorf("could not stop %d of %d sandbox(es): %s", len(res.Failed), len(sbs), strings.Join(parts, "; "))
			}
			return nil
		})
	}
	f := cmd.Flags()
	f.BoolVar(&all, "all", false, "stop every RUNNING or SUSPENDED sandbox (with --yes)")
	f.BoolVar(&yes, "yes", false, "confirm stop --all")
	f.StringVar(&prof, "profile", "", "with --all: only sandboxes of this profile")
	f.StringArrayVar(&filters, "filter", nil, "with --all: key=value as in sandbox list (state, profile, name; repeatable)")
	return cmd
}
