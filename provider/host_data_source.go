package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// NewHostDataSource is the agentlab_host factory.
func NewHostDataSource() datasource.DataSource { return &hostDS{} }

type hostDS struct{ baseDS }

type hostModel struct {
	Version          types.String `tfsdk:"version"`
	Node             types.String `tfsdk:"node"`
	ProxmoxReachable types.Bool   `tfsdk:"proxmox_reachable"`
	ProxmoxVersion   types.String `tfsdk:"proxmox_version"`
	Profiles         types.List   `tfsdk:"profiles"`
	Sandboxes        types.Map    `tfsdk:"sandboxes"`
}

func (d *hostDS) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_host"
}

func (d *hostDS) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{MarkdownDescription: "The agent's status: version, Proxmox reachability, profiles and sandbox counts.", Attributes: map[string]schema.Attribute{
		"version":           schema.StringAttribute{Computed: true, MarkdownDescription: "agentd version."},
		"node":              schema.StringAttribute{Computed: true, MarkdownDescription: "Proxmox node agentd manages."},
		"proxmox_reachable": schema.BoolAttribute{Computed: true, MarkdownDescription: "Whether Proxmox answered."},
		"proxmox_version":   schema.StringAttribute{Computed: true, MarkdownDescription: "Proxmox VE version."},
		"profiles":          schema.ListAttribute{Computed: true, ElementType: types.StringType, MarkdownDescription: "Loaded profile names."},
		"sandboxes":         schema.MapAttribute{Computed: true, ElementType: types.Int64Type, MarkdownDescription: "Number of sandboxes per state."},
	}}
}

func (d *hostDS) Read(ctx context.Context, _ datasource.ReadRequest, resp *datasource.ReadResponse) {
	st, err := d.c.Status(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Unable to Read Host", err.Error())
		return
	}
	counts := map[string]int64{}
	for k, v := range st.Sandboxes {
		counts[string(k)] = int64(v)
	}
	m := hostModel{Version: types.StringValue(st.Version), Node: types.StringValue(st.Node), ProxmoxReachable: types.BoolValue(st.Proxmox.Reachable),
		ProxmoxVersion: types.StringValue(st.Proxmox.Version)}
	var d1, d2 diag.Diagnostics
	m.Profiles, d1 = types.ListValueFrom(ctx, types.StringType, st.Profiles)
	m.Sandboxes, d2 = types.MapValueFrom(ctx, types.Int64Type, counts)
	resp.Diagnostics.Append(d1...)
	resp.Diagnostics.Append(d2...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
