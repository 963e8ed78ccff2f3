package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// NewProfileDataSource is the agentlab_profile factory.
func NewProfileDataSource() datasource.DataSource { return &profileDS{} }

type profileDS struct{ baseDS }

func (d *profileDS) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_profile"
}

func (d *profileDS) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{MarkdownDescription: "One sandbox profile loaded by agentd.", Attributes: profileAttrs(true)}
}

func (d *profileDS) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m profileModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	p, err := d.c.Profile(ctx, m.Name.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Unable to Read Profile", err.Error())
		return
	}
	m = profileFromAPI(*p)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// profileAttrs is the schema of one profile, shared by both profile data sources.
func profileAttrs(nameRequired bool) map[string]schema.Attribute {
	return map[string]schema.Attribute{
		"name":               schema.StringAttribute{Required: nameRequired, Computed: !nameRequired, MarkdownDescription: "Profile name."},
		"description":        schema.StringAttribute{Computed: true, MarkdownDescription: "What the profile is for."},
		"template_vmid":      schema.Int64Attribute{Computed: true, MarkdownDescription: "Proxmox template VM that sandboxes are cloned from (0 when the profile names its template by `template`)."},
		"template":           schema.StringAttribute{Computed: true, MarkdownDescription: "Name of the Proxmox template, resolved on each node to the template of that name there (empty when the profile gives `template_vmid`)."},
		"cores":              schema.Int64Attribute{Computed: true, MarkdownDescription: "vCPUs."},
		"memory_mb":          schema.Int64Attribute{Computed: true, MarkdownDescription: "Memory in MiB."},
		"root_size_gb":       schema.Int64Attribute{Computed: true, MarkdownDescription: "Root disk size in GiB (0: the template's)."},
		"network_mode":       schema.StringAttribute{Computed: true, MarkdownDescription: "`off`, `nat` or `allowlist`."},
		"ttl_default":        schema.StringAttribute{Computed: true, MarkdownDescription: "Default lease."},
		"keepalive":          schema.BoolAttribute{Computed: true, MarkdownDescription: "Default keepalive."},
		"workspace_required": schema.BoolAttribute{Computed: true, MarkdownDescription: "Whether sandboxes of this profile need a workspace."},
	}
}

var profileTypes = map[string]attr.Type{"name": types.StringType, "description": types.StringType, "template_vmid": types.Int64Type, "template": types.StringType,
	"cores": types.Int64Type, "memory_mb": types.Int64Type, "root_size_gb": types.Int64Type, "network_mode": types.StringType,
	"ttl_default": types.StringType, "keepalive": types.BoolType, "workspace_required": types.BoolType}

type profileModel struct {
	Name              types.String `tfsdk:"name"`
	Description       types.String `tfsdk:"description"`
	TemplateVMID      types.Int64  `tfsdk:"template_vmid"`
	Template          types.String `tfsdk:"template"`
	Cores             types.Int64  `tfsdk:"cores"`
	MemoryMB          types.Int64  `tfsdk:"memory_mb"`
	RootSizeGB        types.Int64  `tfsdk:"root_size_gb"`
	NetworkMode       types.String `tfsdk:"network_mode"`
	TTLDefault        types.String `tfsdk:"ttl_default"`
	Keepalive         types.Bool   `tfsdk:"keepalive"`
	WorkspaceRequired types.Bool   `tfsdk:"workspace_required"`
}

func profileFromAPI(p api.Profile) profileModel {
	return profileModel{Name: types.StringValue(p.Name), Description: types.StringValue(p.Description), TemplateVMID: types.Int64Value(int64(p.TemplateVMID)),
		Template: types.StringValue(p.Template),
		Cores:    types.Int64Value(int64(p.Cores)), MemoryMB: types.Int64Value(int64(p.MemoryMB)), RootSizeGB: types.Int64Value(int64(p.RootSizeGB)),
		NetworkMode: types.StringValue(p.NetworkMode), TTLDefault: types.StringValue(p.TTLDefault), Keepalive: types.BoolValue(p.Keepalive),
		WorkspaceRequired: types.BoolValue(p.WorkspaceRequired)}
}
