package provider

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timetypes/timetypes"
	"github.com/hashicorp/terraform-plugin-framework-validators/setvalidator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/boolplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/setplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

var (
	_ resource.Resource                   = (*sandboxPortResource)(nil)
	_ resource.ResourceWithImportState    = (*sandboxPortResource)(nil)
	_ resource.ResourceWithValidateConfig = (*sandboxPortResource)(nil)
)

// NewSandboxPortResource is the agentlab_sandbox_port factory.
func NewSandboxPortResource() resource.Resource { return &sandboxPortResource{} }

type sandboxPortResource struct{ c *client.Client }

type sandboxPortModel struct {
	ID          types.String         `tfsdk:"id"`
	Sandbox     types.String         `tfsdk:"sandbox"`
	Port        types.Int64          `tfsdk:"port"`
	Sources     types.Set            `tfsdk:"sources"`
	Public      types.Bool           `tfsdk:"public"`
	HostPort    types.Int64          `tfsdk:"host_port"`
	TTL         timetypes.GoDuration `tfsdk:"ttl"`
	HostAddress types.String         `tfsdk:"host_address"`
	ExpiresAt   types.String         `tfsdk:"expires_at"`
}

func (r *sandboxPortResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_sandbox_port"
}

func (r *sandboxPortResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	// agentd cannot change an exposed port: every setting replaces it. The
	// computed ones keep their state first, so an unset host_port or
	// sources (allocated, defaulted by agentd) never plans a replacement.
	keepInt := []planmodifier.Int64{int64planmodifier.UseStateForUnknown(), int64planmodifier.RequiresReplace()}
	keepStr := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	resp.Schema = schema.Schema{
		MarkdownDescription: "A guest TCP port of an `agentlab_sandbox` published on the Proxmox host's uplink address (nftables DNAT), " +
			"reachable only from the given sources. agentd withdraws it when its `ttl` ends and when the sandbox stops, hibernates or is destroyed; " +
			"the next plan then shows it as to be created again, and the apply republishes it once the sandbox runs. Every change replaces it.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{Computed: true, PlanModifiers: keepStr,
				MarkdownDescription: "`<sandbox id>:<port>`."},
			"sandbox": schema.StringAttribute{Required: true,
				MarkdownDescription: "The sandbox, by name or id. It must be running. Changing it replaces the port. With `agentlab_sandbox.<name>.id`, " +
					"a replaced sandbox replaces the port in the same apply; with its name, the apply after it publishes the port again.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()}},
			"port": schema.Int64Attribute{Required: true,
				MarkdownDescription: "Guest TCP port (1-65535). Changing it replaces the port.",
				PlanModifiers:       []planmodifier.Int64{int64planmodifier.RequiresReplace()},
				Validators:          []validator.Int64{int64Rule{summary: "Invalid Port", desc: "a TCP port (1-65535)", check: validate.Port}}},
			"sources": schema.SetAttribute{Optional: true, Computed: true, ElementType: types.StringType,
				MarkdownDescription: "IPv4 networks allowed to connect, in CIDR notation with the host bits zero (`192.168.1.0/24`, `203.0.113.7/32`). " +
					"Defaults to the agent's `expose_default_sources` (the host's LAN). `0.0.0.0/0` needs `public = true`. " +
					"Changing it replaces the port; removing it keeps the current sources.",
				PlanModifiers: []planmodifier.Set{setplanmodifier.UseStateForUnknown(), setplanmodifier.RequiresReplace()},
				Validators:    []validator.Set{setvalidator.SizeAtLeast(1), setvalidator.ValueStringsAre(exposeSourceRule{})}},
			"public": schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(false),
				MarkdownDescription: "Open the port to every address: without `sources` it admits `0.0.0.0/0`, and `0.0.0.0/0` in `sources` needs it. Default `false`. Changing it replaces the port.",
				PlanModifiers:       []planmodifier.Bool{boolplanmodifier.RequiresReplace()}},
			"host_port": schema.Int64Attribute{Optional: true, Computed: true, PlanModifiers: keepInt,
				MarkdownDescription: "Host port to publish on (1024-65535, not Proxmox's 8006, 3128 or 5900-5999). Unset, agentd takes a free one of its `expose_port_range`. " +
					"Changing it replaces the port.",
				Validators: []validator.Int64{int64Rule{summary: "Invalid Host Port", desc: "a TCP port from 1024 that shadows no Proxmox service", check: validate.HostPort}}},
			"ttl": schema.StringAttribute{Optional: true, CustomType: timetypes.GoDurationType{},
				MarkdownDescription: "How long the port stays published, as a Go duration (`30m`, `8h`); unset or `0` for as long as the sandbox runs. " +
					"Changing it replaces the port (a new spelling of the same duration does not).",
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplaceIf(ttlReplaces,
					"A new duration republishes the port; a new spelling of the same one does not.", "A new duration republishes the port; a new spelling of the same one does not.")},
				Validators: []validator.String{stringRule{summary: "Invalid Port TTL", desc: "a duration of at least 1m in whole seconds (30m, 8h), or 0 for none",
					check: func(f, v string) error { _, err := validate.TTL(f, v); return err }}}},
			"host_address": schema.StringAttribute{Computed: true, PlanModifiers: keepStr,
				MarkdownDescription: "IPv4 address of the host's uplink (the agent's `uplink` interface) to connect to, with `host_port`; empty when that interface has no IPv4 address."},
			"expires_at": schema.StringAttribute{Computed: true, PlanModifiers: keepStr,
				MarkdownDescription: "When agentd withdraws the port (RFC 3339); null without a `ttl`."},
		},
	}
}

// ttlReplaces: a new duration replaces the port; the same one respelled
// (60m for 1h) only updates the state.
func ttlReplaces(ctx context.Context, req planmodifier.StringRequest, resp *stringplanmodifier.RequiresReplaceIfFuncResponse) {
	plan := timetypes.GoDuration{StringValue: req.PlanValue}
	state := timetypes.GoDuration{StringValue: req.StateValue}
	same, _ := plan.StringSemanticEquals(ctx, state)
	resp.RequiresReplace = !same && !(isZeroTTL(plan) && isZeroTTL(state))
}

// isZeroTTL: null and 0 both mean no expiry.
func isZeroTTL(v timetypes.GoDuration) bool {
	if v.IsNull() {
		return true
	}
	d, diags := v.ValueGoDuration()
	return !diags.HasError() && d == 0
}

// ValidateConfig refuses 0.0.0.0/0 without public at plan time, as agentd
// would at apply.
func (r *sandboxPortResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m sandboxPortModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() || m.Sources.IsNull() || m.Sources.IsUnknown() || m.Public.IsUnknown() {
		return
	}
	public := m.Public.ValueBool()
	for _, e := range m.Sources.Elements() {
		s, ok := e.(types.String)
		if !ok || s.IsUnknown() || s.IsNull() {
			continue
		}
		if _, err := validate.ExposeSource("sources", s.ValueString(), public); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("sources"), "Invalid Port Source", reason(err)+" (public = true)")
		}
	}
}

func (r *sandboxPortResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.c = clientFrom(req.ProviderData, &resp.Diagnostics)
}

// portID is the resource id: the sandbox's id, which a replaced sandbox of
// the same name does not share, and the guest port.
func portID(sandboxID string, port int) string { return sandboxID + ":" + strconv.Itoa(port) }

// splitPortID reads SANDBOX:PORT (an id, or an import's name or id).
func splitPortID(id string) (string, int, error) {
	sb, p, ok := strings.Cut(id, ":")
	n, err := strconv.Atoi(p)
	if !ok || sb == "" || err != nil || validate.Port("port", int64(n)) != nil {
		return "", 0, fmt.Errorf("%q is not SANDBOX:PORT, a sandbox name or id and a guest port (1-65535) such as dev:8080", id)
	}
	return sb, n, nil
}

// fromAPI fills the model from agentd's view. The ttl is read back from the
// expiry (agentd keeps no duration): whole seconds, as agentd accepts them,
// and the framework keeps an equal configured spelling.
func (m *sandboxPortModel) fromAPI(ctx context.Context, p *api.ExposedPort) diag.Diagnostics {
	m.ID = types.StringValue(portID(p.SandboxID, p.Port))
	m.Port = types.Int64Value(int64(p.Port))
	m.HostPort = types.Int64Value(int64(p.HostPort))
	m.Public = types.BoolValue(p.Public)
	m.HostAddress = types.StringValue(p.HostAddress)
	m.ExpiresAt = timeString(p.ExpiresAt)
	if p.ExpiresAt != nil {
		m.TTL = timetypes.NewGoDurationValue(p.ExpiresAt.Sub(p.CreatedAt).Round(time.Second))
	} else if !isZeroTTL(m.TTL) || m.TTL.IsUnknown() {
		m.TTL = timetypes.NewGoDurationNull()
	}
	var diags diag.Diagnostics
	m.Sources, diags = types.SetValueFrom(ctx, types.StringType, p.Sources)
	return diags
}

func (r *sandboxPortResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan sandboxPortModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ereq := api.ExposeRequest{Port: int(plan.Port.ValueInt64()), Public: plan.Public.ValueBool()}
	if !plan.HostPort.IsNull() && !plan.HostPort.IsUnknown() {
		ereq.HostPort = int(plan.HostPort.ValueInt64())
	}
	if !plan.Sources.IsNull() && !plan.Sources.IsUnknown() {
		resp.Diagnostics.Append(plan.Sources.ElementsAs(ctx, &ereq.Sources, false)...)
	}
	if !isZeroTTL(plan.TTL) && !plan.TTL.IsUnknown() {
		ereq.TTL = plan.TTL.ValueString()
	}
	if resp.Diagnostics.HasError() {
		return
	}
	sandbox := plan.Sandbox.ValueString()
	p, err := r.c.Expose(ctx, sandbox, ereq)
	if err != nil {
		resp.Diagnostics.AddError("Unable to Create Sandbox Port", fmt.Sprintf("exposing port %d of sandbox %s: %v", ereq.Port, sandbox, err))
		return
	}
	resp.Diagnostics.Append(plan.fromAPI(ctx, p)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// find returns the exposed port the id names, or nil when it is gone.
func (r *sandboxPortResource) find(ctx context.Context, id string) (*api.ExposedPort, error) {
	sandboxID, port, err := splitPortID(id)
	if err != nil {
		return nil, err
	}
	ports, err := r.c.ExposedPorts(ctx, sandboxID)
	if client.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	for i := range ports {
		if ports[i].Port == port {
			return &ports[i], nil
		}
	}
	return nil, nil
}

// Read removes a port agentd withdrew (its ttl ended, or the sandbox
// stopped, hibernated or was destroyed), so the next apply publishes it again.
func (r *sandboxPortResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state sandboxPortModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	p, err := r.find(ctx, state.ID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Unable to Read Sandbox Port", err.Error())
		return
	}
	if p == nil {
		resp.State.RemoveResource(ctx)
		return
	}
	resp.Diagnostics.Append(state.fromAPI(ctx, p)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// Update only stores a respelled ttl or a sandbox reference's new spelling
// after an import; every real change replaces the port.
func (r *sandboxPortResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state sandboxPortModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	state.TTL = plan.TTL
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *sandboxPortResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state sandboxPortModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	sandboxID, port, err := splitPortID(state.ID.ValueString())
	if err == nil {
		err = r.c.Unexpose(ctx, sandboxID, port)
	}
	if err != nil && !client.IsNotFound(err) {
		resp.Diagnostics.AddError("Unable to Delete Sandbox Port", fmt.Sprintf("unexposing port %d of sandbox %s: %v", port, state.Sandbox.ValueString(), err))
	}
}

// ImportState accepts SANDBOX:PORT, the sandbox by name or id; sandbox is
// stored as given, so a configuration naming it the same way plans nothing.
func (r *sandboxPortResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	ref, port, err := splitPortID(req.ID)
	if err != nil {
		resp.Diagnostics.AddError("Unable to Import Sandbox Port", err.Error())
		return
	}
	sb, err := r.c.Sandbox(ctx, ref)
	if err != nil {
		resp.Diagnostics.AddError("Unable to Import Sandbox Port", fmt.Sprintf("sandbox %q (a name or id): %v", ref, err))
		return
	}
	if !importedMatches(&resp.Diagnostics, "Sandbox", ref, sb.ID, sb.VMID, sb.Name) {
		return
	}
	p, err := r.find(ctx, portID(sb.ID, port))
	if err == nil && p == nil {
		err = fmt.Errorf("sandbox %s has no exposed port %d (`agentd sandbox exposed %s` lists them)", sb.Name, port, sb.Name)
	}
	if err != nil {
		resp.Diagnostics.AddError("Unable to Import Sandbox Port", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), portID(sb.ID, port))...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("sandbox"), ref)...)
}
