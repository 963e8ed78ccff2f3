package provider

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-timetypes/timetypes"
	"github.com/hashicorp/terraform-plugin-framework-validators/setvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/boolplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/setplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

var (
	_ resource.Resource                = (*sandboxResource)(nil)
	_ resource.ResourceWithImportState = (*sandboxResource)(nil)
	_ resource.ResourceWithModifyPlan  = (*sandboxResource)(nil)
)

// NewSandboxResource is the agentlab_sandbox factory.
func NewSandboxResource() resource.Resource { return &sandboxResource{} }

type sandboxResource struct{ c *client.Client }

type sandboxModel struct {
	sandboxObject
	TTL        timetypes.GoDuration `tfsdk:"ttl"`
	Keepalive  types.Bool           `tfsdk:"keepalive"`
	PowerState types.String         `tfsdk:"power_state"`
	Tags       types.Set            `tfsdk:"tags"`
	Timeouts   timeouts.Value       `tfsdk:"timeouts"`
}

func (r *sandboxResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_sandbox"
}

func (r *sandboxResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	attrs := sandboxAttrs.resource()
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	setString(attrs, "id", func(a *schema.StringAttribute) { a.PlanModifiers = keep })
	setString(attrs, "name", func(a *schema.StringAttribute) {
		a.Computed, a.Required = false, true
		a.PlanModifiers = []planmodifier.String{stringplanmodifier.RequiresReplace()}
		a.Validators = []validator.String{nameChars("Sandbox", validate.MaxSandboxName)}
	})
	setString(attrs, "profile", func(a *schema.StringAttribute) {
		a.Computed, a.Required = false, true
		a.PlanModifiers = []planmodifier.String{stringplanmodifier.RequiresReplace()}
	})
	setString(attrs, "workspace", func(a *schema.StringAttribute) { a.Computed, a.Optional = false, true })
	setInt64(attrs, "vmid", func(a *schema.Int64Attribute) {
		a.PlanModifiers = []planmodifier.Int64{int64planmodifier.UseStateForUnknown()}
	})
	setString(attrs, "node", func(a *schema.StringAttribute) { a.PlanModifiers = keep })
	// state, ip and lease_expires_at stay Computed: ModifyPlan keeps them
	// from the state where an update cannot change them.

	// GoDuration: 2h and 120m are the same lease, so agentd's seconds
	// never diff against the spelling in the configuration.
	attrs["ttl"] = schema.StringAttribute{Optional: true, Computed: true, CustomType: timetypes.GoDurationType{},
		MarkdownDescription: "Lease as a Go duration (`90m`, `8h`, `1h30m`); `0` for none. Defaults to the profile's `ttl_default`. Changing it renews the lease to now + ttl: the sandbox must run, or be started by the same apply (`power_state = \"running\"`).",
		PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
		Validators:          []validator.String{ttlRule()}}
	attrs["keepalive"] = schema.BoolAttribute{Optional: true, Computed: true, MarkdownDescription: "Keep the sandbox when its job ends. Defaults to the profile's. Changing it replaces the sandbox.",
		PlanModifiers: []planmodifier.Bool{boolplanmodifier.RequiresReplaceIfConfigured(), boolplanmodifier.UseStateForUnknown()}}
	attrs["power_state"] = schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString("running"),
		MarkdownDescription: "`running` (default) or `stopped`. Changed in place; a sandbox stopped by idle auto-stop shows up as drift and the next apply starts it.",
		Validators:          []validator.String{stringvalidator.OneOf("running", "stopped")}}
	attrs["tags"] = schema.SetAttribute{Optional: true, ElementType: types.StringType, MarkdownDescription: "Extra Proxmox tags for the VM: lowercase letters, digits, `_ + . -`, up to 64 characters (agentd always adds `agentlab`, which is reserved, as is `agentlab-workspace`). Changing them replaces the sandbox.",
		PlanModifiers: []planmodifier.Set{setplanmodifier.RequiresReplace()},
		Validators:    []validator.Set{setvalidator.ValueStringsAre(tagRule())}}
	attrs["timeouts"] = timeouts.Attributes(ctx, timeouts.Opts{Create: true, Update: true, Delete: true})
	resp.Schema = schema.Schema{
		MarkdownDescription: "A disposable VM for an AI coding agent, cloned from a profile's template on the Proxmox host. " +
			"Create waits until the sandbox is `RUNNING` (or fails with agentd's error). Its root disk does not persist: " +
			"use `workspace` (an `agentlab_workspace`) for data that must outlive it.",
		Attributes: attrs,
	}
}

// ModifyPlan checks a new sandbox's name with agentd's whole rule, refuses an
// in-place update that cannot apply, and keeps the computed values an update
// cannot change, so a ttl change plans only the lease as unknown.
func (r *sandboxResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	checkNewName(ctx, req, resp, validate.SandboxName)
	if req.Plan.Raw.IsNull() {
		return
	}
	var plan, state sandboxModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if !req.State.Raw.IsNull() {
		resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	}
	if resp.Diagnostics.HasError() {
		return
	}
	if req.State.Raw.IsNull() || !plan.Profile.Equal(state.Profile) || !plan.Workspace.Equal(state.Workspace) {
		checkProfile(ctx, r.c, &resp.Diagnostics, plan.Profile, &plan.Workspace)
	}
	if req.State.Raw.IsNull() || !plan.ID.Equal(state.ID) || plan.ID.IsUnknown() {
		return // created or replaced: everything is new
	}
	ttlChange := ttlChanges(ctx, plan, state)
	if ttlChange {
		ps, _ := plan.TTL.ValueGoDuration()
		switch {
		case ps == 0:
			resp.Diagnostics.AddAttributeError(path.Root("ttl"), "Invalid Lease Change",
				fmt.Sprintf("sandbox %s has a lease of %s; a lease cannot be removed in place. Set a duration, or replace the sandbox.",
					state.Name.ValueString(), state.TTL.ValueString()))
		case plan.PowerState.ValueString() == "stopped" && state.State.ValueString() != string(api.StateRunning):
			resp.Diagnostics.AddAttributeError(path.Root("ttl"), "Invalid Lease Change",
				fmt.Sprintf("sandbox %s is %s and stays stopped; a lease is renewed only while the sandbox runs. "+
					"Apply with power_state = \"running\" to renew it, then stop it.", state.Name.ValueString(), state.State.ValueString()))
		}
	}
	if powerChanges(plan, state) || !plan.Workspace.Equal(state.Workspace) {
		return // start, stop, attach and detach move the state and the address
	}
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("state"), state.State)...)
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("ip"), state.IP)...)
	if !ttlChange {
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("lease_expires_at"), state.LeaseExpiresAt)...)
	}
}

// powerChanges reports whether the update starts or stops the sandbox: the
// wanted power state differs, or it should run and does not (idle-stopped, or
// still booting).
func powerChanges(plan, state sandboxModel) bool {
	want := plan.PowerState.ValueString()
	return want != state.PowerState.ValueString() || want == "running" && state.State.ValueString() != string(api.StateRunning)
}

// ttlChanges reports whether the update renews the lease: a new duration,
// not a new spelling of the same one.
func ttlChanges(ctx context.Context, plan, state sandboxModel) bool {
	if plan.TTL.IsUnknown() || plan.TTL.IsNull() {
		return false
	}
	same, _ := plan.TTL.StringSemanticEquals(ctx, state.TTL)
	return !same
}

func (r *sandboxResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.c = clientFrom(req.ProviderData, &resp.Diagnostics)
}

// fromAPI fills the model from agentd's view. The lease comes back in
// seconds; the framework keeps the configured spelling of an equal duration.
func (m *sandboxModel) fromAPI(ctx context.Context, sb *api.Sandbox) diag.Diagnostics {
	m.sandboxObject.fromAPI(sb)
	m.TTL = timetypes.NewGoDurationValue(time.Duration(sb.TTLSeconds) * time.Second)
	m.Keepalive = types.BoolValue(sb.Keepalive)
	switch sb.State {
	case api.StateStopped:
		m.PowerState = types.StringValue("stopped")
	default:
		m.PowerState = types.StringValue("running")
	}
	var diags diag.Diagnostics
	if len(sb.Tags) == 0 && (m.Tags.IsNull() || m.Tags.IsUnknown()) {
		m.Tags = types.SetNull(types.StringType)
	} else {
		m.Tags, diags = types.SetValueFrom(ctx, types.StringType, sb.Tags)
	}
	return diags
}

func (r *sandboxResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan sandboxModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := plan.Timeouts.Create(ctx, 15*time.Minute)
	resp.Diagnostics.Append(d...)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	creq := api.CreateSandboxRequest{Name: plan.Name.ValueString(), Profile: plan.Profile.ValueString(), Workspace: plan.Workspace.ValueString()}
	if !plan.TTL.IsNull() && !plan.TTL.IsUnknown() {
		creq.TTL = plan.TTL.ValueString()
	}
	if !plan.Keepalive.IsNull() && !plan.Keepalive.IsUnknown() {
		v := plan.Keepalive.ValueBool()
		creq.Keepalive = &v
	}
	if !plan.Tags.IsNull() {
		resp.Diagnostics.Append(plan.Tags.ElementsAs(ctx, &creq.Tags, false)...)
	}
	sb, err := r.create(ctx, creq)
	if err != nil {
		resp.Diagnostics.AddError("Unable to Create Sandbox", err.Error())
		return
	}
	if sb.State == api.StateRunning && plan.PowerState.ValueString() == "stopped" {
		if sb, err = r.c.Stop(ctx, sb.ID); err != nil {
			resp.Diagnostics.AddError("Unable to Create Sandbox", "created, but stopping it failed: "+err.Error())
			return
		}
	}
	resp.Diagnostics.Append(plan.fromAPI(ctx, sb)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	if sb.State != api.StateRunning && sb.State != api.StateStopped {
		resp.Diagnostics.AddError("Unable to Create Sandbox", fmt.Sprintf("sandbox %s is %s: %s", sb.Name, sb.State, sb.Error))
	}
}

// create posts the request and waits. A FAILED or TIMEOUT sandbox of the same
// name (left by an earlier apply) is destroyed first: it can never run again.
func (r *sandboxResource) create(ctx context.Context, creq api.CreateSandboxRequest) (*api.Sandbox, error) {
	if old, err := r.c.Sandbox(ctx, creq.Name); err == nil && (old.State == api.StateFailed || old.State == api.StateTimeout) {
		if _, err := r.c.Destroy(ctx, old.ID, true); err != nil {
			return nil, fmt.Errorf("sandbox %s exists in state %s and could not be replaced: %w", old.Name, old.State, err)
		}
	}
	sb, err := r.c.CreateSandbox(ctx, creq)
	if err != nil {
		return nil, err
	}
	return r.c.WaitSandbox(ctx, sb.ID, 500*time.Millisecond)
}

// gone reports whether a sandbox no longer exists for Terraform: destroyed,
// timed out or failed (a failed sandbox cannot run again; the next apply
// replaces it).
func gone(sb *api.Sandbox) bool {
	return sb.State == api.StateDestroyed || sb.State == api.StateTimeout || sb.State == api.StateFailed
}

func (r *sandboxResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state sandboxModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	sb, err := r.c.Sandbox(ctx, state.ID.ValueString())
	if client.IsNotFound(err) || (err == nil && gone(sb)) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Unable to Read Sandbox", err.Error())
		return
	}
	resp.Diagnostics.Append(state.fromAPI(ctx, sb)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *sandboxResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state sandboxModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := plan.Timeouts.Update(ctx, 15*time.Minute)
	resp.Diagnostics.Append(d...)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	id := state.ID.ValueString()
	fail := func(err error) { resp.Diagnostics.AddError("Unable to Update Sandbox", err.Error()) }
	if !plan.Workspace.Equal(state.Workspace) {
		if old := state.Workspace.ValueString(); old != "" {
			if _, err := r.c.DetachWorkspace(ctx, old); err != nil && !client.IsNotFound(err) {
				fail(err)
				return
			}
		}
		if nw := plan.Workspace.ValueString(); nw != "" {
			if _, err := r.c.AttachWorkspace(ctx, nw, id); err != nil {
				fail(err)
				return
			}
		}
	}
	// A lease is renewed only while the sandbox runs: renew before a stop,
	// after a start (ModifyPlan refuses a renewal of a sandbox that stays
	// stopped), so a valid plan always applies.
	renew := func() error {
		if !ttlChanges(ctx, plan, state) {
			return nil
		}
		ps, d := plan.TTL.ValueGoDuration()
		if d.HasError() {
			return fmt.Errorf("ttl: %q is not a duration", plan.TTL.ValueString())
		}
		if ps == 0 {
			return errors.New("ttl: a lease cannot be removed in place; set a duration, or replace the sandbox")
		}
		_, err := r.c.Renew(ctx, id, plan.TTL.ValueString())
		return err
	}
	power := func() error {
		if !powerChanges(plan, state) {
			return nil
		}
		if plan.PowerState.ValueString() != "running" {
			_, err := r.c.Stop(ctx, id)
			return err
		}
		if _, err := r.c.Start(ctx, id); err != nil {
			return err
		}
		sb, err := r.c.WaitSandbox(ctx, id, 500*time.Millisecond)
		if err == nil && sb.State != api.StateRunning {
			err = fmt.Errorf("sandbox %s did not start: %s %s", sb.Name, sb.State, sb.Error)
		}
		return err
	}
	steps := []func() error{renew, power}
	if state.State.ValueString() != string(api.StateRunning) {
		steps = []func() error{power, renew}
	}
	for _, step := range steps {
		if err := step(); err != nil {
			fail(err)
			return
		}
	}
	sb, err := r.c.Sandbox(ctx, id)
	if err != nil {
		fail(err)
		return
	}
	resp.Diagnostics.Append(plan.fromAPI(ctx, sb)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *sandboxResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state sandboxModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := state.Timeouts.Delete(ctx, 10*time.Minute)
	resp.Diagnostics.Append(d...)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// force: also a sandbox still provisioning; agentd still never touches a VM it does not own.
	sb, err := r.c.Destroy(ctx, state.ID.ValueString(), true)
	if client.IsNotFound(err) {
		return
	}
	if err == nil && sb.State == api.StateDestroying {
		// A sandbox still provisioning is destroyed in the background once
		// its worker stopped; wait for it, so the name is free again.
		sb, err = r.c.WaitSandbox(ctx, sb.ID, 500*time.Millisecond)
		if err == nil && sb.State != api.StateDestroyed {
			err = fmt.Errorf("sandbox %s ended %s: %s", sb.Name, sb.State, sb.Error)
		}
	}
	if err != nil {
		resp.Diagnostics.AddError("Unable to Delete Sandbox", err.Error())
	}
}

// ImportState accepts a sandbox id, VMID or name, resolved by agentd's
// reference rule (digits are only ever a VMID).
func (r *sandboxResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	sb, err := r.c.Sandbox(ctx, req.ID)
	if err != nil {
		resp.Diagnostics.AddError("Unable to Import Sandbox", fmt.Sprintf("%q (a name, VMID or id): %v", req.ID, err))
		return
	}
	if !importedMatches(&resp.Diagnostics, "Sandbox", req.ID, sb.ID, sb.VMID, sb.Name) {
		return
	}
	if gone(sb) {
		resp.Diagnostics.AddError("Unable to Import Sandbox", fmt.Sprintf("sandbox %s is %s", sb.Name, sb.State))
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), sb.ID)...)
}
