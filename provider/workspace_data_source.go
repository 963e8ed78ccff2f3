package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// NewWorkspaceDataSource is the agentlab_workspace data source factory.
func NewWorkspaceDataSource() datasource.DataSource { return &workspaceDS{} }

type workspaceDS struct{ baseDS }

type workspaceDSModel struct {
	Name            types.String `tfsdk:"name"`
	ID              types.String `tfsdk:"id"`
	SizeGB          types.Int64  `tfsdk:"size_gb"`
	Storage         types.String `tfsdk:"storage"`
	HolderVMID      types.Int64  `tfsdk:"holder_vmid"`
	Volume          types.String `tfsdk:"volume"`
	AttachedSandbox types.String `tfsdk:"attached_sandbox"`
	Session         types.String `tfsdk:"session"`
}

func (d *workspaceDS) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_workspace"
}

func (d *workspaceDS) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	c := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, MarkdownDescription: desc}
	}
	resp.Schema = schema.Schema{MarkdownDescription: "An existing workspace by name.", Attributes: map[string]schema.Attribute{
		"name":             schema.StringAttribute{Required: true, MarkdownDescription: "Workspace name or id."},
		"id":               c("Workspace id."),
		"size_gb":          schema.Int64Attribute{Computed: true, MarkdownDescription: "Size in GiB."},
		"storage":          c("Proxmox storage."),
		"holder_vmid":      schema.Int64Attribute{Computed: true, MarkdownDescription: "Holder VMID."},
		"volume":           c("Current Proxmox volume id (read live; Proxmox may rename volumes)."),
		"attached_sandbox": c("Sandbox it is attached to; null when detached."),
		"session":          c("Session that reserves it; null when none."),
	}}
}

func (d *workspaceDS) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m workspaceDSModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	w, err := d.c.Workspace(ctx, m.Name.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Unable to Read Workspace", err.Error())
		return
	}
	m = workspaceDSModel{Name: types.StringValue(w.Name), ID: types.StringValue(w.ID), SizeGB: types.Int64Value(int64(w.SizeGB)),
		Storage: types.StringValue(w.Storage), HolderVMID: types.Int64Value(int64(w.HolderVMID)), Volume: types.StringValue(w.Volume),
		AttachedSandbox: optString(w.AttachedSandbox), Session: optString(w.Session)}
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
