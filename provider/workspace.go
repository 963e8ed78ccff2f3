package provider

import (
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// workspaceAttrs are the attributes of a workspace that the
// agentlab_workspace resource and data source share. size_gb is not among
// them: the resource's is a Number (so that 1.5 is an attribute error), the
// data source's an Int64.
var workspaceAttrs = objectAttrs{
	"id": {desc: "Workspace id (`ws-…`).", dataDesc: "Workspace id."},
	"name": {desc: "Workspace name: 1-52 lowercase letters, digits or dashes, not all digits and not starting with an id prefix (`sbx-`, `ws-`, `ses-`, `job-`). Changing it replaces the workspace (and its data).",
		dataDesc: "Workspace name or id."},
	"storage": {desc: "Proxmox storage id of the volume: agentd's `workspace_storage` (the default) or one of its `workspace_storages`. Changing it replaces the workspace.",
		dataDesc: "Proxmox storage."},
	"holder_vmid":      {int64: true, desc: "VMID of the holder VM that owns the volume.", dataDesc: "Holder VMID."},
	"attached_sandbox": {desc: "Name of the sandbox the workspace is attached to; null when detached.", dataDesc: "Sandbox it is attached to; null when detached."},
}

// workspaceObject holds workspaceAttrs; the resource's and the data
// source's models embed it.
type workspaceObject struct {
	ID              types.String `tfsdk:"id"`
	Name            types.String `tfsdk:"name"`
	Storage         types.String `tfsdk:"storage"`
	HolderVMID      types.Int64  `tfsdk:"holder_vmid"`
	AttachedSandbox types.String `tfsdk:"attached_sandbox"`
}

// fromAPI fills the shared attributes from agentd's view.
func (m *workspaceObject) fromAPI(w *api.Workspace) {
	m.ID, m.Name, m.Storage = types.StringValue(w.ID), types.StringValue(w.Name), types.StringValue(w.Storage)
	m.HolderVMID, m.AttachedSandbox = types.Int64Value(int64(w.HolderVMID)), optString(w.AttachedSandbox)
}
