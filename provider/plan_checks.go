package provider

import (
	"context"
	"fmt"
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
// after its sandboxes were created must not make their plans fail.
//
// Storage ids are not checked against agentd's workspace_storages: the API
// does not expose them, so a storage that is well-formed but not allowed is
// still reported by the apply.

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
