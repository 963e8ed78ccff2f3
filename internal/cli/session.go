package cli

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

func (g *options) printSession(w io.Writer, s *api.Session) error {
	if g.json {
		return printJSON(w, s)
	}
	vmid := "-"
	if s.SandboxVMID != 0 {
		vmid = strconv.Itoa(s.SandboxVMID)
	}
	return kv(w, [][2]string{{"Name", s.Name}, {"ID", s.ID}, {"State", s.State}, {"Profile", s.Profile}, {"Workspace", s.Workspace},
		{"Sandbox", dash(s.Sandbox)}, {"VMID", vmid}, {"IP", dash(s.IP)}, {"Created", fmtTime(&s.CreatedAt)}, {"Error", dash(s.Error)}})
}

func (g *options) sessionArgsCmd(use, short string, run func(c *client.Client, ctx contextT, ref string) (*api.Session, error)) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Args: args("SESSION"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				s, err := run(c, ctx, a[0])
				if err != nil {
					return err
				}
				return g.printSession(cmd.OutOrStdout(), s)
			})
		},
	}
}

func (g *options) newSessionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "session",
		Aliases: []string{"sessions"},
		Short:   "Work sessions: a name, a profile and a workspace, on a fresh sandbox each resume",
		Long: `A session binds a name, a profile and a workspace to whichever sandbox is
current. "resume" provisions a fresh sandbox from the profile with the workspace
attached (replacing a stopped or failed one); "stop" destroys the sandbox and
keeps the workspace reserved; "fork" starts a new session on a copy of the
workspace.`,
	}
	var req api.CreateSessionRequest
	create := &cobra.Command{
		Use:   "create --name NAME --profile PROFILE --workspace WS|new:WS [--workspace-size 80G]",
		Short: "Create a session (stopped; resume starts it)",
		Example: `  agentd session create --name alice --profile yolo-workspace --workspace new:alice --workspace-size 80G
  agentd session resume alice`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				s, err := c.CreateSession(ctx, req)
				if err != nil {
					return err
				}
				return g.printSession(cmd.OutOrStdout(), s)
			})
		},
	}
	f := create.Flags()
	f.StringVar(&req.Name, "name", "", "session name (required)")
	f.StringVar(&req.Profile, "profile", "", "profile of its sandboxes (required)")
	f.StringVar(&req.Workspace, "workspace", "", "existing workspace, or new:NAME to create one (required)")
	f.StringVar(&req.WorkspaceSize, "workspace-size", "", "size of a new workspace, e.g. 80G")
	f.StringVar(&req.WorkspaceStorage, "workspace-storage", "", "storage of a new workspace")
	for _, n := range []string{"name", "profile", "workspace"} {
		_ = create.MarkFlagRequired(n)
	}
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List sessions", Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				ss, err := c.Sessions(ctx)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), api.SessionList{Sessions: ss})
				}
				var rows [][]string
				var teams []string
				for _, s := range ss {
					rows = append(rows, []string{s.Name, s.State, s.Profile, s.Workspace, dash(s.Sandbox), dash(s.IP)})
					teams = append(teams, s.Team)
				}
				header, rows := teamColumn("NAME\tSTATE\tPROFILE\tWORKSPACE\tSANDBOX\tIP", rows, teams)
				return g.table(cmd.OutOrStdout(), header, rows)
			})
		},
	}
	show := g.sessionArgsCmd("show SESSION", "Show a session", func(c *client.Client, ctx contextT, ref string) (*api.Session, error) {
		return c.Session(ctx, ref)
	})
	var noWait bool
	var resume *cobra.Command
	resume = g.sessionArgsCmd("resume SESSION", "Provision a fresh sandbox for the session and wait until it runs", func(c *client.Client, ctx contextT, ref string) (*api.Session, error) {
		start := time.Now()
		s, err := c.ResumeSession(ctx, ref)
		if err != nil || noWait {
			return s, err
		}
		if s.Sandbox != "" && g.progressOut(resume) != nil {
			// A fresh sandbox: every one of its events is this resume's progress.
			if _, err := g.waitSandbox(resume, c, ctx, s.Sandbox, 0, start); err != nil {
				return s, err
			}
		}
		sbName := s.Sandbox
		if s, err = c.WaitSession(ctx, ref, 250*time.Millisecond); err != nil {
			return s, timeoutHint(err, sbName)
		}
		if s.State != string(api.StateRunning) {
			return s, fmt.Errorf("session %s: sandbox %s is %s: %s", s.Name, s.Sandbox, s.State, s.Error)
		}
		return s, nil
	})
	resume.Flags().BoolVar(&noWait, "no-wait", false, "return once provisioning started")
	stop := g.sessionArgsCmd("stop SESSION", "Destroy the session's sandbox; keep its workspace", func(c *client.Client, ctx contextT, ref string) (*api.Session, error) {
		return c.StopSession(ctx, ref)
	})
	del := g.sessionArgsCmd("delete SESSION", "Stop a session and release its workspace (the workspace is kept)", func(c *client.Client, ctx contextT, ref string) (*api.Session, error) {
		return c.DeleteSession(ctx, ref)
	})
	var fr api.ForkSessionRequest
	fork := g.sessionArgsCmd("fork SESSION --name NEW", "Start a new session on a copy of this session's workspace", func(c *client.Client, ctx contextT, ref string) (*api.Session, error) {
		return c.ForkSession(ctx, ref, fr)
	})
	fork.Example = `  agentd session fork alice --name alice-try --from-snapshot before-refactor`
	fork.Flags().StringVar(&fr.Name, "name", "", "new session name (required)")
	fork.Flags().StringVar(&fr.Profile, "profile", "", "profile (default: the source session's)")
	fork.Flags().StringVar(&fr.WorkspaceName, "workspace-name", "", "name of the forked workspace (default: the new session's name)")
	fork.Flags().StringVar(&fr.FromSnapshot, "from-snapshot", "", "fork the workspace as it was at this snapshot")
	forkWorkspaceFlag(fork, &fr)
	_ = fork.MarkFlagRequired("name")
	cmd.AddCommand(create, list, show, resume, stop, fork, del)
	return cmd
}
