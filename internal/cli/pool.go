package cli

import (
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

func (g *options) newPoolCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pool",
		Short: "Show and size the warm pools of booted, unassigned sandboxes",
		Long: `A warm pool keeps booted VMs of a profile ready (state POOLED): a create of
that profile takes one and reports RUNNING without waiting for a clone and a
boot. Pooled VMs hold no secret, no lease and no bootstrap token until they
are claimed. A profile's pool key (pool: {min_ready: N, max: M}) sizes its
pool; pool set overrides it at runtime (kept in the state database across
restarts) until pool set --clear.`,
	}
	status := &cobra.Command{
		Use:   "status [PROFILE]",
		Short: "Ready, building and claimed members of every pool (or of one)",
		Example: `  agentd pool status
  agentd pool status yolo-ephemeral --json`,
		Args:              optionalArg("profile"),
		ValidArgsFunction: firstArg(g.completeNames(listProfiles)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				if len(a) == 1 {
					p, err := c.Pool(ctx, a[0])
					if err != nil {
						return err
					}
					return g.printPools(cmd.OutOrStdout(), []api.Pool{*p}, true)
				}
				pools, err := c.Pools(ctx)
				if err != nil {
					return err
				}
				return g.printPools(cmd.OutOrStdout(), pools, false)
			})
		},
	}
	var minReady, max int
	var clear bool
	set := &cobra.Command{
		Use:   "set PROFILE --min-ready N --max M | --clear",
		Short: "Override a profile's pool size at runtime",
		Long: `Set how many members of PROFILE's pool are kept ready (--min-ready) and how
many may exist at once, ready or building (--max, at most 100). The override
is stored in the state database, survives restarts and wins over the
profile's pool key; --clear drops it. --max 0 empties the pool.`,
		Example: `  agentd pool set yolo-ephemeral --min-ready 2 --max 4
  agentd pool set yolo-ephemeral --clear`,
		Args:              args("PROFILE"),
		ValidArgsFunction: firstArg(g.completeNames(listProfiles)),
		RunE: func(cmd *cobra.Command, a []string) error {
			f := cmd.Flags()
			var req api.SetPoolRequest
			switch {
			case clear && (f.Changed("min-ready") || f.Changed("max")):
				return usagef("--clear cannot be combined with --min-ready or --max")
			case clear:
				req.Clear = true
			case !f.Changed("min-ready") || !f.Changed("max"):
				return usagef("pool set needs both --min-ready and --max (or --clear)")
			default:
				req.MinReady, req.Max = &minReady, &max
			}
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				p, err := c.SetPool(ctx, a[0], req)
				if err != nil {
					return err
				}
				return g.printPools(cmd.OutOrStdout(), []api.Pool{*p}, true)
			})
		},
	}
	set.Flags().IntVar(&minReady, "min-ready", 0, "members kept booted and ready")
	set.Flags().IntVar(&max, "max", 0, "members at most, ready or building (0-100)")
	set.Flags().BoolVar(&clear, "clear", false, "drop the override: the profile's pool key applies again")
	cmd.AddCommand(status, set)
	return cmd
}

func (g *options) printPools(w io.Writer, pools []api.Pool, one bool) error {
	if g.json {
		if one {
			return printJSON(w, pools[0])
		}
		return printJSON(w, api.PoolList{Pools: pools})
	}
	rows := make([][]string, 0, len(pools))
	for _, p := range pools {
		last := p.LastError
		if last == "" {
			last = "-"
		}
		rows = append(rows, []string{p.Profile, strconv.Itoa(p.MinReady), strconv.Itoa(p.Max), strconv.Itoa(p.Ready),
			strconv.Itoa(p.Building), strconv.FormatInt(p.Claimed, 10), p.Source, last})
	}
	return g.table(w, "PROFILE\tMIN_READY\tMAX\tREADY\tBUILDING\tCLAIMED\tSOURCE\tLAST_ERROR", rows)
}
