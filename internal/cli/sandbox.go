package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

func (g *options) newSandboxCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "sandbox",
		Aliases: []string{"sandboxes", "sb"},
		Short:   "Create, inspect, power and destroy sandboxes",
		Long: `Sandboxes are disposable VMs cloned from a profile's template. A sandbox is
named; NAME, VMID or ID identify it in every command. States:
REQUESTED → PROVISIONING → BOOTING → READY → RUNNING, then STOPPED,
SUSPENDED (hibernated), FAILED (see its error), TIMEOUT (lease expired) and
DESTROYED.`,
	}
	cmd.AddCommand(g.sandboxCreateCmd(), g.sandboxListCmd(), g.sandboxShowCmd(), g.sandboxStartCmd(), g.withStopAll(g.sandboxStopCmd()),
		g.sandboxDestroyCmd(), g.sandboxPruneCmd(), g.sandboxOrphansCmd(), g.sandboxLeaseCmd(), g.sandboxEventsCmd(), g.sandboxTouchCmd(),
		g.sandboxExecCmd(), g.sandboxSnapshotCmd(), g.sandboxHibernateCmd(), g.sandboxResizeCmd(),
		g.sandboxExposeCmd(), g.sandboxUnexposeCmd(), g.sandboxExposedCmd(), g.sandboxSSHCmd(), g.sandboxHostKeyCmd(),
		g.sandboxRevertCmd(), g.sandboxResumeCmd())
	return cmd
}

func (g *options) sandboxCreateCmd() *cobra.Command {
	var req api.CreateSandboxRequest
	var keepalive bool
	var noWait bool
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a sandbox and wait until it runs",
		Long: `Create a sandbox from a profile. agentd provisions it in the background; this
command waits until it is RUNNING (or failed) unless --no-wait is given.
Creating the same name again with the same settings returns the existing
sandbox; different settings are refused (409).`,
		Example: `  agentd sandbox create --name fix-123 --profile yolo-ephemeral --ttl 2h
  agentd sandbox create --name review --profile interactive-dev --tag team-a --no-wait --json
  agentd sandbox create --name build --profile yolo-ephemeral --cores 8 --memory-mb 16384`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("keepalive") {
				req.Keepalive = &keepalive
			}
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				start := time.Now()
				sb, err := c.CreateSandbox(ctx, req)
				if err != nil {
					return err
				}
				if !noWait {
					if sb, err = g.waitSandbox(cmd, c, ctx, sb.ID, 0, start); err != nil {
						return err
					}
				}
				if err := g.printSandbox(cmd.OutOrStdout(), sb); err != nil {
					return err
				}
				if sb.State == api.StateFailed {
					return fmt.Errorf("sandbox %s failed: %s", sb.Name, sb.Error)
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "sandbox name, also the VM host name (required)")
	f.StringVar(&req.Profile, "profile", "", "profile to build from (see: agentd profile list) (required)")
	f.StringVar(&req.TTL, "ttl", "", "lease, e.g. 90m or 8h; 0 for none (default: the profile's ttl_default)")
	f.BoolVar(&keepalive, "keepalive", false, "keep the sandbox after its job ends (default: the profile's)")
	f.StringVar(&req.Workspace, "workspace", "", "workspace to attach")
	f.StringSliceVar(&req.Tags, "tag", nil, "Proxmox tag to add to the VM (repeatable)")
	f.IntVar(&req.Cores, "cores", 0, "vCPUs instead of the profile's (the VM boots with them)")
	f.IntVar(&req.MemoryMB, "memory-mb", 0, "memory in MiB instead of the profile's")
	f.StringVar(&req.Node, "node", "", "cluster node to run on (default: placement chooses; see agentd node list)")
	_ = cmd.RegisterFlagCompletionFunc("node", g.completeNames(listNodes))
	f.BoolVar(&noWait, "no-wait", false, "return as soon as the request is accepted")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("profile")
	return cmd
}

func (g *options) sandboxListCmd() *cobra.Command {
	var filters []string
	var all bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List sandboxes",
		Long: `List sandboxes, newest first. DESTROYED sandboxes are hidden unless --all or a
state filter asks for them. Filters (repeatable, ANDed): state=S[,S…], profile=P, name=N;
comma-joined filters are ANDed too (profile=P,state=RUNNING). A global
caller acting in no team (no --team) sees every team's sandboxes, with a TEAM
column when they come from more than one.`,
		Example: `  agentd sandbox list
  agentd sandbox list --filter state=TIMEOUT
  agentd sandbox list --filter state=FAILED,TIMEOUT --filter profile=yolo-ephemeral --json`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := parseFilters(filters)
			if err != nil {
				return err
			}
			if all {
				q.Set("all", "true")
			}
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				sbs, err := c.Sandboxes(ctx, q)
				if err != nil {
					return err
				}
				return g.printSandboxes(cmd.OutOrStdout(), sbs)
			})
		},
	}
	cmd.Flags().StringArrayVar(&filters, "filter", nil, "key=value: state, profile or name (repeatable)")
	cmd.Flags().BoolVar(&all, "all", false, "include DESTROYED sandboxes")
	_ = cmd.RegisterFlagCompletionFunc("filter", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		var out []string
		for _, s := range api.States {
			out = append(out, "state="+string(s))
		}
		return append(out, "profile=", "name="), cobra.ShellCompDirectiveNoSpace
	})
	return cmd
}

// completeSandboxes offers sandbox names from the running agent.
func (g *options) completeSandboxes(cmd *cobra.Command, a []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(a) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	_ = g.withClient(cmd, func(c *client.Client, ctx contextT) error {
		sbs, err := c.Sandboxes(ctx, nil)
		for _, s := range sbs {
			out = append(out, s.Name+"\t"+string(s.State))
		}
		return err
	})
	return out, cobra.ShellCompDirectiveNoFileComp
}

func (g *options) sandboxShowCmd() *cobra.Command {
	return g.sandboxOp(&cobra.Command{Use: "show NAME|VMID|ID", Short: "Show one sandbox"},
		func(c *client.Client, ctx contextT, ref string) (*api.Sandbox, error) { return c.Sandbox(ctx, ref) })
}

// sandboxOp completes a command that applies op to one sandbox and prints it.
func (g *options) sandboxOp(cmd *cobra.Command, op func(c *client.Client, ctx contextT, ref string) (*api.Sandbox, error)) *cobra.Command {
	cmd.Args = args("NAME|VMID|ID")
	cmd.ValidArgsFunction = g.completeSandboxes
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
			sb, err := op(c, ctx, a[0])
			if err != nil {
				return err
			}
			return g.printSandbox(cmd.OutOrStdout(), sb)
		})
	}
	return cmd
}

func (g *options) sandboxStartCmd() *cobra.Command {
	var noWait bool
	cmd := &cobra.Command{
		Use:               "start NAME|VMID|ID",
		Short:             "Start a STOPPED sandbox, or resume a hibernated one, and wait until it runs",
		Args:              args("NAME|VMID|ID"),
		ValidArgsFunction: g.completeSandboxes,
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				start, after := time.Now(), lastEventID(c, ctx, a[0])
				sb, err := c.Start(ctx, a[0])
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
					return fmt.Errorf("sandbox %s did not start: %s", sb.Name, sb.Error)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the start is accepted (BOOTING)")
	return cmd
}

func (g *options) sandboxStopCmd() *cobra.Command {
	return g.sandboxOp(&cobra.Command{
		Use:   "stop NAME|VMID|ID",
		Short: "Shut a sandbox down (guest shutdown, then hard stop after shutdown_timeout)",
		Long: `Stop a sandbox and keep its VM: the guest is asked to shut down and is
powered off after shutdown_timeout. "agentd sandbox start" boots it again.`,
	}, func(c *client.Client, ctx contextT, ref string) (*api.Sandbox, error) { return c.Stop(ctx, ref) })
}

func (g *options) sandboxDestroyCmd() *cobra.Command {
	var force, yes bool
	cmd := g.sandboxOp(&cobra.Command{
		Use:     "destroy NAME|VMID|ID",
		Aliases: []string{"rm"},
		Short:   "Destroy a sandbox's VM (its workspace, if any, is kept)",
		Long: `Destroy a sandbox: its VM is stopped and destroyed, after checking that the VM
carries the agentlab tag and this sandbox's id in its description. A VM that
fails that check is never touched.

--force also destroys a sandbox that is still provisioning (provisioning is
cancelled and cleaned up first), and retires a row whose VMID now holds a VM
that is not ours (that VM is left alone).

A session's current sandbox is destroyed only with --yes: the session keeps its
workspace and "agentd session resume" starts a new sandbox for it.`,
		Example: `  agentd sandbox destroy fix-123
  agentd sandbox destroy --force 104
  agentd sandbox destroy alice-1 --yes`,
	}, func(c *client.Client, ctx contextT, ref string) (*api.Sandbox, error) {
		if !yes {
			if s, err := sessionOf(c, ctx, ref); err != nil {
				return nil, err
			} else if s != nil {
				return nil, usagef("sandbox %q is the current sandbox of session %q: destroying it removes its VM (workspace %q is kept) and \"agentd session resume %s\" then starts a new sandbox; re-run with --yes to destroy it", s.Sandbox, s.Name, s.Workspace, s.Name)
			}
		}
		return c.Destroy(ctx, ref, force)
	})
	cmd.Flags().BoolVar(&force, "force", false, "also destroy sandboxes that are provisioning, stuck, or whose VM is gone")
	cmd.Flags().BoolVar(&yes, "yes", false, "also destroy a session's current sandbox (the session resumes a new one)")
	return cmd
}

// sessionOf returns the session whose current sandbox ref is, or nil. Only a
// sandbox with a workspace can be one; a sandbox that cannot be looked up is
// left to the destroy itself to report.
func sessionOf(c *client.Client, ctx contextT, ref string) (*api.Session, error) {
	sb, err := c.Sandbox(ctx, ref)
	if err != nil || sb.Workspace == "" {
		return nil, nil
	}
	sessions, err := c.Sessions(ctx)
	if err != nil {
		return nil, err
	}
	for i, s := range sessions {
		if s.Sandbox == sb.Name && (s.SandboxVMID == 0 || s.SandboxVMID == sb.VMID) {
			return &sessions[i], nil
		}
	}
	return nil, nil
}

func (g *options) sandboxPruneCmd() *cobra.Command {
	var req api.PruneRequest
	var yes bool
	cmd := &cobra.Command{
		Use:   "prune [--orphans [--node N] (--dry-run | --yes)]",
		Short: "Destroy every FAILED and TIMEOUT sandbox (and, with --orphans, provable orphan VMs)",
		Long: `Destroy the VMs of FAILED and TIMEOUT sandboxes (after the ownership check),
finish destroys left DESTROYING, and mark them DESTROYED. Sandboxes that cannot
be pruned are listed with the reason.

--orphans also destroys VMs no live sandbox accounts for, but only those that
are provably this installation's: a fresh read of the VM's description names
this agent instance and a sandbox id this database issued for that very VMID.
VMs of another agentd, VMs naming unknown ids and copies made outside agentd
are listed as foreign and left alone. Workspace holders are never pruned (they
own data), except the holder of a workspace whose create or fork failed, which
never acknowledged a write. --orphans first shows what it would destroy and only acts with --yes;
--dry-run only shows.`,
		Example: `  agentd sandbox prune
  agentd sandbox orphans
  agentd sandbox prune --orphans --dry-run
  agentd sandbox prune --orphans --node pve2 --yes`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				if req.Node != "" && !req.Orphans {
					return usagef("--node applies to --orphans")
				}
				confirm := req.Orphans && !yes && !req.DryRun
				if confirm {
					req.DryRun = true
				}
				res, err := c.PruneWith(ctx, req)
				if err != nil {
					return err
				}
				if g.json {
					if err := printJSON(cmd.OutOrStdout(), res); err != nil {
						return err
					}
				} else {
					printPrune(cmd.OutOrStdout(), res)
				}
				if confirm && (len(res.Orphans) > 0 || len(res.Destroyed) > 0) {
					return fmt.Errorf("nothing was destroyed: re-run with --yes to destroy the %d orphan VM(s) and %d sandbox(es) listed", len(res.Orphans), len(res.Destroyed))
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&req.Orphans, "orphans", false, "also destroy orphan VMs provably created by this installation")
	cmd.Flags().BoolVar(&req.DryRun, "dry-run", false, "only show what would be destroyed")
	cmd.Flags().BoolVar(&yes, "yes", false, "destroy the orphans listed (without it, --orphans only shows them)")
	cmd.Flags().StringVar(&req.Node, "node", "", "limit orphan pruning to one Proxmox node")
	return cmd
}

func printPrune(out io.Writer, res *api.PruneResult) {
	verb := "destroyed"
	if res.DryRun {
		verb = "would destroy"
	}
	printf(out, "%s %d sandbox(es)\n", verb, len(res.Destroyed))
	for _, s := range res.Destroyed {
		printf(out, "  %s (VMID %d)\n", s.Name, s.VMID)
	}
	for _, s := range res.Skipped {
		printf(out, "skipped %s: %s\n", s.Sandbox.Name, s.Reason)
	}
	for _, o := range res.Orphans {
		printf(out, "orphan VM %d (%s) on %s: %s\n", o.VMID, o.Name, o.Node, o.Note)
	}
	for _, o := range res.Kept {
		printf(out, "kept VM %d (%s, %s): %s\n", o.VMID, o.Name, o.Owner, o.Note)
	}
}

func (g *options) sandboxOrphansCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "orphans",
		Short: "List VMs tagged by AgentLab that no live sandbox or workspace accounts for",
		Args:  args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				os, err := c.Orphans(ctx)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), map[string]any{"orphans": os})
				}
				var rows [][]string
				for _, o := range os {
					rows = append(rows, []string{fmt.Sprint(o.VMID), o.Name, o.Kind, o.Owner, o.Status, o.Note})
				}
				return g.table(cmd.OutOrStdout(), "VMID\tNAME\tKIND\tOWNER\tSTATUS\tNOTE", rows)
			})
		},
	}
}

func (g *options) newReconcileCmd() *cobra.Command {
	var dry bool
	cmd := &cobra.Command{
		Use:   "reconcile [--dry-run]",
		Short: "Compare the database with Proxmox now and repair drift",
		Long: `Run one reconcile cycle now (agentd also runs one every reconcile_interval):
a single /cluster/resources call, then: VM gone → DESTROYED; VM stopped outside
agentd → STOPPED; VM running while the row says STOPPED → started; tagged VMs
without a row are listed as orphans and never touched. --dry-run only reports.`,
		Example: `  agentd reconcile --dry-run
  agentd reconcile --json`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				rep, err := c.Reconcile(ctx, dry)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), rep)
				}
				out := cmd.OutOrStdout()
				verb := "repaired"
				if dry {
					verb = "would repair"
				}
				printf(out, "checked %d sandbox(es) against %d VM(s) in %.1f ms; %s %d\n", rep.Checked, rep.VMs, rep.Duration, verb, len(rep.Actions))
				for _, a := range rep.Actions {
					printf(out, "  %s (VM %d): %s: %s\n", a.Sandbox, a.VMID, a.Action, a.Reason)
				}
				for _, o := range rep.Orphans {
					printf(out, "  orphan VM %d (%s, %s): %s\n", o.VMID, o.Name, o.Kind, o.Note)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&dry, "dry-run", false, "report what would change, change nothing")
	return cmd
}

func (g *options) sandboxLeaseCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "lease", Short: "Manage sandbox leases"}
	var ttl string
	renew := g.sandboxOp(&cobra.Command{
		Use:   "renew NAME|VMID|ID --ttl DURATION",
		Short: "Set a RUNNING sandbox's lease to now + TTL",
		Example: `  agentd sandbox lease renew fix-123 --ttl 2h
  agentd sandbox lease renew --ttl 30m 104`,
	}, func(c *client.Client, ctx contextT, ref string) (*api.Sandbox, error) {
		return c.Renew(ctx, ref, minutesTTL(ttl))
	})
	renew.Flags().StringVar(&ttl, "ttl", "", "new lease from now, e.g. 90m or 8h; a bare number is minutes (required)")
	_ = renew.MarkFlagRequired("ttl")
	cmd.AddCommand(renew)
	return cmd
}

func (g *options) sandboxTouchCmd() *cobra.Command {
	return g.sandboxOp(&cobra.Command{Use: "touch NAME|VMID|ID", Short: "Record activity on a sandbox (postpones idle stop)"},
		func(c *client.Client, ctx contextT, ref string) (*api.Sandbox, error) { return c.Touch(ctx, ref) })
}

func (g *options) sandboxEventsCmd() *cobra.Command {
	cmd := g.eventsCmd("events NAME|VMID|ID", "Show a sandbox's events (every transition and action)", true)
	cmd.ValidArgsFunction = g.completeSandboxes
	return cmd
}

func (g *options) newEventsCmd() *cobra.Command {
	cmd := g.eventsCmd("events", "Show recent events of every sandbox (of one team with --team)", false)
	cmd.Long = `Show recent events: when, the team (without --team), the sandbox, the kind,
who caused it (token:<team>/<name>, token:<name> for a global token,
socket:<uid>, or agentd for the agent's own work) and what happened. With
--team T only team T's events.`
	cmd.Example = `  agentd events --tail 20
  agentd events --team red --follow`
	return cmd
}

func (g *options) eventsCmd(use, short string, perSandbox bool) *cobra.Command {
	var tail int
	var follow bool
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		RunE: func(cmd *cobra.Command, a []string) error {
			ref := ""
			if perSandbox {
				ref = a[0]
			}
			c, err := g.newClient()
			if err != nil {
				return err
			}
			ctx, cancel := g.cmdContext(cmd)
			if follow {
				cancel()
				ctx, cancel = signalContext(cmd)
			}
			defer cancel()
			out := cmd.OutOrStdout()
			l, err := c.Events(ctx, ref, 0, tail)
			if err != nil {
				return err
			}
			if g.json && !follow {
				return printJSON(out, l)
			}
			for _, e := range l.Events {
				g.printEvent(out, e)
			}
			if !follow {
				return nil
			}
			wait := func() bool {
				select {
				case <-ctx.Done():
					return false
				case <-time.After(time.Second):
					return true
				}
			}
			err = followEvents(ctx, l.Last, func(after int64) (*api.EventList, error) {
				return c.EventsAfter(ctx, ref, after, 1000)
			}, func(e api.Event) { g.printEvent(out, e) }, wait)
			if ctx.Err() != nil {
				return nil
			}
			return err
		},
	}
	if perSandbox {
		cmd.Args = args("NAME|VMID|ID")
	} else {
		cmd.Args = args()
	}
	cmd.Flags().IntVar(&tail, "tail", 50, "show the last N events (1-1000)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events until interrupted")
	return cmd
}

func (g *options) printEvent(w io.Writer, e api.Event) {
	if g.json {
		_ = printJSON(w, e)
		return
	}
	change := ""
	if e.From != "" {
		change = fmt.Sprintf(" [%s → %s]", clean(string(e.From)), clean(string(e.To)))
	}
	// The team is a column only while events of several teams can mix
	// (no --team); the actor always is: who did it.
	team := ""
	if g.actingIn() == "" {
		team = fmt.Sprintf("%-10s ", clean(dash(e.Team)))
	}
	printf(w, "%s  %s%-12s %-24s %-22s %s", e.Time.Local().Format("2006-01-02 15:04:05"), team, dash(e.Sandbox), e.Kind, dash(e.Actor), e.Message)
	fmt.Fprintln(w, change)
}

// followEvents prints every event after `after`, page by page in id order:
// it asks again at once while a page says more follow, and calls wait (false:
// stop) only when it has caught up, so a burst larger than a page between
// two polls is printed in full.
func followEvents(ctx contextT, after int64, page func(after int64) (*api.EventList, error), print func(api.Event), wait func() bool) error {
	for {
		l, err := page(after)
		if err != nil {
			return err
		}
		for _, e := range l.Events {
			if e.ID > after {
				print(e)
				after = e.ID
			}
		}
		if l.Last > after {
			after = l.Last
		}
		if l.More && len(l.Events) > 0 {
			continue
		}
		if ctx.Err() != nil || !wait() {
			return nil
		}
	}
}
