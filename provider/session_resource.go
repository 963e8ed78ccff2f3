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
	Team        types.String   `tfsdk:"team"`
	Running     types.Bool     `tfsdk:"running"`
	Sandbox     types.String   `tfsdk:"sandbox"`
	SandboxVMID types.Int64    `tfsdk:"sandbox_vmid"`
	IP          types.String   `tfsdk:"ip"`
	State       types.String   `tfsdk:"state"`
	Attached    types.Bool     `tfsdk:"workspace_attached"`
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
			"team": schema.StringAttribute{Computed: true, MarkdownDescription: "Team that owns the session: a team token's team, or the provider's `team` (`default` without one) for a global token. Fixed at create.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}},
			"running": schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(true),
				MarkdownDescription: "Whether the session has a running sandbox with its workspace attached (default `true`). A sandbox lost, or the workspace detached, out of band shows up as drift that the next apply repairs."},
			"sandbox":      schema.StringAttribute{Computed: true, MarkdownDescription: "Name of the current sandbox."},
			"sandbox_vmid": schema.Int64Attribute{Computed: true, MarkdownDescription: "VMID of the current sandbox (0 when stopped)."},
			"ip":           schema.StringAttribute{Computed: true, MarkdownDescription: "IPv4 address of the current sandbox."},
			"state":        schema.StringAttribute{Computed: true, MarkdownDescription: "`RUNNING`, `STOPPED`, or the current sandbox's state."},
			"workspace_attached": schema.BoolAttribute{Computed: true,
				MarkdownDescription: "Whether the workspace is attached to the running sandbox. False while running means it was detached out of band: `running` then reads false, and the next apply replaces the sandbox with a fresh one that has the workspace attached (as `running = false` then `true` would)."},
			"timeouts": timeouts.Attributes(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),
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

// fromAPI fills the model; attached says whether the workspace is attached
// to the session's running sandbox (see attached).
func (m *sessionModel) fromAPI(s *api.Session, attached bool) {
	m.ID, m.Name, m.Profile, m.Workspace = types.StringValue(s.ID), types.StringValue(s.Name), types.StringValue(s.Profile), types.StringValue(s.Workspace)
	m.Team = optString(s.Team)
	running := s.State == string(api.StateRunning)
	m.Running = types.BoolValue(running && attached || api.State(s.State).InFlight())
	m.Attached = types.BoolValue(running && attached)
	m.Sandbox, m.SandboxVMID, m.IP, m.State = types.StringValue(s.Sandbox), types.Int64Value(int64(s.SandboxVMID)), types.StringValue(s.IP), types.StringValue(s.State)
}

// attached reports whether the session's workspace is attached to its
// running sandbox. agentd's session does not watch its workspace: a detach
// out of band leaves the session RUNNING with a sandbox lacking /work.
func (r *sessionResource) attached(ctx context.Context, s *api.Session) (bool, error) {
	if s.State != string(api.StateRunning) || s.Sandbox == "" {
		return false, nil
	}
	w, err := r.c.Workspace(ctx, s.Workspace)
	if err != nil {
		return false, fmt.Errorf("workspace %s of session %s: %w", s.Workspace, s.Name, err)
	}
	return w.AttachedSandbox == s.Sandbox, nil
}

// converge resumes or stops the session as wanted and waits for it to settle.
// A running sandbox whose workspace was detached is replaced by a fresh one
// with the workspace attached, as resuming a stopped session does: resuming
// keeps a running sandbox as it is, and agentd attaches a session's reserved
// workspace only to a sandbox it provisions for the session.
func (r *sessionResource) converge(ctx context.Context, ref string, running bool) (*api.Session, error) {
	if !running {
		return r.c.StopSession(ctx, ref)
	}
	s, err := r.resume(ctx, ref)
	if err != nil {
		return s, err
	}
	ok, err := r.attached(ctx, s)
	if err != nil || ok {
		return s, err
	}
	if _, err := r.c.StopSession(ctx, ref); err != nil {
		return s, fmt.Errorf("session %s: replace sandbox %s, whose workspace %s was detached: %w", s.Name, s.Sandbox, s.Workspace, err)
	}
	return r.resume(ctx, ref)
}

// resume resumes the session and waits for its sandbox to run.
func (r *sessionResource) resume(ctx context.Context, ref string) (*api.Session, error) {
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

// fill reads the workspace attachment and fills the model.
func (r *sessionResource) fill(ctx context.Context, m *sessionModel, s *api.Session) error {
	ok, err := r.attached(ctx, s)
	m.fromAPI(s, ok)
	return err
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
	plan.fromAPI(s, false)
	s2, err := r.converge(ctx, s.ID, want)
	if s2 != nil {
		if ferr := r.fill(ctx, &plan, s2); err == nil {
			err = ferr
		}
	}
	if err != nil {
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
	if err := r.fill(ctx, &state, s); err != nil {
		resp.Diagnostics.AddError("Unable to Read Session", err.Error())
		return
	}
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
	if s != nil {
		if ferr := r.fill(ctx, &plan, s); err == nil {
			err = ferr
		}
	}
	if err != nil {
		resp.Diagnostics.AddError("Unable to Update Session", err.Error())
		if s == nil {
			return
		}
	}
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
