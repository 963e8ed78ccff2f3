package provider

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

// Plan-time checks that need the agent. They run in ModifyPlan when the
// provider is configured (c is nil when its settings are known only after
// apply), and only for a value the plan sets: a profile removed from agentd
// after its sandboxes were created, or a storage taken off its
// workspace_storages after a workspace was created there, must not make their
// plans fail.

// checkProfile reports, on the profile attribute, a profile agentd does not
// have, and, on the workspace attribute when workspace is not nil, a profile
// that requires a workspace the plan does not give.
func checkProfile(ctx context.Context, c *client.Client, diags *diag.Diagnostics, profile types.String, workspace *types.String) {
	if c == nil || profile.IsNull() || profile.IsUnknown() {
		return
	}
	p, err := c.Profile(ctx, profile.ValueString())
	if client.IsNotFound(err) {
		diags.AddAttributeError(path.Root("profile"), "Invalid Profile",
			fmt.Sprintf("profile %q does not exist; agentd has %s (data source agentlab_profiles lists them).", profile.ValueString(), profileNames(ctx, c)))
		return
	}
	if err != nil {
		return // agentd unreachable or older: the apply reports it
	}
	if workspace != nil && p.WorkspaceRequired && workspace.IsNull() {
		diags.AddAttributeError(path.Root("workspace"), "Missing Workspace",
			fmt.Sprintf("profile %s requires a workspace: set workspace to the name of an agentlab_workspace, or use a profile without workspace_required.", p.Name))
	}
}

func profileNames(ctx context.Context, c *client.Client) string {
	ps, err := c.Profiles(ctx)
	if err != nil || len(ps) == 0 {
		return "no profiles"
	}
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// checkStorage reports, on the attribute at p, a storage agentd does not allow
// workspaces on (its workspace_storage and workspace_storages), naming the
// allowed ones. An agent without GET /v1/storages (older) or unreachable is
// left to the apply.
func checkStorage(ctx context.Context, c *client.Client, diags *diag.Diagnostics, p path.Path, storage types.String) {
	if c == nil || storage.IsNull() || storage.IsUnknown() {
		return
	}
	sl, err := c.Storages(ctx)
	if err != nil {
		return
	}
	if slices.Contains(sl.Storages, storage.ValueString()) {
		return
	}
	diags.AddAttributeError(p, "Invalid Storage",
		fmt.Sprintf("storage %q is not one agentd allows workspaces on; it allows %s (the default is %s). "+
			"Use one of them, leave storage unset for the default, or add the storage to workspace_storages in agentd's config.",
			storage.ValueString(), strings.Join(sl.Storages, ", "), sl.Default))
}

// checkNode reports, on the node attribute, a node agentd does not use,
// naming the ones it does. An agent without GET /v1/nodes (older) or
// unreachable is left to the apply, where agentd answers node_not_found.
func checkNode(ctx context.Context, c *client.Client, diags *diag.Diagnostics, node types.String) {
	if c == nil || node.IsNull() || node.IsUnknown() {
		return
	}
	ns, err := c.Nodes(ctx)
	if err != nil {
		return
	}
	names := make([]string, 0, len(ns))
	for _, n := range ns {
		if n.Name == node.ValueString() {
			return
		}
		names = append(names, n.Name)
	}
	sort.Strings(names)
	known := "no nodes"
	if len(names) > 0 {
		known = strings.Join(names, ", ")
	}
	diags.AddAttributeError(path.Root("node"), "Invalid Node",
		fmt.Sprintf("node %q is not a node agentd uses; it uses %s (data source agentlab_nodes lists them). "+
			"Use one of them, or leave node unset to let agentd place the sandbox.", node.ValueString(), known))
}
