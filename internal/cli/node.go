package cli

import (
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

func (g *options) newNodeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Show the cluster nodes agentd places sandboxes on; drain one for maintenance",
		Long: `agentd places each new sandbox on one node of the Proxmox VE cluster (all
online nodes, or the config's nodes subset): the best of a few sampled
eligible nodes, on free memory first, then CPU commitment. node list shows
what each node has and holds; a drained node gets no new sandboxes (those
already there keep running) until it is undrained. Drains are kept in the
state database across restarts.`,
	}
	list := &cobra.Command{
		Use:     "list",
		Short:   "Every node with its capacity, commitment and state",
		Example: "  agentd node list\n  agentd node list --json",
		Args:    args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				ns, err := c.Nodes(ctx)
				if err != nil {
					return err
				}
				return g.printNodes(cmd.OutOrStdout(), ns, false)
			})
		},
	}
	drain := func(use, short string, drained bool) *cobra.Command {
		return &cobra.Command{
			Use:               use + " NODE",
			Short:             short,
			Example:           "  agentd node " + use + " pve2",
			Args:              args("NODE"),
			ValidArgsFunction: firstArg(g.completeNames(listNodes)),
			RunE: func(cmd *cobra.Command, a []string) error {
				return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
					n, err := c.DrainNode(ctx, a[0], drained)
					if err != nil {
						return err
					}
					return g.printNodes(cmd.OutOrStdout(), []api.Node{*n}, true)
				})
			},
		}
	}
	cmd.AddCommand(list, drain("drain", "Place no new sandboxes on NODE (maintenance)", true),
		drain("undrain", "Place sandboxes on NODE again", false))
	return cmd
}

func listNodes(c *client.Client, ctx contextT) ([]string, error) {
	ns, err := c.Nodes(ctx)
	out := make([]string, 0, len(ns))
	for _, n := range ns {
		out = append(out, n.Name)
	}
	return out, err
}

func (g *options) printNodes(w io.Writer, ns []api.Node, one bool) error {
	if g.json {
		if one {
			return printJSON(w, ns[0])
		}
		return printJSON(w, api.NodeList{Nodes: ns})
	}
	rows := make([][]string, 0, len(ns))
	for _, n := range ns {
		state := "online"
		switch {
		case !n.Online:
			state = "offline"
		case n.Drained:
			state = "drained"
		}
		rows = append(rows, []string{n.Name, state, strconv.FormatInt(n.FreeMB, 10) + "/" + strconv.FormatInt(n.MemoryMB, 10),
			strconv.Itoa(n.CommittedCores) + "/" + strconv.Itoa(n.CPUs), strconv.Itoa(n.Sandboxes), strconv.Itoa(n.InFlight)})
	}
	return g.table(w, "NODE\tSTATE\tFREE_MB/MEMORY_MB\tCORES/CPUS\tSANDBOXES\tIN_FLIGHT", rows)
}
