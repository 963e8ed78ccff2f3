package provider

import (
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// workspaceAttrs are the attributes of a workspace that the
// agentlab_workspace resource and data source share. size_gb is defined here
// but held by each model (a Number in the resource, an Int64 in the data
// source; see kindGiB).
var workspaceAttrs = objectAttrs{
	"id": {desc: "Workspace id (`ws-…`)."},
	"name": {desc: "Workspace name: 1-52 lowercase letters, digits or dashes, not all digits and not starting with an id prefix (`sbx-`, `ws-`, `ses-`, `job-`).",
		set: "Changing it replaces the workspace (and its data)."},
	"storage": {desc: "Proxmox storage id of the volume: agentd's `workspace_storage` (the default) or one of its `workspace_storages`.",
		set: "Checked against the agent's list at plan time. Changing it alone replaces the workspace; changed together with `node` it moves in place onto that storage there."},
	"team":        {desc: "Team that owns the workspace: a team token's team, or the provider's `team` (`default` without one) for a global token. Fixed at create."},
	"holder_vmid": {kind: kindInt64, desc: "VMID of the holder VM that owns the volume."},
	"node": {desc: "Proxmox node that holds the workspace's volume (its holder VM). Null when agentd does not report one.",
		set: "Unset: agentd's own node at create, then wherever the workspace is. Changing it moves the workspace in place: agentd migrates the detached holder offline to that node (its volume copied there, onto `storage` when that changes too); the workspace must be detached, the node online and not drained."},
	"attached_sandbox": {desc: "Name of the sandbox the workspace is attached to; null when detached."},
	"size_gb":          {kind: kindGiB, desc: "Size in whole GiB (1-65536).", set: "It can grow in place; shrinking is refused at plan time."},
}

// workspaceLookup is what else the data source's name may be.
const workspaceLookup = "The data source also finds a workspace by its id or its holder's VMID."

// workspaceObject holds workspaceAttrs; the resource's and the data
// source's models embed it.
type workspaceObject struct {
	ID              types.String `tfsdk:"id"`
	Name            types.String `tfsdk:"name"`
	Storage         types.String `tfsdk:"storage"`
	Team            types.String `tfsdk:"team"`
	HolderVMID      types.Int64  `tfsdk:"holder_vmid"`
	Node            types.String `tfsdk:"node"`
	AttachedSandbox types.String `tfsdk:"attached_sandbox"`
}

// fromAPI fills the shared attributes from agentd's view.
func (m *workspaceObject) fromAPI(w *api.Workspace) {
	m.ID, m.Name, m.Storage = types.StringValue(w.ID), types.StringValue(w.Name), types.StringValue(w.Storage)
	m.HolderVMID, m.AttachedSandbox = types.Int64Value(int64(w.HolderVMID)), optString(w.AttachedSandbox)
	m.Team, m.Node = optString(w.Team), optString(w.Node)
}
