package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// NewSandboxDataSource is the agentlab_sandbox data source factory.
func NewSandboxDataSource() datasource.DataSource { return &sandboxDS{} }

type sandboxDS struct{ baseDS }

type sandboxDSModel struct {
	Name           types.String `tfsdk:"name"`
	ID             types.String `tfsdk:"id"`
	Profile        types.String `tfsdk:"profile"`
	State          types.String `tfsdk:"state"`
	VMID           types.Int64  `tfsdk:"vmid"`
	Node           types.String `tfsdk:"node"`
	IP             types.String `tfsdk:"ip"`
	Workspace      types.String `tfsdk:"workspace"`
	LeaseExpiresAt types.String `tfsdk:"lease_expires_at"`
}

func (d *sandboxDS) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_sandbox"
}

func (d *sandboxDS) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	c := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, MarkdownDescription: desc}
	}
	resp.Schema = schema.Schema{MarkdownDescription: "An existing sandbox, by name, VMID or id (for example one created with the CLI).", Attributes: map[string]schema.Attribute{
		"name":             schema.StringAttribute{Required: true, MarkdownDescription: "Sandbox name, VMID or id."},
		"id":               c("Sandbox id."),
		"profile":          c("Profile."),
		"state":            c("Lifecycle state."),
		"vmid":             schema.Int64Attribute{Computed: true, MarkdownDescription: "Proxmox VMID."},
		"node":             c("Proxmox node."),
		"ip":               c("IPv4 address."),
		"workspace":        c("Attached workspace; null when none."),
		"lease_expires_at": c("Lease end (RFC 3339)."),
	}}
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
	m = sandboxDSModel{Name: types.StringValue(sb.Name), ID: types.StringValue(sb.ID), Profile: types.StringValue(sb.Profile),
		State: types.StringValue(string(sb.State)), VMID: types.Int64Value(int64(sb.VMID)), Node: types.StringValue(sb.Node),
		IP: types.StringValue(sb.IP), Workspace: optString(sb.Workspace), LeaseExpiresAt: timeString(sb.LeaseExpiresAt)}
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
