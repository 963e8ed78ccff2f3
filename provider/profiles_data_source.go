package provider

import (
	"context"
	"sort"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

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
