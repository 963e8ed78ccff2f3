package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

func (g *options) sandboxSnapshotCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Create, list, restore and delete sandbox snapshots (Proxmox VM snapshots)",
		Long: `Snapshots of a sandbox are Proxmox snapshots of its VM, taken while it is
RUNNING or STOPPED. A VM snapshot covers every disk, so while a workspace is
attached create and restore are refused (409 workspace_attached): the
workspace belongs to its holder, and a sandbox snapshot must never snapshot or
roll back its volume. Detach it, snapshot or restore, attach it again.

--with-memory also saves the RAM of a running sandbox (PVE's vmstate): a
restore then resumes it where it was. A restore of a disk-only snapshot
leaves the sandbox STOPPED (start it, or restore --start). Storage rules
apply: raw volumes on dir storage cannot be snapshotted, and ZFS rolls back
only to its most recent snapshot.`,
		Example: `  agentd sandbox snapshot create demo before-upgrade
  agentd sandbox snapshot create demo warm --with-memory --description "deps installed"
  agentd sandbox snapshot list demo
  agentd sandbox snapshot restore demo before-upgrade --yes --start
  agentd sandbox snapshot delete demo warm`,
	}
	var desc string
	var withMemory bool
	create := &cobra.Command{
		Use: "create NAME|VMID|ID SNAPSHOT", Aliases: []string{"save"}, Short: "Snapshot a sandbox (no workspace attached)",
		Args: args("NAME|VMID|ID", "SNAPSHOT"), ValidArgsFunction: g.completeSandboxes,
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				s, err := c.CreateSandboxSnapshot(ctx, a[0], api.CreateSandboxSnapshotRequest{Name: a[1], Description: desc, WithMemory: withMemory})
				if err != nil {
					return err
				}
				return g.printSandboxSnapshots(cmd.OutOrStdout(), []api.SandboxSnapshot{*s})
			})
		},
	}
	create.Flags().StringVar(&desc, "description", "", "free text kept with the snapshot")
	create.Flags().BoolVar(&withMemory, "with-memory", false, "also save the RAM of the running sandbox (restore resumes it)")
	list := &cobra.Command{
		Use: "list NAME|VMID|ID", Aliases: []string{"ls"}, Short: "List a sandbox's snapshots, oldest first",
		Args: args("NAME|VMID|ID"), ValidArgsFunction: g.completeSandboxes,
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				snaps, err := c.SandboxSnapshots(ctx, a[0])
				if err != nil {
					return err
				}
				return g.printSandboxSnapshots(cmd.OutOrStdout(), snaps)
			})
		},
	}
	var yes, start bool
	restore := &cobra.Command{
		Use:   "restore NAME|VMID|ID SNAPSHOT --yes",
		Short: "Roll a sandbox back to a snapshot (destroys later changes)",
		Args:  args("NAME|VMID|ID", "SNAPSHOT"), ValidArgsFunction: g.completeSnapshotArgs,
		RunE: func(cmd *cobra.Command, a []string) error {
			if !yes {
				return usagef("restoring sandbox %s to %s discards everything written since that snapshot; repeat with --yes", a[0], a[1])
			}
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				sb, err := c.RestoreSandboxSnapshot(ctx, a[0], a[1])
				if err != nil {
					return err
				}
				printf(cmd.ErrOrStderr(), "sandbox %s restored to %s; later changes were discarded\n", sb.Name, a[1])
				if start && sb.State == api.StateStopped {
					if sb, err = c.Start(ctx, sb.Name); err != nil {
						return err
					}
				}
				if sb.State.Settling() {
					if sb, err = c.WaitSandbox(ctx, sb.ID, 250*time.Millisecond); err != nil {
						return err
					}
				}
				return g.printSandbox(cmd.OutOrStdout(), sb)
			})
		},
	}
	restore.Flags().BoolVar(&yes, "yes", false, "confirm that later changes are to be discarded")
	restore.Flags().BoolVar(&start, "start", false, "start the sandbox after restoring a disk-only snapshot")
	del := &cobra.Command{
		Use: "delete NAME|VMID|ID SNAPSHOT", Aliases: []string{"rm"}, Short: "Delete a sandbox snapshot",
		Args: args("NAME|VMID|ID", "SNAPSHOT"), ValidArgsFunction: g.completeSnapshotArgs,
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				if err := c.DeleteSandboxSnapshot(ctx, a[0], a[1]); err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), map[string]string{"deleted": a[1]})
				}
				printf(cmd.OutOrStdout(), "deleted snapshot %s of %s\n", a[1], a[0])
				return nil
			})
		},
	}
	cmd.AddCommand(create, list, restore, del)
	return cmd
}

// completeSnapshotArgs completes the sandbox, then its snapshots.
func (g *options) completeSnapshotArgs(cmd *cobra.Command, a []string, s string) ([]string, cobra.ShellCompDirective) {
	if len(a) == 0 {
		return g.completeSandboxes(cmd, a, s)
	}
	var out []string
	if len(a) == 1 {
		_ = g.withClient(cmd, func(c *client.Client, ctx contextT) error {
			snaps, err := c.SandboxSnapshots(ctx, a[0])
			for _, sn := range snaps {
				out = append(out, sn.Name+"\t"+sn.Description)
			}
			return err
		})
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func (g *options) printSandboxSnapshots(w io.Writer, snaps []api.SandboxSnapshot) error {
	if g.json {
		return printJSON(w, api.SandboxSnapshotList{Snapshots: snaps})
	}
	rows := make([][]string, 0, len(snaps))
	for _, s := range snaps {
		t := s.CreatedAt
		rows = append(rows, []string{s.Name, fmt.Sprint(s.WithMemory), dash(s.Parent), fmtTime(&t), dash(s.Description)})
	}
	return g.table(w, "NAME\tMEMORY\tPARENT\tCREATED\tDESCRIPTION", rows)
}
