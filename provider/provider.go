// Package provider is the Terraform provider for AgentLab. Every resource call
// goes to agentd's API; the provider never talks to Proxmox.
package provider

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

// AgentlabProvider is the provider implementation.
type AgentlabProvider struct {
	version string
}

// Model is the provider configuration.
type Model struct {
	Endpoint types.String `tfsdk:"endpoint"`
	Token    types.String `tfsdk:"token"`
	CACert   types.String `tfsdk:"ca_cert"`
	Insecure types.Bool   `tfsdk:"insecure"`
	Team     types.String `tfsdk:"team"`
}

// New returns the provider factory.
func New(version string) func() provider.Provider {
	return func() provider.Provider { return &AgentlabProvider{version: version} }
}

func (p *AgentlabProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "agentlab"
	resp.Version = p.version
}

func (p *AgentlabProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "Manage AgentLab sandboxes, sessions and workspaces through the agentd host agent. " +
			"With `agentd dev` running and its variables exported, `provider \"agentlab\" {}` needs no settings.",
		Attributes: map[string]schema.Attribute{
			"endpoint": schema.StringAttribute{
				MarkdownDescription: "agentd API endpoint: `unix:///run/agentd/agentd.sock` (on the host) or `https://host:port` (agentd's TLS listener). Defaults to `AGENTLAB_ENDPOINT`, then the local socket.",
				Optional:            true,
			},
			"token": schema.StringAttribute{
				MarkdownDescription: "Bearer token of agentd's TLS listener (its `token_file`). Defaults to `AGENTLAB_TOKEN`.",
				Optional:            true,
				Sensitive:           true,
			},
			"ca_cert": schema.StringAttribute{
				MarkdownDescription: "PEM certificate (or a path to one) to trust for an `https` endpoint. Defaults to `AGENTLAB_CA_CERT`.",
				Optional:            true,
			},
			"insecure": schema.BoolAttribute{
				MarkdownDescription: "Skip TLS certificate verification (development only). Defaults to `AGENTLAB_INSECURE`.",
				Optional:            true,
			},
			"team": schema.StringAttribute{
				MarkdownDescription: "Team a global token (the agent's own API token, a token created without a team, or the Unix socket) acts in: " +
					"the team of what it creates and the only team it sees. Defaults to `AGENTLAB_TEAM`; unset, a global token sees every team " +
					"and creates in `default`. A team token needs no `team`: it always acts in its own, and naming another team is refused (403).",
				Optional: true,
			},
		},
	}
}

func (p *AgentlabProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var m Model
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if m.Endpoint.IsUnknown() || m.Token.IsUnknown() || m.CACert.IsUnknown() || m.Team.IsUnknown() {
		return // known only after apply; resources will be configured then
	}
	cfg := client.FromEnv(client.Config{Endpoint: m.Endpoint.ValueString(), Token: m.Token.ValueString(),
		CACert: m.CACert.ValueString(), Insecure: m.Insecure.ValueBool(), Team: m.Team.ValueString(), Timeout: 5 * time.Minute,
		TokenSetting: "the provider's token attribute (or " + client.EnvToken + ")"})
	c, err := client.New(cfg)
	if err != nil {
		resp.Diagnostics.AddError("Invalid agentd Endpoint", err.Error()+
			". Set the provider's endpoint (or AGENTLAB_ENDPOINT) to unix:///run/agentd/agentd.sock or https://host:port.")
		return
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := c.Status(sctx); err != nil {
		var answered *api.Error
		switch {
		case client.IsUnauthorized(err):
			resp.Diagnostics.AddAttributeError(path.Root("token"), "Invalid agentd Token", err.Error()+".")
		case cfg.Team != "" && errors.As(err, &answered) && (answered.Code == api.CodeForbidden || answered.Code == api.CodeTeamNotFound ||
			answered.Code == api.CodeBadRequest):
			// Only the team header makes a status request fail this way.
			resp.Diagnostics.AddAttributeError(path.Root("team"), "Invalid agentd Team", fmt.Sprintf("team %q (the provider's team attribute or %s): %v.",
				cfg.Team, client.EnvTeam, err))
		case errors.As(err, &answered):
			resp.Diagnostics.AddError("agentd Status Failed", fmt.Sprintf("agentd at %s answered its status request with an error: %v.", cfg.Endpoint, err))
		case client.IsUnreachable(err):
			resp.Diagnostics.AddError("Unable to Reach agentd", fmt.Sprintf("%v.\n\nIs agentd running? On the host: systemctl status agentd; "+
				"locally: agentd dev, then export the AGENTLAB_ENDPOINT, AGENTLAB_TOKEN and AGENTLAB_CA_CERT it prints.", err))
		default:
			resp.Diagnostics.AddError("Unable to Reach agentd", fmt.Sprintf("%v.\n\nCheck the provider's endpoint, ca_cert and insecure "+
				"settings (AGENTLAB_ENDPOINT, AGENTLAB_CA_CERT, AGENTLAB_INSECURE) against agentd's TLS listener.", err))
		}
		return
	}
	resp.ResourceData = c
	resp.DataSourceData = c
}

func (p *AgentlabProvider) Resources(context.Context) []func() resource.Resource {
	return []func() resource.Resource{NewSandboxResource, NewSandboxPortResource, NewWorkspaceResource, NewWorkspaceSnapshotResource, NewSessionResource, NewPoolResource, NewTeamResource, NewTeamTokenResource}
}

func (p *AgentlabProvider) DataSources(context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{NewProfileDataSource, NewProfilesDataSource, NewSandboxDataSource, NewWorkspaceDataSource, NewHostDataSource, NewTeamDataSource, NewNodesDataSource}
}

// baseDS is embedded by every data source: the configured client.
type baseDS struct{ c *client.Client }

func (d *baseDS) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.c = clientFrom(req.ProviderData, &resp.Diagnostics)
}

// clientFrom extracts the configured client.
func clientFrom(data any, diags interface{ AddError(string, string) }) *client.Client {
	if data == nil {
		return nil
	}
	c, ok := data.(*client.Client)
	if !ok {
		diags.AddError("Unexpected Provider Data", fmt.Sprintf("expected *client.Client, got %T; this is a provider bug", data))
		return nil
	}
	return c
}

func timeString(t *time.Time) types.String {
	if t == nil {
		return types.StringNull()
	}
	return types.StringValue(t.UTC().Format(time.RFC3339))
}

// optString is null for agentd's "none" (an empty string), as resources and
// data sources both report it.
func optString(s string) types.String {
	if s == "" {
		return types.StringNull()
	}
	return types.StringValue(s)
}
