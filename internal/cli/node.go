package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/conntrack"
	"github.com/agentlab/terraform-provider-agentlab/internal/netpolicy"
	"github.com/agentlab/terraform-provider-agentlab/internal/version"
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
		drain("undrain", "Place sandboxes on NODE again", false), g.nodeRunCmd())
	return cmd
}

func (g *options) nodeRunCmd() *cobra.Command {
	var node, guestListen string
	var once, dryRun bool
	var every time.Duration
	cmd := &cobra.Command{
		Use:   "run --node NODE",
		Short: "Run the node agent: this node's sandbox bindings and exposed ports, SSH activity for idle stop",
		Long: `The node agent runs on every cluster node but the one agentd serves on. It
connects out to agentd (--endpoint, with a node-agent token: agentd token create
--name pve2-agent --role node --node pve2); the only port it opens is the
guest listener on this node's agent bridge (--guest-listen, by default the
address agentd names), which relays its guests' requests (bootstrap,
artifacts, job reports) to agentd over the same authenticated API: agentd
takes the guest's source address only from the agent of the node that
address's sandbox runs on. Each round it
pulls the node's duties — the nftables ruleset of the agent bridge with the
bindings and exposed ports of the sandboxes whose VMs run on this node — loads
it atomically (one nft -f) when it changed, and reports the established SSH
flows from conntrack, which idle stop needs for sandboxes on this node (without
a fresh report their activity counts as unknown, and idle stop leaves them
alone). --dry-run prints the ruleset instead of loading it.`,
		Example: `  agentd node run --node pve2 --endpoint https://pve1:8443 --token "$(cat /etc/agentd/node-token)"
  agentd node run --node pve2 --once --dry-run`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if node == "" {
				return usagef("node run needs --node (this node's name in the cluster)")
			}
			c, err := g.newClient()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			out := cmd.OutOrStdout()
			if !once && !dryRun && guestListen != "off" {
				stopRelay, err := serveGuestRelay(ctx, c, node, guestListen, g.timeout)
				if err != nil {
					return err
				}
				defer stopRelay()
				fmt.Fprintf(out, "node %s: relaying guest requests to agentd\n", node)
			}
			applied := ""
			for {
				wait, err := g.nodeRound(ctx, c, node, dryRun, &applied, out)
				if once || ctx.Err() != nil {
					return err
				}
				if err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "node agent %s: %v\n", node, err)
				}
				if every > 0 {
					wait = every
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(wait):
				}
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&node, "node", "", "this node's name in the cluster (required)")
	f.StringVar(&guestListen, "guest-listen", "", "host:port of the guest relay on this node's agent bridge (default: the address agentd names; off: no relay)")
	f.BoolVar(&once, "once", false, "one round, then exit (its error is the exit status)")
	f.BoolVar(&dryRun, "dry-run", false, "print the ruleset instead of loading it")
	f.DurationVar(&every, "interval", 0, "time between rounds (default: what agentd says, a third of its reconcile interval)")
	_ = cmd.RegisterFlagCompletionFunc("node", g.completeNames(listNodes))
	return cmd
}

// serveGuestRelay listens for this node's guests at addr (or where agentd
// says the guest listener is) and relays every request to agentd.
func serveGuestRelay(ctx context.Context, c *client.Client, node, addr string, timeout time.Duration) (stop func(), err error) {
	if addr == "" {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		d, err := c.NodeDuties(rctx, node)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("ask agentd where the guest listener is (or set --guest-listen): %w", err)
		}
		addr = d.GuestListen
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("guest relay on %s: %w (is the agent bridge up on this node?)", addr, err)
	}
	srv := &http.Server{Handler: c.GuestRelay(node), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }, nil
}

// nodeRound is one round of the node agent: pull the duties, apply a
// changed ruleset, report. It returns how long to wait for the next.
func (g *options) nodeRound(ctx context.Context, c *client.Client, node string, dryRun bool, applied *string, out io.Writer) (time.Duration, error) {
	rctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	wait := 10 * time.Second
	rep := api.NodeReport{Version: version.Version, SSHFlows: []string{}}
	d, err := c.NodeDuties(rctx, node)
	if err == nil {
		wait = time.Duration(max(d.IntervalS, 1)) * time.Second
		rep.Bindings, rep.Exposed = d.Bindings, d.Exposed
		switch {
		case d.Ruleset == *applied:
		case dryRun:
			fmt.Fprint(out, d.Ruleset)
			*applied = d.Ruleset
		default:
			if err = netpolicy.Apply(rctx, d.Ruleset); err == nil {
				*applied = d.Ruleset
				fmt.Fprintf(out, "node %s: ruleset loaded (%d binding(s), %d exposed port(s))\n", node, d.Bindings, d.Exposed)
			}
		}
	}
	if err != nil {
		rep.Error = err.Error()
	}
	if flows, cerr := conntrack.Command(rctx); cerr != nil {
		rep.SSHUnknown = true
		rep.Error = strings.TrimPrefix(rep.Error+"; conntrack: "+cerr.Error(), "; ")
	} else {
		for a := range conntrack.Established(flows) {
			rep.SSHFlows = append(rep.SSHFlows, a.String())
		}
		sort.Strings(rep.SSHFlows)
	}
	if rerr := c.ReportNode(rctx, node, rep); rerr != nil && err == nil {
		err = rerr
	}
	return wait, err
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
