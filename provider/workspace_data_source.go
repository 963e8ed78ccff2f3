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
	workspaceObject
	SizeGB  types.Int64  `tfsdk:"size_gb"`
	Volume  types.String `tfsdk:"volume"`
	Session types.String `tfsdk:"session"`
}

func (d *workspaceDS) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_workspace"
}

func (d *workspaceDS) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	attrs := workspaceAttrs.dataSource("name", workspaceLookup)
	attrs["volume"] = schema.StringAttribute{Computed: true, MarkdownDescription: "Current Proxmox volume id (read live; Proxmox may rename volumes)."}
	attrs["session"] = schema.StringAttribute{Computed: true, MarkdownDescription: "Session that reserves it; null when none."}
	resp.Schema = schema.Schema{MarkdownDescription: "An existing workspace, by name, id or holder VMID (for example one created with the CLI).", Attributes: attrs}
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
	m.fromAPI(w)
	m.SizeGB, m.Volume, m.Session = types.Int64Value(int64(w.SizeGB)), types.StringValue(w.Volume), optString(w.Session)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
