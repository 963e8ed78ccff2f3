package provider

import (
	"context"
	"sort"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

// profileAttrs is the schema of one profile, shared by both profile data sources.
func profileAttrs(nameRequired bool) map[string]schema.Attribute {
	return map[string]schema.Attribute{
		"name":               schema.StringAttribute{Required: nameRequired, Computed: !nameRequired, MarkdownDescription: "Profile name."},
		"description":        schema.StringAttribute{Computed: true, MarkdownDescription: "What the profile is for."},
		"template_vmid":      schema.Int64Attribute{Computed: true, MarkdownDescription: "Proxmox template VM that sandboxes are cloned from."},
		"cores":              schema.Int64Attribute{Computed: true, MarkdownDescription: "vCPUs."},
		"memory_mb":          schema.Int64Attribute{Computed: true, MarkdownDescription: "Memory in MiB."},
		"root_size_gb":       schema.Int64Attribute{Computed: true, MarkdownDescription: "Root disk size in GiB (0: the template's)."},
		"network_mode":       schema.StringAttribute{Computed: true, MarkdownDescription: "`off`, `nat` or `allowlist`."},
		"ttl_default":        schema.StringAttribute{Computed: true, MarkdownDescription: "Default lease."},
		"keepalive":          schema.BoolAttribute{Computed: true, MarkdownDescription: "Default keepalive."},
		"workspace_required": schema.BoolAttribute{Computed: true, MarkdownDescription: "Whether sandboxes of this profile need a workspace."},
	}
}

var profileTypes = map[string]attr.Type{"name": types.StringType, "description": types.StringType, "template_vmid": types.Int64Type,
	"cores": types.Int64Type, "memory_mb": types.Int64Type, "root_size_gb": types.Int64Type, "network_mode": types.StringType,
	"ttl_default": types.StringType, "keepalive": types.BoolType, "workspace_required": types.BoolType}

type profileModel struct {
	Name              types.String `tfsdk:"name"`
	Description       types.String `tfsdk:"description"`
	TemplateVMID      types.Int64  `tfsdk:"template_vmid"`
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
		Cores: types.Int64Value(int64(p.Cores)), MemoryMB: types.Int64Value(int64(p.MemoryMB)), RootSizeGB: types.Int64Value(int64(p.RootSizeGB)),
		NetworkMode: types.StringValue(p.NetworkMode), TTLDefault: types.StringValue(p.TTLDefault), Keepalive: types.BoolValue(p.Keepalive),
		WorkspaceRequired: types.BoolValue(p.WorkspaceRequired)}
}

type baseDS struct{ c *client.Client }

func (d *baseDS) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.c = clientFrom(req.ProviderData, &resp.Diagnostics)
}

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

// NewProfilesDataSource is the agentlab_profiles factory.
func NewProfilesDataSource() datasource.DataSource { return &profilesDS{} }

type profilesDS struct{ baseDS }

type profilesModel struct {
	Names    types.List `tfsdk:"names"`
	Profiles types.List `tfsdk:"profiles"`
}

func (d *profilesDS) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_profiles"
}

func (d *profilesDS) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{MarkdownDescription: "Every sandbox profile loaded by agentd.", Attributes: map[string]schema.Attribute{
		"names":    schema.ListAttribute{Computed: true, ElementType: types.StringType, MarkdownDescription: "Profile names, sorted."},
		"profiles": schema.ListNestedAttribute{Computed: true, MarkdownDescription: "The profiles.", NestedObject: schema.NestedAttributeObject{Attributes: profileAttrs(false)}},
	}}
}

func (d *profilesDS) Read(ctx context.Context, _ datasource.ReadRequest, resp *datasource.ReadResponse) {
	ps, err := d.c.Profiles(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Unable to Read Profiles", err.Error())
		return
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
	var names []string
	var items []profileModel
	for _, p := range ps {
		names = append(names, p.Name)
		items = append(items, profileFromAPI(p))
	}
	var m profilesModel
	var d1, d2 diag.Diagnostics
	m.Names, d1 = types.ListValueFrom(ctx, types.StringType, names)
	m.Profiles, d2 = types.ListValueFrom(ctx, types.ObjectType{AttrTypes: profileTypes}, items)
	resp.Diagnostics.Append(d1...)
	resp.Diagnostics.Append(d2...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

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
