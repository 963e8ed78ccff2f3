package provider

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

var (
	_ resource.ResourceWithImportState    = (*poolResource)(nil)
	_ resource.ResourceWithValidateConfig = (*poolResource)(nil)
	_ resource.ResourceWithConfigure      = (*poolResource)(nil)
)

// NewPoolResource is the agentlab_pool factory.
func NewPoolResource() resource.Resource { return &poolResource{} }

type poolResource struct{ c *client.Client }

type poolModel struct {
	ID          types.String `tfsdk:"id"`
	Profile     types.String `tfsdk:"profile"`
	MinReady    types.Int64  `tfsdk:"min_ready"`
	Max         types.Int64  `tfsdk:"max"`
	Ready       types.Int64  `tfsdk:"ready"`
	Building    types.Int64  `tfsdk:"building"`
	Claimed     types.Int64  `tfsdk:"claimed"`
	ProfileHash types.String `tfsdk:"profile_hash"`
}

func (r *poolResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_pool"
}

func (r *poolResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "The warm pool of one profile: agentd keeps `min_ready` booted, unassigned VMs of the profile " +
			"(state `POOLED`, no secrets, no lease, no bootstrap token) and hands one to each create of that profile, which then " +
			"reports `RUNNING` without a clone and a boot. The resource is agentd's runtime override of the profile's `pool` key " +
			"(kept in its state database); destroying it drops the override, so the profile's own `pool` key (or no pool) applies again " +
			"and surplus members are destroyed.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{Computed: true, MarkdownDescription: "The profile name.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}},
			"profile": schema.StringAttribute{Required: true, MarkdownDescription: "Profile whose pool this is.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()}},
			"min_ready": schema.Int64Attribute{Required: true, MarkdownDescription: "Members kept booted and ready (0 or more, at most `max`).",
				Validators: []validator.Int64{int64validator.AtLeast(0)}},
			"max": schema.Int64Attribute{Required: true, MarkdownDescription: fmt.Sprintf("Members at most, ready or building (0 to %d; 0 empties the pool).", api.MaxPoolSize),
				Validators: []validator.Int64{int64validator.Between(0, api.MaxPoolSize)}},
			"ready":        schema.Int64Attribute{Computed: true, MarkdownDescription: "Members ready to be claimed when last read."},
			"building":     schema.Int64Attribute{Computed: true, MarkdownDescription: "Members being cloned or booted when last read."},
			"claimed":      schema.Int64Attribute{Computed: true, MarkdownDescription: "Creates this pool has served."},
			"profile_hash": schema.StringAttribute{Computed: true, MarkdownDescription: "Version of the profile members are built from; members of another version are replaced."},
		},
	}
}

func (r *poolResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.c = clientFrom(req.ProviderData, &resp.Diagnostics)
}

// ValidateConfig refuses min_ready above max at plan time, with agentd's rule.
func (r *poolResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var cfg poolModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() || cfg.MinReady.IsUnknown() || cfg.Max.IsUnknown() || cfg.MinReady.IsNull() || cfg.Max.IsNull() {
		return
	}
	if e := api.ValidatePool("", int(cfg.MinReady.ValueInt64()), int(cfg.Max.ValueInt64())); e != nil {
		resp.Diagnostics.AddAttributeError(path.Root(e.Field), "Invalid Pool Size", e.Message)
	}
}

func (m *poolModel) fromAPI(p *api.Pool) {
	m.ID, m.Profile = types.StringValue(p.Profile), types.StringValue(p.Profile)
	m.MinReady, m.Max = types.Int64Value(int64(p.MinReady)), types.Int64Value(int64(p.Max))
	m.Ready, m.Building, m.Claimed = types.Int64Value(int64(p.Ready)), types.Int64Value(int64(p.Building)), types.Int64Value(p.Claimed)
	m.ProfileHash = types.StringValue(p.ProfileHash)
}

func (r *poolResource) set(ctx context.Context, m *poolModel, diags interface{ AddError(string, string) }, what string) bool {
	minReady, max := int(m.MinReady.ValueInt64()), int(m.Max.ValueInt64())
	p, err := r.c.SetPool(ctx, m.Profile.ValueString(), api.SetPoolRequest{MinReady: &minReady, Max: &max})
	if err != nil {
		diags.AddError("Unable to "+what+" Pool", err.Error())
		return false
	}
	m.fromAPI(p)
	return true
}

func (r *poolResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan poolModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() || !r.set(ctx, &plan, &resp.Diagnostics, "Create") {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *poolResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state poolModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	p, err := r.c.Pool(ctx, state.Profile.ValueString())
	if client.IsNotFound(err) {
		resp.State.RemoveResource(ctx) // the profile is gone, and its pool with it
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Unable to Read Pool", err.Error())
		return
	}
	state.fromAPI(p)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *poolResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan poolModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() || !r.set(ctx, &plan, &resp.Diagnostics, "Update") {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *poolResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state poolModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	// Until the surplus members are gone: a destroy that returns while VMs
	// are still being removed would leave a plan's view of the host wrong.
	for {
		p, err := r.c.SetPool(ctx, state.Profile.ValueString(), api.SetPoolRequest{Clear: true})
		if client.IsNotFound(err) {
			return
		}
		if err != nil {
			resp.Diagnostics.AddError("Unable to Delete Pool", err.Error())
			return
		}
		if p.Ready+p.Building <= p.Max {
			return
		}
		select {
		case <-ctx.Done():
			resp.Diagnostics.AddError("Unable to Delete Pool", fmt.Sprintf("the pool of %s still has %d ready and %d building members above its max %d: %v",
				p.Profile, p.Ready, p.Building, p.Max, ctx.Err()))
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ImportState accepts the profile name: the pool's current sizes (the
// override, or the profile's pool key) become the resource's.
func (r *poolResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	p, err := r.c.Pool(ctx, req.ID)
	if err != nil {
		resp.Diagnostics.AddError("Unable to Import Pool", fmt.Sprintf("profile %q: %v", req.ID, err))
		return
	}
	var m poolModel
	m.fromAPI(p)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
