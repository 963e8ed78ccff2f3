package cli

import (
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

func (g *options) newTeamCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "team",
		Aliases: []string{"teams"},
		Short:   "Create, inspect, change the quota of and delete teams",
		Long: `A team is a namespace: its sandboxes, workspaces, sessions, jobs, events and
tokens, and a quota that bounds what it may hold. A team token sees only its
team; a global token or the Unix socket sees every team, and acts in one with
--team T (or AGENTLAB_TEAM). Everything made before teams existed, and what a
global caller creates without --team, belongs to team "default".

Creating, changing and deleting teams takes a global admin (the socket, the
agent's own API token, or a global token of role admin).`,
	}
	cmd.AddCommand(g.teamCreateCmd(), g.teamListCmd(), g.teamShowCmd(), g.teamUpdateCmd(), g.teamDeleteCmd())
	return cmd
}

// quotaFlags are the --max-* flags of team create and update; set copies
// the flags given (and only those) into a quota.
type quotaFlags struct {
	sandboxes, cores, memoryMB, workspaceGB int64
	ttl                                     time.Duration
	artifactBytes                           string
	description                             string
}

func (q *quotaFlags) add(f *pflag.FlagSet) {
	f.StringVar(&q.description, "description", "", "what the team is for")
	f.Int64Var(&q.sandboxes, "max-sandboxes", 0, "live sandboxes at most (0: no limit)")
	f.Int64Var(&q.cores, "max-cores", 0, "cores of its live sandboxes, summed (0: no limit)")
	f.Int64Var(&q.memoryMB, "max-memory-mb", 0, "MiB of memory of its live sandboxes, summed (0: no limit)")
	f.Int64Var(&q.workspaceGB, "max-workspace-gb", 0, "GiB of its workspaces, summed (0: no limit)")
	f.DurationVar(&q.ttl, "max-ttl", 0, "longest lease a sandbox may ask for, e.g. 8h (0: no limit)")
	f.StringVar(&q.artifactBytes, "max-artifact-bytes", "", "stored artifacts of its sandboxes: bytes, or a size such as 500M or 2G (0: no limit)")
}

// set applies the flags given on the command line to quota and description.
func (q *quotaFlags) set(f *pflag.FlagSet, quota *api.TeamQuota, description *string) error {
	if f.Changed("description") {
		*description = q.description
	}
	for _, n := range []struct {
		flag string
		v    int64
		to   *int64
	}{{"max-sandboxes", q.sandboxes, &quota.Sandboxes}, {"max-cores", q.cores, &quota.Cores},
		{"max-memory-mb", q.memoryMB, &quota.MemoryMB}, {"max-workspace-gb", q.workspaceGB, &quota.WorkspaceGB}} {
		if !f.Changed(n.flag) {
			continue
		}
		if n.v < 0 {
			return usagef("--%s must be 0 (no limit) or more, got %d", n.flag, n.v)
		}
		*n.to = n.v
	}
	if f.Changed("max-ttl") {
		if q.ttl < 0 || q.ttl%time.Second != 0 {
			return usagef("--max-ttl must be 0 (no limit) or a positive duration in whole seconds, got %s", q.ttl)
		}
		quota.TTLSeconds = int64(q.ttl / time.Second)
	}
	if f.Changed("max-artifact-bytes") {
		n, err := parseBytes(q.artifactBytes)
		if err != nil {
			return usagef("--max-artifact-bytes: %v", err)
		}
		quota.ArtifactBytes = n
	}
	return nil
}

var bytesRE = regexp.MustCompile(`^(\d+)\s*([KkMmGgTt]?)(?:i?[Bb])?$`)

// parseBytes reads a byte count: a number, or one with a binary unit (K, M,
// G, T, with or without "iB"/"B").
func parseBytes(s string) (int64, error) {
	m := bytesRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("%q is not a size such as 1048576, 500M or 2G", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is too large", s)
	}
	shift := map[string]uint{"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[strings.ToLower(m[2])]
	if n > (1<<62)>>shift {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n << shift, nil
}

func (g *options) teamCreateCmd() *cobra.Command {
	var q quotaFlags
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a team, with a quota (global admins)",
		Long: `Create a team. Every --max-* flag left out (or 0) is no limit. A create
repeated with the same description and quota answers with the team; one
that differs is refused (change it with agentd team update).`,
		Example: `  agentd team create red --description "red team" --max-sandboxes 5 --max-cores 16 --max-memory-mb 32768
  agentd team create ci --max-ttl 2h --max-artifact-bytes 2G --json`,
		Args:              args("NAME"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, a []string) error {
			req := api.CreateTeamRequest{Name: a[0]}
			if err := q.set(cmd.Flags(), &req.Quota, &req.Description); err != nil {
				return err
			}
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				t, err := c.CreateTeam(ctx, req)
				if err != nil {
					return err
				}
				return g.printTeam(cmd.OutOrStdout(), t)
			})
		},
	}
	q.add(cmd.Flags())
	return cmd
}

func (g *options) teamListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List teams with their usage (a team token: its own)",
		Args:    args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				ts, err := c.Teams(ctx)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), api.TeamList{Teams: ts})
				}
				rows := make([][]string, 0, len(ts))
				for _, t := range ts {
					u := t.Usage
					if u == nil {
						u = &api.TeamQuota{}
					}
					rows = append(rows, []string{t.Name, usageOf(u.Sandboxes, t.Quota.Sandboxes), usageOf(u.Cores, t.Quota.Cores),
						usageOf(u.MemoryMB, t.Quota.MemoryMB), usageOf(u.WorkspaceGB, t.Quota.WorkspaceGB), dash(t.Description)})
				}
				return g.table(cmd.OutOrStdout(), "NAME\tSANDBOXES\tCORES\tMEMORY MB\tWORKSPACE GB\tDESCRIPTION", rows)
			})
		},
	}
}

// usageOf prints "used / limit", the limit "unlimited" when 0.
func usageOf(used, limit int64) string {
	if limit == 0 {
		return fmt.Sprintf("%d / unlimited", used)
	}
	return fmt.Sprintf("%d / %d", used, limit)
}

func (g *options) teamShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "show NAME",
		Short:             "Show a team: its quota against what it holds now",
		Example:           `  agentd team show red`,
		Args:              args("NAME"),
		ValidArgsFunction: firstArg(g.completeNames(listTeams)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				t, err := c.Team(ctx, a[0])
				if err != nil {
					return err
				}
				return g.printTeam(cmd.OutOrStdout(), t)
			})
		},
	}
}

func (g *options) teamUpdateCmd() *cobra.Command {
	var q quotaFlags
	cmd := &cobra.Command{
		Use:   "update NAME",
		Short: "Change a team's description or quota (global admins)",
		Long: `Change the flags given and keep the rest: the team is read first, and its whole
quota written back with those flags changed. 0 removes a limit. Lowering a
limit below what the team holds refuses new sandboxes and workspaces; it does
not destroy anything.`,
		Example: `  agentd team update red --max-sandboxes 10
  agentd team update red --max-ttl 0 --description "red team, no lease limit"`,
		Args:              args("NAME"),
		ValidArgsFunction: firstArg(g.completeNames(listTeams)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if !anyChanged(cmd.Flags(), "description", "max-sandboxes", "max-cores", "max-memory-mb", "max-workspace-gb", "max-ttl", "max-artifact-bytes") {
				return usagef("team update needs at least one of --description and the --max-* flags (see --help)")
			}
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				t, err := c.Team(ctx, a[0])
				if err != nil {
					return err
				}
				req := api.UpdateTeamRequest{Description: t.Description, Quota: t.Quota}
				if err := q.set(cmd.Flags(), &req.Quota, &req.Description); err != nil {
					return err
				}
				if t, err = c.UpdateTeam(ctx, a[0], req); err != nil {
					return err
				}
				return g.printTeam(cmd.OutOrStdout(), t)
			})
		},
	}
	q.add(cmd.Flags())
	return cmd
}

func anyChanged(f *pflag.FlagSet, names ...string) bool {
	for _, n := range names {
		if f.Changed(n) {
			return true
		}
	}
	return false
}

func (g *options) teamDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a team that holds nothing live (global admins)",
		Long: `Delete a team. The agent refuses while the team still holds live sandboxes,
workspaces or sessions, or live tokens (409 team_in_use); team "default"
cannot be deleted. What remains of it (destroyed sandboxes, their artifacts,
events, revoked tokens) moves to the name NAME~deleted-<unix ms>, seen by
global callers only: a team created again as NAME starts empty.`,
		Args:              args("NAME"),
		ValidArgsFunction: firstArg(g.completeNames(listTeams)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				if err := c.DeleteTeam(ctx, a[0]); err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), map[string]string{"deleted": a[0]})
				}
				printf(cmd.OutOrStdout(), "deleted team %s\n", a[0])
				return nil
			})
		},
	}
}

func (g *options) printTeam(w io.Writer, t *api.Team) error {
	if g.json {
		return printJSON(w, t)
	}
	q, u := t.Quota, t.Usage
	if u == nil {
		u = &api.TeamQuota{}
	}
	ttl := "unlimited"
	if q.TTLSeconds > 0 {
		ttl = (time.Duration(q.TTLSeconds) * time.Second).String()
	}
	return kv(w, [][2]string{{"Name", t.Name}, {"Description", dash(t.Description)},
		{"Sandboxes", usageOf(u.Sandboxes, q.Sandboxes)}, {"Cores", usageOf(u.Cores, q.Cores)},
		{"Memory MB", usageOf(u.MemoryMB, q.MemoryMB)}, {"Workspace GB", usageOf(u.WorkspaceGB, q.WorkspaceGB)},
		{"Artifact bytes", usageOf(u.ArtifactBytes, q.ArtifactBytes)}, {"Max TTL", ttl},
		{"Created", fmtTime(&t.CreatedAt)}, {"Updated", fmtTime(&t.UpdatedAt)}})
}

func listTeams(c *client.Client, ctx contextT) ([]string, error) {
	ts, err := c.Teams(ctx)
	var out []string
	for _, t := range ts {
		out = append(out, t.Name+"\t"+t.Description)
	}
	return out, err
}

func (g *options) newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "token",
		Aliases: []string{"tokens"},
		Short:   "Issue, list, revoke and rotate API tokens",
		Long: `API tokens authenticate callers of the agent's HTTPS listener. A token belongs
to a team (--team T) or is global (no --team, global admins only), and has a
role: read (GET only), member (everything on its team's objects) or admin
(also its team's tokens). A token's value is shown once, when it is created
or rotated; the agent keeps only its hash. A revoked or expired token is
refused from the next request on.

Team admins manage their team's tokens; global admins every token.`,
	}
	cmd.AddCommand(g.tokenCreateCmd(), g.tokenListCmd(), g.tokenRevokeCmd(), g.tokenRotateCmd())
	return cmd
}

func (g *options) tokenCreateCmd() *cobra.Command {
	var req api.CreateTokenRequest
	cmd := &cobra.Command{
		Use:   "create --name NAME [--team T] [--role admin|member|read|node] [--node N] [--ttl D]",
		Short: "Issue a token and print its value (shown only this once)",
		Long: `Issue a token of team --team (without --team: of the team the caller acts in;
a global caller acting in none makes a global token). The value is printed
once; store it now (a secret store, AGENTLAB_TOKEN of the user or CI job). A
token name is unique among its team's live tokens. --role node --node N makes
the token of node N's agent (agentd node run): global, good for that node's
duties and reports only. A token cannot outlive the token creating it: a
caller whose token expires must give a --ttl that ends by then (400 on ttl
otherwise, naming its expiry); the same holds for token rotate --ttl.`,
		Example: `  agentd token create --name ci --team red --role member --ttl 720h
  agentd token create --name red-admin --team red --role admin --json
  agentd token create --name pve2-agent --role node --node pve2`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			req.Team = g.actingIn()
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				t, err := c.CreateToken(ctx, req)
				if err != nil {
					return err
				}
				return g.printIssued(cmd.OutOrStdout(), t, "created")
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "token name, unique in its team (required)")
	f.StringVar(&req.Role, "role", "member", "admin, member, read, or node (with --node)")
	f.StringVar(&req.Node, "node", "", "the node a node-agent token (--role node) speaks for")
	f.StringVar(&req.TTL, "ttl", "", "expire after this long, e.g. 720h (default: never)")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]string{"admin", "member", "read", "node"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// printIssued prints a new token value with what it is: the only time it
// can be seen.
func (g *options) printIssued(w io.Writer, t *api.IssuedToken, what string) error {
	if g.json {
		return printJSON(w, t)
	}
	expires := "never"
	if t.ExpiresAt != nil {
		expires = fmtTime(t.ExpiresAt)
	}
	printf(w, "%s token %s (%s, role %s, expires %s)\n", what, t.Name, tokenTeam(t.Team), t.Role, expires)
	printf(w, "%s\n", t.Value)
	fmt.Fprintln(w, "This value is shown only now: the agent stores its hash only. Keep it in a secret store.")
	return nil
}

func tokenTeam(team string) string {
	if team == "" {
		return "(global)"
	}
	return "team " + team
}

func (g *options) tokenListCmd() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List tokens (never their values); --all includes revoked ones",
		Args:    args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				ts, err := c.Tokens(ctx, all)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), api.TokenList{Tokens: ts})
				}
				rows := make([][]string, 0, len(ts))
				for _, t := range ts {
					team := t.Team
					if team == "" {
						team = "(global)"
					}
					expires := "never"
					if t.ExpiresAt != nil {
						expires = fmtTime(t.ExpiresAt)
					}
					rows = append(rows, []string{t.ID, t.Name, team, t.Role, expires, fmtTime(t.LastUsedAt), fmtTime(t.RevokedAt)})
				}
				return g.table(cmd.OutOrStdout(), "ID\tNAME\tTEAM\tROLE\tEXPIRES\tLAST USED\tREVOKED", rows)
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "include revoked tokens")
	return cmd
}

func (g *options) tokenRevokeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID|NAME",
		Short: "Revoke a token: the next request with it is refused",
		Example: `  agentd token revoke ci
  agentd token revoke tok-0123456789ab`,
		Args:              args("ID|NAME"),
		ValidArgsFunction: firstArg(g.completeNames(listTokens)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				t, err := c.RevokeToken(ctx, a[0])
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), t)
				}
				printf(cmd.OutOrStdout(), "revoked token %s (%s, %s)\n", t.Name, t.ID, tokenTeam(t.Team))
				return nil
			})
		},
	}
}

func (g *options) tokenRotateCmd() *cobra.Command {
	var req api.RotateTokenRequest
	cmd := &cobra.Command{
		Use:   "rotate ID|NAME [--ttl D]",
		Short: "Give a token a new value (the old one stops working) and print it once",
		Long: `Rotate a token: it keeps its id, name, team and role and gets a new value; the
old value is refused from the next request on. --ttl sets a new expiry from
now; without it the token does not expire.`,
		Example:           `  agentd token rotate ci --ttl 720h`,
		Args:              args("ID|NAME"),
		ValidArgsFunction: firstArg(g.completeNames(listTokens)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				t, err := c.RotateToken(ctx, a[0], req)
				if err != nil {
					return err
				}
				return g.printIssued(cmd.OutOrStdout(), t, "rotated")
			})
		},
	}
	cmd.Flags().StringVar(&req.TTL, "ttl", "", "expire after this long from now, e.g. 720h (default: never)")
	return cmd
}

func listTokens(c *client.Client, ctx contextT) ([]string, error) {
	ts, err := c.Tokens(ctx, false)
	var out []string
	for _, t := range ts {
		out = append(out, t.Name+"\t"+tokenTeam(t.Team)+", "+t.Role)
	}
	return out, err
}

// teamColumn puts a TEAM column first when the rows come from more than one
// team: only a global caller acting in no team sees such a list, and there
// the same name can be two objects.
func teamColumn(header string, rows [][]string, teams []string) (string, [][]string) {
	seen := map[string]bool{}
	for _, t := range teams {
		seen[t] = true
	}
	if len(seen) < 2 {
		return header, rows
	}
	out := make([][]string, len(rows))
	for i, r := range rows {
		out[i] = append([]string{dash(teams[i])}, r...)
	}
	return "TEAM\t" + header, out
}
