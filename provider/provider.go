// Package provider is the Terraform provider for AgentLab. Every resource call
// goes to agentd's API; the provider never talks to Proxmox.
package provider

import (
	"context"
	"os"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"
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
		MarkdownDescription: "Manage AgentLab sandboxes, sessions and workspaces through the agentd host agent.",
		Attributes: map[string]schema.Attribute{
			"endpoint": schema.StringAttribute{
				MarkdownDescription: "agentd API endpoint: `unix:///run/agentd/agentd.sock` or `https://host:8443`. Defaults to `AGENTLAB_ENDPOINT`.",
				Optional:            true,
			},
			"token": schema.StringAttribute{
				MarkdownDescription: "Bearer token for the TCP listener. Defaults to `AGENTLAB_TOKEN`.",
				Optional:            true,
				Sensitive:           true,
			},
			"ca_cert": schema.StringAttribute{
				MarkdownDescription: "PEM CA certificate that signed agentd's TLS certificate. Defaults to `AGENTLAB_CA_CERT`.",
				Optional:            true,
			},
			"insecure": schema.BoolAttribute{
				MarkdownDescription: "Skip TLS verification (development only). Defaults to `AGENTLAB_INSECURE`.",
				Optional:            true,
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
	endpoint := m.Endpoint.ValueString()
	if endpoint == "" {
		endpoint = os.Getenv("AGENTLAB_ENDPOINT")
	}
	if endpoint == "" {
		resp.Diagnostics.AddError("Missing agentd endpoint",
			"Set the provider's endpoint attribute or the AGENTLAB_ENDPOINT environment variable, "+
				"for example unix:///run/agentd/agentd.sock.")
	}
}

func (p *AgentlabProvider) Resources(context.Context) []func() resource.Resource { return nil }

func (p *AgentlabProvider) DataSources(context.Context) []func() datasource.DataSource { return nil }
