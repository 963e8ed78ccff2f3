package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

func (g *options) printJob(w io.Writer, j *api.Job) error {
	if g.json {
		return printJSON(w, j)
	}
	code := "-"
	if j.ExitCode != nil {
		code = strconv.Itoa(*j.ExitCode)
	}
	printf(w, "Job:        %s\nStatus:     %s\nExit code:  %s\nSandbox:    %s\nProfile:    %s\nRepo:       %s %s\nTask:       %s\nError:      %s\n",
		j.ID, j.Status, code, dash(j.Sandbox), j.Profile, dash(j.Repo), j.Ref, j.Task, dash(j.Error))
	return nil
}

func (g *options) newJobCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "job",
		Short: "Run a task on a fresh sandbox and collect its artifacts",
		Long: `A job is one task on a fresh sandbox: QUEUED → RUNNING (the guest runner
fetched its bootstrap) → COMPLETED, FAILED or TIMEOUT (the task's exit code, or
its sandbox died). Without --keepalive the sandbox is destroyed when the job ends.`,
	}
	var req api.RunJobRequest
	var keep, wait bool
	run := &cobra.Command{
		Use:     "run --profile P --task CMD [--repo URL --ref REF --ttl D --keepalive --workspace WS]",
		Short:   "Start a job",
		Example: `  agentd job run --profile yolo-ephemeral --repo https://github.com/org/repo --task 'make test' --wait`,
		Args:    args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("keepalive") {
				req.Keepalive = &keep
			}
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				j, err := c.RunJob(ctx, req)
				if err != nil {
					return err
				}
				for wait && (j.Status == "QUEUED" || j.Status == "RUNNING") {
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-time.After(time.Second):
					}
					if j, err = c.Job(ctx, j.ID); err != nil {
						return err
					}
				}
				return g.printJob(cmd.OutOrStdout(), j)
			})
		},
	}
	f := run.Flags()
	f.StringVar(&req.Profile, "profile", "", "profile of the job's sandbox (required)")
	f.StringVar(&req.Task, "task", "", "shell command to run in the sandbox (required)")
	f.StringVar(&req.Repo, "repo", "", "git repository to clone first")
	f.StringVar(&req.Ref, "ref", "", "branch or tag to clone")
	f.StringVar(&req.TTL, "ttl", "", "lease of the job's sandbox")
	f.BoolVar(&keep, "keepalive", false, "keep the sandbox when the job ends")
	f.StringVar(&req.Workspace, "workspace", "", "workspace to attach")
	f.BoolVar(&wait, "wait", false, "wait until the job ends")
	_ = run.MarkFlagRequired("profile")
	_ = run.MarkFlagRequired("task")
	list := &cobra.Command{
		Use: "list", Short: "List jobs", Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				js, err := c.Jobs(ctx)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), api.JobList{Jobs: js})
				}
				var rows [][]string
				for _, j := range js {
					code := "-"
					if j.ExitCode != nil {
						code = strconv.Itoa(*j.ExitCode)
					}
					rows = append(rows, []string{j.ID, j.Status, code, j.Profile, dash(j.Sandbox), fmtTime(&j.CreatedAt)})
				}
				return g.table(cmd.OutOrStdout(), "JOB\tSTATUS\tEXIT\tPROFILE\tSANDBOX\tCREATED", rows)
			})
		},
	}
	show := &cobra.Command{
		Use: "show JOB", Short: "Show a job", Args: args("JOB"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				j, err := c.Job(ctx, a[0])
				if err != nil {
					return err
				}
				return g.printJob(cmd.OutOrStdout(), j)
			})
		},
	}
	cancel := &cobra.Command{
		Use: "cancel JOB", Short: "End a job as FAILED and destroy its sandbox", Args: args("JOB"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				j, err := c.CancelJob(ctx, a[0])
				if err != nil {
					return err
				}
				return g.printJob(cmd.OutOrStdout(), j)
			})
		},
	}
	arts := &cobra.Command{
		Use: "artifacts JOB", Short: "List a job's artifacts", Args: args("JOB"),
		RunE: func(cmd *cobra.Command, a []string) error { return g.listArtifacts(cmd, a[0]) },
	}
	cmd.AddCommand(run, list, show, cancel, arts)
	return cmd
}

func (g *options) listArtifacts(cmd *cobra.Command, ref string) error {
	return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
		as, err := c.Artifacts(ctx, ref)
		if err != nil {
			return err
		}
		if g.json {
			return printJSON(cmd.OutOrStdout(), api.ArtifactList{Artifacts: as})
		}
		var rows [][]string
		for _, a := range as {
			rows = append(rows, []string{strconv.FormatInt(a.ID, 10), a.Name, strconv.FormatInt(a.Size, 10), a.SHA256[:16], fmtTime(&a.CreatedAt)})
		}
		return g.table(cmd.OutOrStdout(), "ID\tNAME\tBYTES\tSHA256\tCREATED", rows)
	})
}

func (g *options) newArtifactsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "artifacts", Short: "List and download artifacts guests uploaded"}
	cmd.AddCommand(&cobra.Command{
		Use: "list JOB|SANDBOX", Short: "List artifacts of a job or a sandbox", Args: args("JOB|SANDBOX"),
		RunE: func(cmd *cobra.Command, a []string) error { return g.listArtifacts(cmd, a[0]) },
	})
	var out string
	dl := &cobra.Command{
		Use:   "download ID --out FILE",
		Short: "Download an artifact and verify its SHA-256",
		Args:  args("ID"),
		RunE: func(cmd *cobra.Command, a []string) error {
			id, err := strconv.ParseInt(a[0], 10, 64)
			if err != nil {
				return usagef("artifact id %q is not a number (see agentd artifacts list)", a[0])
			}
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				f, err := os.Create(out)
				if err != nil {
					return err
				}
				defer f.Close()
				h := sha256.New()
				want, err := c.Download(ctx, id, io.MultiWriter(f, h))
				if err != nil {
					os.Remove(out)
					return err
				}
				if got := hex.EncodeToString(h.Sum(nil)); got != want {
					os.Remove(out)
					return fmt.Errorf("artifact %d: sha256 %s, agentd recorded %s", id, got, want)
				}
				printf(cmd.OutOrStdout(), "wrote %s (sha256 %s)\n", out, want)
				return nil
			})
		},
	}
	dl.Flags().StringVar(&out, "out", "", "file to write (required)")
	_ = dl.MarkFlagRequired("out")
	cmd.AddCommand(dl)
	return cmd
}
