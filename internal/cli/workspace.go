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

func (g *options) printWorkspace(w io.Writer, ws *api.Workspace) error {
	if g.json {
		return printJSON(w, ws)
	}
	holder := "-"
	if ws.HolderVMID != 0 {
		holder = strconv.Itoa(ws.HolderVMID)
	}
	lines := [][2]string{{"Name", ws.Name}, {"ID", ws.ID}, {"State", ws.State}, {"Size", fmt.Sprintf("%d GiB", ws.SizeGB)},
		{"Node", dash(ws.Node)}, {"Storage", ws.Storage}, {"Holder VMID", holder}, {"Volume", dash(ws.Volume)}, {"Attached to", dash(ws.AttachedSandbox)},
		{"Session", dash(ws.Session)}, {"Created", fmtTime(&ws.CreatedAt)}, {"Error", dash(ws.Error)}}
	return kv(w, lines)
}

// workspaceRun is a RunE that applies op and prints the workspace.
func (g *options) workspaceRun(op func(c *client.Client, ctx contextT, a []string) (*api.Workspace, error)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, a []string) error {
		return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
			ws, err := op(c, ctx, a)
			if err != nil {
				return err
			}
			return g.printWorkspace(cmd.OutOrStdout(), ws)
		})
	}
}

// listStorages names the storages a workspace may use (for completion).
func listStorages(c *client.Client, ctx contextT) ([]string, error) {
	l, err := c.Storages(ctx)
	if err != nil {
		return nil, err
	}
	return l.Storages, nil
}

func (g *options) completeWorkspaces(cmd *cobra.Command, a []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(a) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	_ = g.withClient(cmd, func(c *client.Client, ctx contextT) error {
		ws, err := c.Workspaces(ctx)
		for _, w := range ws {
			out = append(out, w.Name)
		}
		return err
	})
	return out, cobra.ShellCompDirectiveNoFileComp
}

func (g *options) newWorkspaceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "workspace",
		Aliases: []string{"workspaces", "ws"},
		Short:   "Manage persistent workspaces (the durable /work volume)",
		Long: `A workspace is a volume owned by a never-started holder VM (ws-NAME, tagged
agentlab-workspace). Sandboxes only reference it, so destroying, timing out or
pruning a sandbox never deletes a workspace. Snapshots, restores and forks act
on the holder and need the workspace detached.`,
	}
	var name, size, storage string
	create := &cobra.Command{
		Use:     "create --name NAME --size 80G [--storage STORAGE]",
		Short:   "Create a workspace",
		Example: `  agentd workspace create --name team-a --size 80G --storage local-zfs`,
		Args:    args(),
		RunE: g.workspaceRun(func(c *client.Client, ctx contextT, _ []string) (*api.Workspace, error) {
			return c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: name, Size: size, Storage: storage})
		}),
	}
	create.Flags().StringVar(&name, "name", "", "workspace name (required)")
	create.Flags().StringVar(&size, "size", "", "size, e.g. 80G or 1T (required)")
	create.Flags().StringVar(&storage, "storage", "", "Proxmox storage (default: workspace_storage from the config)")
	_ = create.MarkFlagRequired("name")
	_ = create.MarkFlagRequired("size")

	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List workspaces", Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				ws, err := c.Workspaces(ctx)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), api.WorkspaceList{Workspaces: ws})
				}
				var rows [][]string
				var teams []string
				for _, w := range ws {
					rows = append(rows, []string{w.Name, fmt.Sprintf("%dG", w.SizeGB), w.Storage, strconv.Itoa(w.HolderVMID), dash(w.AttachedSandbox), dash(w.Session), w.State})
					teams = append(teams, w.Team)
				}
				header, rows := teamColumn("NAME\tSIZE\tSTORAGE\tHOLDER\tATTACHED TO\tSESSION\tSTATE", rows, teams)
				return g.table(cmd.OutOrStdout(), header, rows)
			})
		},
	}
	show := &cobra.Command{
		Use: "show WORKSPACE", Short: "Show a workspace (with its current volume id)", Args: args("WORKSPACE"), ValidArgsFunction: g.completeWorkspaces,
		RunE: g.workspaceRun(func(c *client.Client, ctx contextT, a []string) (*api.Workspace, error) {
			return c.Workspace(ctx, a[0])
		}),
	}
	attach := &cobra.Command{
		Use: "attach WORKSPACE SANDBOX", Short: "Attach a workspace to a STOPPED or RUNNING sandbox (as scsi1)", Args: args("WORKSPACE", "SANDBOX"),
		RunE: g.workspaceRun(func(c *client.Client, ctx contextT, a []string) (*api.Workspace, error) {
			return c.AttachWorkspace(ctx, a[0], a[1])
		}),
	}
	detach := &cobra.Command{
		Use: "detach WORKSPACE", Short: "Detach a workspace from its sandbox", Args: args("WORKSPACE"), ValidArgsFunction: g.completeWorkspaces,
		RunE: g.workspaceRun(func(c *client.Client, ctx contextT, a []string) (*api.Workspace, error) {
			return c.DetachWorkspace(ctx, a[0])
		}),
	}
	var newSize string
	resize := &cobra.Command{
		Use: "resize WORKSPACE --size SIZE", Short: "Grow a workspace (never shrinks)", Args: args("WORKSPACE"), ValidArgsFunction: g.completeWorkspaces,
		RunE: g.workspaceRun(func(c *client.Client, ctx contextT, a []string) (*api.Workspace, error) {
			return c.ResizeWorkspace(ctx, a[0], api.ResizeWorkspaceRequest{Size: newSize})
		}),
	}
	resize.Flags().StringVar(&newSize, "size", "", "new size, e.g. 120G (required)")
	_ = resize.MarkFlagRequired("size")
	var forkName, fromSnap string
	fork := &cobra.Command{
		Use:     "fork WORKSPACE --name NEW [--from-snapshot SNAP]",
		Short:   "Copy a workspace (now, or at a snapshot) into a new one",
		Example: `  agentd workspace fork team-a --name team-a-experiment --from-snapshot before-refactor`,
		Args:    args("WORKSPACE"), ValidArgsFunction: g.completeWorkspaces,
		RunE: g.workspaceRun(func(c *client.Client, ctx contextT, a []string) (*api.Workspace, error) {
			return c.ForkWorkspace(ctx, a[0], api.ForkRequest{Name: forkName, FromSnapshot: fromSnap})
		}),
	}
	fork.Flags().StringVar(&forkName, "name", "", "name of the new workspace (required)")
	fork.Flags().StringVar(&fromSnap, "from-snapshot", "", "copy the workspace as it was at this snapshot")
	_ = fork.MarkFlagRequired("name")
	var toNode, toStorage string
	move := &cobra.Command{
		Use:   "move WORKSPACE --node NODE [--storage STORAGE]",
		Short: "Move a detached workspace to another cluster node (offline migration of its holder)",
		Long: `Migrates the workspace's holder VM to NODE with Proxmox's offline migration:
its volume is copied to the node (onto STORAGE there, default the storage it
is on now) and freed on the old node only once the copy is complete. The
workspace must be detached; the target must be an online node agentd uses,
not drained, with the storage. Moving to the node it is on is a no-op.
Sandboxes with the workspace are placed on its new node afterwards.

A move interrupted by a crash settles on restart (or at the next reconcile
while the migration still runs): the workspace then names the node its
holder is on. A holder migrated by hand (qm migrate) is followed the same way.`,
		Example: "  agentd workspace move team-a --node pve2\n  agentd workspace move team-a --node pve3 --storage local-zfs --json",
		Args:    args("WORKSPACE"), ValidArgsFunction: g.completeWorkspaces,
		RunE: g.workspaceRun(func(c *client.Client, ctx contextT, a []string) (*api.Workspace, error) {
			return c.MoveWorkspace(ctx, a[0], api.MoveWorkspaceRequest{Node: toNode, Storage: toStorage})
		}),
	}
	move.Flags().StringVar(&toNode, "node", "", "the node to move the workspace to (required; agentd node list shows them)")
	move.Flags().StringVar(&toStorage, "storage", "", "the storage on that node (default: the workspace's storage; agentd's workspace storages)")
	_ = move.MarkFlagRequired("node")
	_ = move.RegisterFlagCompletionFunc("node", g.completeNames(listNodes))
	_ = move.RegisterFlagCompletionFunc("storage", g.completeNames(listStorages))
	check := &cobra.Command{
		Use: "check WORKSPACE", Short: "Report every mismatch between the database and Proxmox", Args: args("WORKSPACE"), ValidArgsFunction: g.completeWorkspaces,
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				res, err := c.CheckWorkspace(ctx, a[0])
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), res)
				}
				if res.OK {
					printf(cmd.OutOrStdout(), "workspace %s: ok\n", a[0])
					return nil
				}
				for _, f := range res.Findings {
					printf(cmd.OutOrStdout(), "%-28s %s\n", f.Code, f.Message)
				}
				return fmt.Errorf("workspace %s: %d problem(s)", a[0], len(res.Findings))
			})
		},
	}
	var yes bool
	del := &cobra.Command{
		Use: "delete WORKSPACE --yes", Short: "Delete a workspace and its data (refused while attached or reserved)", Args: args("WORKSPACE"), ValidArgsFunction: g.completeWorkspaces,
		RunE: func(cmd *cobra.Command, a []string) error {
			if !yes {
				return usagef("deleting workspace %s destroys its data and snapshots; repeat with --yes", a[0])
			}
			return g.workspaceRun(func(c *client.Client, ctx contextT, a []string) (*api.Workspace, error) {
				return c.DeleteWorkspace(ctx, a[0])
			})(cmd, a)
		},
	}
	del.Flags().BoolVar(&yes, "yes", false, "confirm that the data is to be destroyed")
	cmd.AddCommand(create, list, show, attach, detach, resize, fork, move, check, del, g.snapshotCmd())
	return cmd
}

func (g *options) printSnapshots(w io.Writer, snaps []api.Snapshot) error {
	if g.json {
		return printJSON(w, api.SnapshotList{Snapshots: snaps})
	}
	var rows [][]string
	for _, s := range snaps {
		rows = append(rows, []string{s.Name, s.CreatedAt.Local().Format(time.DateTime), dash(s.Description)})
	}
	return g.table(w, "NAME\tCREATED\tDESCRIPTION", rows)
}

func (g *options) snapshotCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Create, list, restore and delete workspace snapshots (workspace detached)",
		Long: `Snapshots of a workspace are snapshots of its holder VM. They need the
workspace detached. Storage rules apply: raw volumes on dir storage cannot be
snapshotted, and ZFS rolls back only to its most recent snapshot.`,
	}
	var desc string
	create := &cobra.Command{
		Use: "create WORKSPACE NAME", Short: "Snapshot a detached workspace", Args: args("WORKSPACE", "NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				s, err := c.CreateSnapshot(ctx, a[0], api.CreateSnapshotRequest{Name: a[1], Description: desc})
				if err != nil {
					return err
				}
				return g.printSnapshots(cmd.OutOrStdout(), []api.Snapshot{*s})
			})
		},
	}
	create.Flags().StringVar(&desc, "description", "", "free text kept with the snapshot")
	list := &cobra.Command{
		Use: "list WORKSPACE", Short: "List a workspace's snapshots, oldest first", Args: args("WORKSPACE"), ValidArgsFunction: g.completeWorkspaces,
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				snaps, err := c.Snapshots(ctx, a[0])
				if err != nil {
					return err
				}
				return g.printSnapshots(cmd.OutOrStdout(), snaps)
			})
		},
	}
	var yes bool
	restore := &cobra.Command{
		Use:   "restore WORKSPACE NAME --yes",
		Short: "Roll a detached workspace back to a snapshot (destroys later changes)",
		Args:  args("WORKSPACE", "NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if !yes {
				return usagef("restoring %s to %s discards everything written since that snapshot; repeat with --yes", a[0], a[1])
			}
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				s, err := c.RestoreSnapshot(ctx, a[0], a[1])
				if err != nil {
					return err
				}
				printf(cmd.ErrOrStderr(), "workspace %s restored to %s; later changes were discarded\n", a[0], a[1])
				return g.printSnapshots(cmd.OutOrStdout(), []api.Snapshot{*s})
			})
		},
	}
	restore.Flags().BoolVar(&yes, "yes", false, "confirm that later changes are to be discarded")
	del := &cobra.Command{
		Use: "delete WORKSPACE NAME", Short: "Delete a snapshot", Args: args("WORKSPACE", "NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				if err := c.DeleteSnapshot(ctx, a[0], a[1]); err != nil {
					return err
				}
				printf(cmd.OutOrStdout(), "deleted snapshot %s of %s\n", a[1], a[0])
				return nil
			})
		},
	}
	cmd.AddCommand(create, list, restore, del)
	return cmd
}
