package provider

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework-timetypes/timetypes"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

var (
	_ resource.ResourceWithImportState = (*teamResource)(nil)
	_ resource.ResourceWithConfigure   = (*teamResource)(nil)
)

// NewTeamResource is the agentlab_team factory.
func NewTeamResource() resource.Resource { return &teamResource{} }

type teamResource struct{ c *client.Client }

type teamModel struct {
	ID types.String `tfsdk:"id"`
	teamObject
	MaxTTL timetypes.GoDuration `tfsdk:"max_ttl"`
}

func (r *teamResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_team"
}

func (r *teamResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	attrs := teamAttrs.resource()
	attrs["id"] = schema.StringAttribute{Computed: true, MarkdownDescription: "The team name.",
		PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}}
	setString(attrs, "name", func(a *schema.StringAttribute) {
		a.Computed, a.Required = false, true
		a.PlanModifiers = []planmodifier.String{stringplanmodifier.RequiresReplace()}
		a.Validators = []validator.String{teamNameRule()}
	})
	setString(attrs, "description", func(a *schema.StringAttribute) {
		// Optional only: agentd has no description of its own to report.
		a.Computed, a.Optional = false, true
		a.Validators = []validator.String{stringvalidator.LengthAtLeast(1)}
	})
	for _, name := range []string{"max_sandboxes", "max_cores", "max_memory_mb", "max_workspace_gb", "max_artifact_bytes"} {
		setInt64(attrs, name, func(a *schema.Int64Attribute) {
			a.Optional, a.Default = true, int64default.StaticInt64(0)
			a.Validators = []validator.Int64{int64validator.AtLeast(0)}
		})
	}
	// GoDuration: agentd's seconds never diff against the configuration's
	// spelling of the same duration.
	attrs["max_ttl"] = schema.StringAttribute{Optional: true, Computed: true, CustomType: timetypes.GoDurationType{},
		Default: stringdefault.StaticString("0s"), MarkdownDescription: teamAttrs["max_ttl"].resourceDesc(),
		Validators: []validator.String{maxTTLRule()}}
	resp.Schema = schema.Schema{
		MarkdownDescription: "A team: a namespace of sandboxes, workspaces, sessions and tokens, with a quota. Managing teams needs a global " +
			"admin token (the agent's own API token or the Unix socket); agentd refuses a team token (403). Every quota key is applied as a " +
			"whole (removing one from the configuration sets it back to 0, no limit). A team that still owns live sandboxes, workspaces, " +
			"sessions or tokens cannot be destroyed: agentd answers 409 `team_in_use` with what is left.",
		Attributes: attrs,
	}
}

func (r *teamResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.c = clientFrom(req.ProviderData, &resp.Diagnostics)
}

func (m *teamModel) fromAPI(t *api.Team) {
	m.ID = types.StringValue(t.Name)
	m.MaxTTL = timetypes.NewGoDurationValueFromStringMust(m.teamObject.fromAPI(t))
}

func (r *teamResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan teamModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	t, err := r.c.CreateTeam(ctx, api.CreateTeamRequest{Name: plan.Name.ValueString(), Description: plan.Description.ValueString(), Quota: plan.quota(plan.MaxTTL)})
	if err != nil {
		resp.Diagnostics.AddError("Unable to Create Team", teamAdminHint(err))
		return
	}
	plan.fromAPI(t)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *teamResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state teamModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	t, err := r.c.Team(ctx, state.Name.ValueString())
	if client.IsNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Unable to Read Team", err.Error())
		return
	}
	state.fromAPI(t)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *teamResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan teamModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	t, err := r.c.UpdateTeam(ctx, plan.Name.ValueString(), api.UpdateTeamRequest{Description: plan.Description.ValueString(), Quota: plan.quota(plan.MaxTTL)})
	if err != nil {
		resp.Diagnostics.AddError("Unable to Update Team", teamAdminHint(err))
		return
	}
	plan.fromAPI(t)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *teamResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state teamModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if err := r.c.DeleteTeam(ctx, state.Name.ValueString()); err != nil && !client.IsNotFound(err) {
		resp.Diagnostics.AddError("Unable to Delete Team", teamAdminHint(err))
	}
}

// ImportState accepts the team's name.
func (r *teamResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	t, err := r.c.Team(ctx, req.ID)
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("name"), "Unable to Import Team", fmt.Sprintf("team %q: %v", req.ID, err))
		return
	}
	var m teamModel
	m.fromAPI(t)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// teamAdminHint is agentd's error, with what to do about a refusal of a
// team token: only global admins manage teams.
func teamAdminHint(err error) string {
	var e *api.Error
	if errors.As(err, &e) && e.Code == api.CodeForbidden {
		return err.Error() + ". Teams are managed with a global admin token: the agent's own API token (its token_file) or the Unix socket, " +
			"in a provider configuration of its own (an alias) if the rest of the configuration uses a team token."
	}
	return err.Error()
}
