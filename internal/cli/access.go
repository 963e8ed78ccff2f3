package cli

import (
	"context"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

// Exit statuses of exec beyond the command's own (the shell's conventions).
const (
	exitTimedOut  = 124 // as timeout(1)
	exitCannotRun = 127 // as a shell for a missing program
)

func (g *options) sandboxExecCmd() *cobra.Command {
	var withStdin bool
	cmd := &cobra.Command{
		Use:   "exec NAME|VMID|ID -- CMD [ARG…]",
		Short: "Run a command in a sandbox through the QEMU guest agent",
		Long: `Run a program in a RUNNING sandbox through the QEMU guest agent (Proxmox's
agent/exec): no network path to the guest and no SSH are needed. CMD is run
directly, without a shell; use sh -c '…' for pipes and redirection.

The guest agent hands the output over only once the process exited, so
stdout and stderr are printed when it ends (each capped at 16 MiB by the
agent; a cut is reported). agentd exits with the command's status, 128+N
when a signal N ended it, 127 when the guest could not start the program,
and 124 when --timeout ended first: the guest agent cannot stop a process,
so it then runs on in the guest (its pid is printed). --stdin sends this
command's standard input (UTF-8 text, at most 64 KiB). Each exec counts as
activity for idle stop.

Under agentd dev the simulated guest runs no real programs: it has a small
built-in set (echo, cat, ls, sh -c with ';' and >&2, sleep, seq, hostname,
uname, id, pwd, true, false) over the files written into it.`,
		Example: `  agentd sandbox exec demo -- uname -a
  agentd sandbox exec demo --timeout 10m -- sh -c 'cd /work && make test'
  git diff | agentd sandbox exec demo --stdin -- sh -c 'cat > /tmp/patch'
  agentd sandbox exec demo --json -- cat /etc/os-release`,
		ValidArgsFunction: g.completeSandboxes,
		Args: func(cmd *cobra.Command, a []string) error {
			if cmd.ArgsLenAtDash() != 1 || len(a) < 2 {
				return usagef("%s needs NAME, then -- and the command, e.g. %s demo -- uname -a", cmd.CommandPath(), cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, a []string) error {
			req := api.ExecRequest{Command: a[1:], TimeoutSeconds: int(g.timeout / time.Second)}
			if req.TimeoutSeconds < 1 {
				return usagef("--timeout %s: an exec needs at least 1s", g.timeout)
			}
			if withStdin {
				in, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), api.ExecMaxStdin+1))
				if err != nil {
					return fmt.Errorf("read stdin: %w", err)
				}
				if len(in) > api.ExecMaxStdin {
					return usagef("--stdin: input exceeds %d bytes, the guest agent's limit (copy larger files with ssh or a workspace)", api.ExecMaxStdin)
				}
				if !utf8.Valid(in) {
					return usagef("--stdin: input is not UTF-8 text; the guest agent passes stdin as a string (base64-encode binary data)")
				}
				req.Stdin = string(in)
			}
			c, err := g.newClient()
			if err != nil {
				return err
			}
			// The command's own timeout ends the wait; the context only
			// backs it up.
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout+30*time.Second)
			defer cancel()
			res, err := c.Exec(ctx, a[0], req)
			if err != nil {
				if api.IsCode(err, api.CodeExecFailed) {
					printf(cmd.ErrOrStderr(), "Error: %s\n", err)
					return exitStatus{exitCannotRun}
				}
				return err
			}
			return g.printExec(cmd, res)
		},
	}
	cmd.Flags().BoolVar(&withStdin, "stdin", false, "send this command's standard input to the program (at most 64 KiB of text)")
	return cmd
}

// printExec writes the command's output as it is (not cleaned: it is the
// command's, and may be piped on) and returns its exit status.
func (g *options) printExec(cmd *cobra.Command, res *api.ExecResult) error {
	if g.json {
		if err := printJSON(cmd.OutOrStdout(), res); err != nil {
			return err
		}
	} else {
		_, _ = io.WriteString(cmd.OutOrStdout(), res.Stdout)
		_, _ = io.WriteString(cmd.ErrOrStderr(), res.Stderr)
		for _, cut := range []struct {
			name string
			cut  bool
		}{{"stdout", res.StdoutTruncated}, {"stderr", res.StderrTruncated}} {
			if cut.cut {
				printf(cmd.ErrOrStderr(), "agentd: %s was cut at the guest agent's 16 MiB limit\n", cut.name)
			}
		}
	}
	switch {
	case res.TimedOut:
		printf(cmd.ErrOrStderr(), "agentd: the command still runs in the guest after %s (pid %d); the guest agent cannot stop it\n", g.timeout, res.PID)
		return exitStatus{exitTimedOut}
	case res.Signal != nil:
		return exitStatus{128 + *res.Signal}
	case res.ExitCode != nil && *res.ExitCode != 0:
		return exitStatus{*res.ExitCode}
	}
	return nil
}

func (g *options) sandboxHibernateCmd() *cobra.Command {
	cmd := g.sandboxOp(&cobra.Command{
		Use:     "hibernate NAME|VMID|ID",
		Aliases: []string{"pause"},
		Short:   "Suspend a running sandbox to disk (SUSPENDED); start resumes it",
		Long: `Hibernate writes the sandbox's RAM to a vmstate volume on its root disk's
storage and stops QEMU (Proxmox suspend with todisk): the host's memory is
freed, the guest's processes and files are kept. "agentd sandbox resume NAME"
(or start) resumes it where it was, at the same address.

While hibernated the lease clock stands still (the agent's
lease_counts_while_paused: false, the default): on resume the lease moves on
by the time it slept. Idle stop does not apply, exec and snapshots are
refused; stop (resumes, then shuts down) and destroy still work.`,
		Example: `  agentd sandbox pause demo
  agentd sandbox resume demo`,
	}, func(c *client.Client, ctx contextT, ref string) (*api.Sandbox, error) { return c.Hibernate(ctx, ref) })
	return cmd
}

func (g *options) sandboxResizeCmd() *cobra.Command {
	var req api.ResizeRequest
	cmd := &cobra.Command{
		Use:     "update NAME|VMID|ID [--cores N] [--memory-mb M] [--disk-gb G]",
		Aliases: []string{"resize"},
		Short:   "Change a sandbox's cores and memory, grow its root disk",
		Long: `Update (resize) a RUNNING or STOPPED sandbox and print its configuration as read back
from Proxmox. The root disk only grows, at once. On a running sandbox Proxmox
applies cores (and memory, unless the VM has memory hotplug) at the next start:
they are listed as pending; stop and start the sandbox to apply them.`,
		Example: `  agentd sandbox update demo --cores 8 --memory-mb 16384
  agentd sandbox resize demo --disk-gb 80 --json`,
		Args:              args("NAME|VMID|ID"),
		ValidArgsFunction: g.completeSandboxes,
		RunE: func(cmd *cobra.Command, a []string) error {
			if req.Cores == 0 && req.MemoryMB == 0 && req.DiskGB == 0 {
				return usagef("nothing to change: give --cores, --memory-mb or --disk-gb")
			}
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				res, err := c.Resize(ctx, a[0], req)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), res)
				}
				pending := "-"
				if len(res.Pending) > 0 {
					pending = fmt.Sprintf("%v (applied at the next start)", res.Pending)
				}
				return kv(cmd.OutOrStdout(), [][2]string{{"Sandbox", res.Sandbox.Name}, {"State", string(res.Sandbox.State)},
					{"Cores", fmt.Sprint(res.Cores)}, {"Memory", fmt.Sprintf("%d MiB", res.MemoryMB)},
					{"Root disk", fmt.Sprintf("%d GiB", res.DiskGB)}, {"Pending", pending}})
			})
		},
	}
	cmd.Flags().IntVar(&req.Cores, "cores", 0, "number of cores")
	cmd.Flags().IntVar(&req.MemoryMB, "memory-mb", 0, "memory in MiB")
	cmd.Flags().IntVar(&req.DiskGB, "disk-gb", 0, "root disk size in GiB (grow only)")
	return cmd
}
