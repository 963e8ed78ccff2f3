package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
)

// NewSandboxDataSource is the agentlab_sandbox data source factory.
func NewSandboxDataSource() datasource.DataSource { return &sandboxDS{} }

type sandboxDS struct{ baseDS }

type sandboxDSModel struct{ sandboxObject }

func (d *sandboxDS) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_sandbox"
}

func (d *sandboxDS) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{MarkdownDescription: "An existing sandbox, by name, VMID or id (for example one created with the CLI).", Attributes: sandboxAttrs.dataSource("name", sandboxLookup)}
}

func (d *sandboxDS) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m sandboxDSModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	sb, err := d.c.Sandbox(ctx, m.Name.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Unable to Read Sandbox", err.Error())
		return
	}
	m.fromAPI(sb)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
