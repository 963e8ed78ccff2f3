package provider

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

var (
	_ resource.ResourceWithImportState = (*sessionResource)(nil)
	_ resource.ResourceWithModifyPlan  = (*sessionResource)(nil)
)

// NewSessionResource is the agentlab_session factory.
func NewSessionResource() resource.Resource { return &sessionResource{} }

type sessionResource struct{ c *client.Client }

type sessionModel struct {
	ID          types.String   `tfsdk:"id"`
	Name        types.String   `tfsdk:"name"`
	Profile     types.String   `tfsdk:"profile"`
	Workspace   types.String   `tfsdk:"workspace"`
	Running     types.Bool     `tfsdk:"running"`
	Sandbox     types.String   `tfsdk:"sandbox"`
	SandboxVMID types.Int64    `tfsdk:"sandbox_vmid"`
	IP          types.String   `tfsdk:"ip"`
	State       types.String   `tfsdk:"state"`
	Timeouts    timeouts.Value `tfsdk:"timeouts"`
}

func (r *sessionResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_session"
}

func (r *sessionResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		MarkdownDescription: "A work session: a name, a profile and a workspace, bound to whichever sandbox is current. " +
			"`running = true` provisions a fresh sandbox with the workspace attached; `running = false` destroys the sandbox and keeps the workspace. " +
			"Destroying the session keeps the workspace.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{Computed: true, MarkdownDescription: "Session id (`ses-…`).",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}},
			"name": schema.StringAttribute{Required: true, MarkdownDescription: "Session name: 1-52 lowercase letters, digits or dashes, not all digits and not starting with an id prefix (`sbx-`, `ws-`, `ses-`, `job-`). Changing it replaces the session.", PlanModifiers: replace,
				Validators: []validator.String{nameChars("Session", validate.MaxSessionName)}},
			"profile":   schema.StringAttribute{Required: true, MarkdownDescription: "Profile of the session's sandboxes. Changing it replaces the session.", PlanModifiers: replace},
			"workspace": schema.StringAttribute{Required: true, MarkdownDescription: "Name of the `agentlab_workspace` the session works on. Changing it replaces the session.", PlanModifiers: replace},
			"running": schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(true),
				MarkdownDescription: "Whether the session has a running sandbox (default `true`). A sandbox lost out of band shows up as drift that the next apply repairs."},
			"sandbox":      schema.StringAttribute{Computed: true, MarkdownDescription: "Name of the current sandbox."},
			"sandbox_vmid": schema.Int64Attribute{Computed: true, MarkdownDescription: "VMID of the current sandbox (0 when stopped)."},
			"ip":           schema.StringAttribute{Computed: true, MarkdownDescription: "IPv4 address of the current sandbox."},
			"state":        schema.StringAttribute{Computed: true, MarkdownDescription: "`RUNNING`, `STOPPED`, or the current sandbox's state."},
			"timeouts":     timeouts.Attributes(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),
		},
	}
}

// ModifyPlan checks a new session's name with agentd's whole rule, and its
// profile with agentd.
func (r *sessionResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	checkNewName(ctx, req, resp, validate.SessionName)
	if req.Plan.Raw.IsNull() {
		return
	}
	var planned, current types.String
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, path.Root("profile"), &planned)...)
	if !req.State.Raw.IsNull() {
		resp.Diagnostics.Append(req.State.GetAttribute(ctx, path.Root("profile"), &current)...)
	}
	if !resp.Diagnostics.HasError() && !planned.Equal(current) {
		checkProfile(ctx, r.c, &resp.Diagnostics, planned, nil) // a session always has its workspace
	}
}

func (r *sessionResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.c = clientFrom(req.ProviderData, &resp.Diagnostics)
}

func (m *sessionModel) fromAPI(s *api.Session) {
	m.ID, m.Name, m.Profile, m.Workspace = types.StringValue(s.ID), types.StringValue(s.Name), types.StringValue(s.Profile), types.StringValue(s.Workspace)
	m.Running = types.BoolValue(s.State == string(api.StateRunning) || api.State(s.State).InFlight())
	m.Sandbox, m.SandboxVMID, m.IP, m.State = types.StringValue(s.Sandbox), types.Int64Value(int64(s.SandboxVMID)), types.StringValue(s.IP), types.StringValue(s.State)
}

// converge resumes or stops the session as wanted and waits for it to settle.
func (r *sessionResource) converge(ctx context.Context, ref string, running bool) (*api.Session, error) {
	if !running {
		return r.c.StopSession(ctx, ref)
	}
	if _, err := r.c.ResumeSession(ctx, ref); err != nil {
		return nil, err
	}
	s, err := r.c.WaitSession(ctx, ref, 500*time.Millisecond)
	if err != nil {
		return nil, err
	}
	if s.State != string(api.StateRunning) {
		return s, fmt.Errorf("session %s: sandbox %s is %s: %s", s.Name, s.Sandbox, s.State, s.Error)
	}
	return s, nil
}

func (r *sessionResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan sessionModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := plan.Timeouts.Create(ctx, 15*time.Minute)
	resp.Diagnostics.Append(d...)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := r.c.CreateSession(ctx, api.CreateSessionRequest{Name: plan.Name.ValueString(), Profile: plan.Profile.ValueString(), Workspace: plan.Workspace.ValueString()})
	if err != nil {
		resp.Diagnostics.AddError("Unable to Create Session", err.Error())
		return
	}
	want := plan.Running.ValueBool()
	plan.fromAPI(s)
	if s2, err := r.converge(ctx, s.ID, want); s2 != nil {
		plan.fromAPI(s2)
		if err != nil {
			resp.Diagnostics.AddError("Unable to Create Session", err.Error())
		}
	} else if err != nil {
		resp.Diagnostics.AddError("Unable to Create Session", err.Error())
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *sessionResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state sessionModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	s, err := r.c.Session(ctx, state.ID.ValueString())
	if client.IsNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Unable to Read Session", err.Error())
		return
	}
	state.fromAPI(s)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *sessionResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state sessionModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := plan.Timeouts.Update(ctx, 15*time.Minute)
	resp.Diagnostics.Append(d...)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := r.converge(ctx, state.ID.ValueString(), plan.Running.ValueBool())
	if err != nil {
		resp.Diagnostics.AddError("Unable to Update Session", err.Error())
		if s == nil {
			return
		}
	}
	plan.fromAPI(s)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *sessionResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state sessionModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := state.Timeouts.Delete(ctx, 10*time.Minute)
	resp.Diagnostics.Append(d...)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := r.c.DeleteSession(ctx, state.ID.ValueString()); err != nil && !client.IsNotFound(err) {
		resp.Diagnostics.AddError("Unable to Delete Session", err.Error())
	}
}

// ImportState accepts a session id or name.
func (r *sessionResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	s, err := r.c.Session(ctx, req.ID)
	if err != nil {
		resp.Diagnostics.AddError("Unable to Import Session", fmt.Sprintf("%q: %v", req.ID, err))
		return
	}
	if !importedMatches(&resp.Diagnostics, "Session", req.ID, s.ID, 0, s.Name) {
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), s.ID)...)
}
