package cli

import (
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

// minutesTTL reads a bare number as minutes (the older CLI's spelling:
// --ttl 120 is 120m); anything else is passed on as it is.
func minutesTTL(ttl string) string {
	if n, err := strconv.ParseUint(ttl, 10, 32); err == nil && n > 0 {
		return strconv.FormatUint(n, 10) + "m"
	}
	return ttl
}

// parseFilters turns --filter values into query parameters. Filters are
// ANDed, whether repeated or comma-joined (profile=x,state=RUNNING); a
// comma-separated list of bare values is an OR within the key before it,
// which only state allows (state=FAILED,TIMEOUT).
func parseFilters(filters []string) (url.Values, error) {
	const keys = "keys: state, profile, name"
	q := url.Values{}
	for _, f := range filters {
		key := ""
		for _, part := range strings.Split(f, ",") {
			k, v, ok := strings.Cut(part, "=")
			if !ok {
				if key == "" || part == "" {
					return nil, usagef("--filter %q: want key=value[,key=value…] (%s)", f, keys)
				}
				k, v = key, part
			}
			switch k {
			case "state", "profile", "name":
			default:
				return nil, usagef("--filter %q: unknown key %q (%s)", f, k, keys)
			}
			if v == "" {
				return nil, usagef("--filter %q: %s= needs a value", f, k)
			}
			if k != "state" && q.Has(k) {
				return nil, usagef("--filter %q: %s takes one value (filters are ANDed; a sandbox has one %s)", f, k, k)
			}
			q.Add(k, v)
			key = k
		}
	}
	return q, nil
}

// forkWorkspaceFlag accepts the older `session fork --workspace new:NAME`
// (as session create does): the fork always makes a new workspace, so only
// new:NAME is meaningful.
func forkWorkspaceFlag(cmd *cobra.Command, fr *api.ForkSessionRequest) {
	var ws string
	cmd.Flags().StringVar(&ws, "workspace", "", "new:NAME: name of the forked workspace (same as --workspace-name)")
	pre := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, a []string) error {
		if ws != "" {
			name, ok := strings.CutPrefix(ws, "new:")
			if !ok || name == "" {
				return usagef("--workspace %q: a fork copies the workspace into a new one: give new:NAME (or --workspace-name NAME)", ws)
			}
			if fr.WorkspaceName != "" && fr.WorkspaceName != name {
				return usagef("--workspace %s and --workspace-name %s disagree", ws, fr.WorkspaceName)
			}
			fr.WorkspaceName = name
		}
		if pre != nil {
			return pre(c, a)
		}
		return nil
	}
}

// completion of names from the running agent.

func (g *options) completeNames(list func(c *client.Client, ctx contextT) ([]string, error)) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		var out []string
		_ = g.withClient(cmd, func(c *client.Client, ctx contextT) error {
			var err error
			out, err = list(c, ctx)
			return err
		})
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func listSessions(c *client.Client, ctx contextT) ([]string, error) {
	ss, err := c.Sessions(ctx)
	var out []string
	for _, s := range ss {
		out = append(out, s.Name+"\t"+s.State)
	}
	return out, err
}

func listProfiles(c *client.Client, ctx contextT) ([]string, error) {
	ps, err := c.Profiles(ctx)
	var out []string
	for _, p := range ps {
		out = append(out, p.Name+"\t"+p.Description)
	}
	return out, err
}

// firstArg completes only the first positional argument.
func firstArg(f cobra.CompletionFunc) cobra.CompletionFunc {
	return func(cmd *cobra.Command, a []string, s string) ([]string, cobra.ShellCompDirective) {
		if len(a) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return f(cmd, a, s)
	}
}

// completeWorkspaceSnapshot completes WORKSPACE, then that workspace's
// snapshot names.
func (g *options) completeWorkspaceSnapshot(cmd *cobra.Command, a []string, s string) ([]string, cobra.ShellCompDirective) {
	switch len(a) {
	case 0:
		return g.completeWorkspaces(cmd, a, s)
	case 1:
		return g.completeNames(func(c *client.Client, ctx contextT) ([]string, error) {
			return snapshotNames(c, ctx, a[0])
		})(cmd, a, s)
	}
	return nil, cobra.ShellCompDirectiveNoFileComp
}

func snapshotNames(c *client.Client, ctx contextT, ws string) ([]string, error) {
	snaps, err := c.Snapshots(ctx, ws)
	var out []string
	for _, sn := range snaps {
		out = append(out, sn.Name+"\t"+sn.Description)
	}
	return out, err
}

// addCompletions wires the name completions into the tree (by command path,
// so the commands themselves stay as they are).
func (g *options) addCompletions(root *cobra.Command) {
	completeSessions := firstArg(g.completeNames(listSessions))
	completeProfiles := g.completeNames(listProfiles)
	_ = root.RegisterFlagCompletionFunc("team", g.completeNames(listTeams))
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		p := strings.TrimPrefix(c.CommandPath(), "agentd ")
		switch {
		case strings.HasPrefix(p, "session ") && c.Name() != "create" && c.Name() != "list":
			if c.ValidArgsFunction == nil {
				c.ValidArgsFunction = completeSessions
			}
		case p == "profile show":
			c.ValidArgsFunction = firstArg(completeProfiles)
		case p == "workspace snapshot restore" || p == "workspace snapshot delete":
			c.ValidArgsFunction = g.completeWorkspaceSnapshot
		case p == "workspace snapshot list" || p == "workspace snapshot create":
			if c.ValidArgsFunction == nil {
				c.ValidArgsFunction = firstArg(g.completeWorkspaces)
			}
		}
		if c.Flags().Lookup("profile") != nil {
			_ = c.RegisterFlagCompletionFunc("profile", completeProfiles)
		}
		if c.Flags().Lookup("from-snapshot") != nil && (p == "workspace fork" || p == "session fork") {
			session := p == "session fork"
			_ = c.RegisterFlagCompletionFunc("from-snapshot", func(cmd *cobra.Command, a []string, s string) ([]string, cobra.ShellCompDirective) {
				if len(a) == 0 {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				return g.completeNames(func(c *client.Client, ctx contextT) ([]string, error) {
					ws := a[0]
					if session {
						s, err := c.Session(ctx, a[0])
						if err != nil {
							return nil, err
						}
						ws = s.Workspace
					}
					return snapshotNames(c, ctx, ws)
				})(cmd, a, s)
			})
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
