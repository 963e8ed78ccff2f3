package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// NewTeamDataSource is the agentlab_team data source factory.
func NewTeamDataSource() datasource.DataSource { return &teamDS{} }

type teamDS struct{ baseDS }

type teamDSModel struct {
	teamObject
	MaxTTL types.String `tfsdk:"max_ttl"`
	Usage  *teamUsage   `tfsdk:"usage"`
}

// teamUsage is what a team holds now, in the quota's units.
type teamUsage struct {
	Sandboxes     types.Int64 `tfsdk:"sandboxes"`
	Cores         types.Int64 `tfsdk:"cores"`
	MemoryMB      types.Int64 `tfsdk:"memory_mb"`
	WorkspaceGB   types.Int64 `tfsdk:"workspace_gb"`
	ArtifactBytes types.Int64 `tfsdk:"artifact_bytes"`
}

func (d *teamDS) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_team"
}

func (d *teamDS) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	attrs := teamAttrs.dataSource("name", "Omitted, the team the provider acts in: a team token's own, or the provider's `team` "+
		"for a global token (a global token without one must name the team).")
	name := attrs["name"].(schema.StringAttribute)
	name.Required, name.Optional, name.Computed, name.Validators = false, true, true, []validator.String{teamNameRule()}
	attrs["name"] = name
	usage := func(desc string) schema.Attribute {
		return schema.Int64Attribute{Computed: true, MarkdownDescription: desc}
	}
	attrs["usage"] = schema.SingleNestedAttribute{Computed: true,
		MarkdownDescription: "What the team holds now, in the quota's units (read at every refresh).",
		Attributes: map[string]schema.Attribute{
			"sandboxes":      usage("Live sandboxes (warm-pool members are no team's)."),
			"cores":          usage("Their vCPUs, summed."),
			"memory_mb":      usage("Their memory in MiB, summed."),
			"workspace_gb":   usage("Live workspaces' sizes in GiB, summed."),
			"artifact_bytes": usage("Stored artifacts of the team's sandboxes, in bytes."),
		}}
	resp.Schema = schema.Schema{MarkdownDescription: "A team: its quota and what it uses of it. A team token reads only its own team; " +
		"another team's name is not found.", Attributes: attrs}
}

func (d *teamDS) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m teamDSModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	name := m.Name.ValueString()
	if name == "" {
		st, err := d.c.Status(ctx)
		if err != nil {
			resp.Diagnostics.AddError("Unable to Read Team", fmt.Sprintf("finding the provider's team: %v", err))
			return
		}
		if name = st.Caller.Team; name == "" {
			name = st.Caller.ActingIn
		}
		if name == "" {
			resp.Diagnostics.AddAttributeError(path.Root("name"), "Missing Team Name",
				fmt.Sprintf("the provider's token is global (%s) and acts in no team: set name, or the provider's team (AGENTLAB_TEAM).", st.Caller.Actor))
			return
		}
	}
	t, err := d.c.Team(ctx, name)
	if err != nil {
		resp.Diagnostics.AddError("Unable to Read Team", err.Error())
		return
	}
	m.MaxTTL = types.StringValue(m.fromAPI(t))
	if u := t.Usage; u != nil {
		m.Usage = &teamUsage{Sandboxes: types.Int64Value(u.Sandboxes), Cores: types.Int64Value(u.Cores), MemoryMB: types.Int64Value(u.MemoryMB),
			WorkspaceGB: types.Int64Value(u.WorkspaceGB), ArtifactBytes: types.Int64Value(u.ArtifactBytes)}
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
