package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

var (
	_ resource.ResourceWithImportState = (*teamTokenResource)(nil)
	_ resource.ResourceWithConfigure   = (*teamTokenResource)(nil)
)

// NewTeamTokenResource is the agentlab_team_token factory.
func NewTeamTokenResource() resource.Resource { return &teamTokenResource{} }

type teamTokenResource struct{ c *client.Client }

type teamTokenModel struct {
	ID        types.String `tfsdk:"id"`
	Team      types.String `tfsdk:"team"`
	Name      types.String `tfsdk:"name"`
	Role      types.String `tfsdk:"role"`
	TTL       types.String `tfsdk:"ttl"`
	ExpiresAt types.String `tfsdk:"expires_at"`
	Value     types.String `tfsdk:"value"`
}

func (r *teamTokenResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_team_token"
}

// tokenStateWarning is the trade-off of the resource, in its description and
// its docs page.
const tokenStateWarning = "The token's value is written to the Terraform state, because this resource is how it is asked for: " +
	"protect the state (an encrypted backend with restricted access) or create tokens with the CLI instead (`agentd token create`), " +
	"which prints the value once and keeps it out of any state."

func (r *teamTokenResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	keep := stringplanmodifier.UseStateForUnknown()
	replace := stringplanmodifier.RequiresReplace()
	resp.Schema = schema.Schema{
		MarkdownDescription: "An API token of a team, for agentd's TLS listener: the `token` of a provider (or `AGENTLAB_TOKEN` of the CLI) " +
			"that acts only in that team. Every change replaces the token; destroying it revokes it. A team admin token may issue tokens " +
			"of its own team only; a global admin token, of any team. " + tokenStateWarning,
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{Computed: true, MarkdownDescription: "Token id (`tok-…`).",
				PlanModifiers: []planmodifier.String{keep}},
			"team": schema.StringAttribute{Optional: true, Computed: true, Validators: []validator.String{teamNameRule()},
				MarkdownDescription: "Team of the token. Omitted, the team the provider acts in: a team admin token's own, or the provider's `team` " +
					"for a global token; a global token without a `team` issues a global token (every team; null here). Changing it replaces the token.",
				PlanModifiers: []planmodifier.String{keep, stringplanmodifier.RequiresReplaceIfConfigured()}},
			"name": schema.StringAttribute{Required: true, PlanModifiers: []planmodifier.String{replace},
				MarkdownDescription: "Token name, unique among the team's live tokens: 1-63 lowercase letters, digits, `.`, `_` or `-`. Changing it replaces the token."},
			"role": schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString("member"),
				PlanModifiers: []planmodifier.String{replace}, Validators: []validator.String{stringvalidator.OneOf("read", "member", "admin")},
				MarkdownDescription: "`read` (see the team's objects), `member` (default: create and change them) or `admin` (also manage the team's tokens). Changing it replaces the token."},
			"ttl": schema.StringAttribute{Optional: true, Validators: []validator.String{tokenTTLRule()},
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplaceIf(ttlChanged, "Changing the ttl issues a new token.", "Changing the ttl issues a new token.")},
				MarkdownDescription: "Lifetime from creation as a Go duration (`720h`); omitted, the token does not expire. Changing it replaces the token " +
					"(except after an import, which cannot know it: the first ttl set then is only recorded)."},
			"expires_at": schema.StringAttribute{Computed: true, MarkdownDescription: "When the token expires (RFC 3339); null when it does not.",
				PlanModifiers: []planmodifier.String{keep}},
			"value": schema.StringAttribute{Computed: true, Sensitive: true, PlanModifiers: []planmodifier.String{keep},
				MarkdownDescription: "The token (`agt_…`), known only to the create that issued it; agentd keeps only its hash. Null after an import. " +
					"It is kept in the state: see above."},
		},
	}
}

// ttlChanged replaces the token when its ttl changes, but not when an import
// left it null: agentd reports when a token expires, not the ttl it was
// issued with.
func ttlChanged(_ context.Context, req planmodifier.StringRequest, resp *stringplanmodifier.RequiresReplaceIfFuncResponse) {
	resp.RequiresReplace = !(req.StateValue.IsNull() && !req.PlanValue.IsNull())
}

func (r *teamTokenResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.c = clientFrom(req.ProviderData, &resp.Diagnostics)
}

func (m *teamTokenModel) fromAPI(t *api.Token) {
	m.ID, m.Team, m.Name, m.Role = types.StringValue(t.ID), optString(t.Team), types.StringValue(t.Name), types.StringValue(t.Role)
	m.ExpiresAt = timeString(t.ExpiresAt)
}

func (r *teamTokenResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan teamTokenModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	t, err := r.c.CreateToken(ctx, api.CreateTokenRequest{Name: plan.Name.ValueString(), Team: plan.Team.ValueString(),
		Role: plan.Role.ValueString(), TTL: plan.TTL.ValueString()})
	if err != nil {
		resp.Diagnostics.AddError("Unable to Create Team Token", err.Error())
		return
	}
	plan.fromAPI(&t.Token)
	plan.Value = types.StringValue(t.Value)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// find returns the token with the given id, revoked ones included; nil when
// agentd has none (in the caller's scope).
func (r *teamTokenResource) find(ctx context.Context, id string) (*api.Token, error) {
	ts, err := r.c.Tokens(ctx, true)
	if err != nil {
		return nil, err
	}
	for i := range ts {
		if ts[i].ID == id {
			return &ts[i], nil
		}
	}
	return nil, nil
}

func (r *teamTokenResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state teamTokenModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	t, err := r.find(ctx, state.ID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Unable to Read Team Token", err.Error())
		return
	}
	if t == nil || t.RevokedAt != nil {
		// Revoked out of band: the next apply issues a new one.
		resp.State.RemoveResource(ctx)
		return
	}
	state.fromAPI(t) // the value stays the state's: agentd never returns it again
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// Update only records a ttl an import could not know; every other change
// replaces the token.
func (r *teamTokenResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan teamTokenModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *teamTokenResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state teamTokenModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if _, err := r.c.RevokeToken(ctx, state.ID.ValueString()); err != nil && !client.IsNotFound(err) {
		resp.Diagnostics.AddError("Unable to Revoke Team Token", err.Error())
	}
}

// ImportState accepts the token's id. Its value is not imported (agentd
// keeps only a hash): it is null in the state.
func (r *teamTokenResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	t, err := r.find(ctx, req.ID)
	switch {
	case err != nil:
		resp.Diagnostics.AddError("Unable to Import Team Token", fmt.Sprintf("token %q: %v", req.ID, err))
		return
	case t == nil:
		resp.Diagnostics.AddError("Unable to Import Team Token", fmt.Sprintf("token %q not found among the tokens the provider's token sees (agentd token list --all)", req.ID))
		return
	case t.RevokedAt != nil:
		resp.Diagnostics.AddError("Unable to Import Team Token", fmt.Sprintf("token %s (%s) was revoked; issue a new one", t.ID, t.Name))
		return
	}
	m := teamTokenModel{TTL: types.StringNull(), Value: types.StringNull()}
	m.fromAPI(t)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
