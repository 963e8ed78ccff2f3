package provider

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-timetypes/timetypes"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
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
	// Optional+Computed: unset, the state keeps the node agentd placed the
	// sandbox on (UseStateForUnknown first, so unsetting a pin is no
	// replacement); a configured node that differs replaces the sandbox,
	// since agentd does not migrate one.
	setString(attrs, "node", func(a *schema.StringAttribute) {
		a.Optional = true
		a.PlanModifiers = []planmodifier.String{stringplanmodifier.UseStateForUnknown(), stringplanmodifier.RequiresReplace()}
	})
	setString(attrs, "team", func(a *schema.StringAttribute) { a.PlanModifiers = keep })
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
		MarkdownDescription: "`running` (default), `stopped` or `paused`. Changed in place. `paused` hibernates the sandbox: its RAM is written to disk and freed, " +
			"its state kept (`SUSPENDED`), and its lease clock stands still unless the agent's `lease_counts_while_paused` says otherwise; `running` resumes it. " +
			"A sandbox stopped or hibernated by idle auto-stop shows up as drift and the next apply starts or resumes it.",
		Validators: []validator.String{stringvalidator.OneOf(powerRunning, powerStopped, powerPaused)}}
	// Optional+Computed: the profile's value unless configured. agentd's
	// sandbox view carries no resources, so the state keeps what the resize
	// read back (Proxmox's config with pending values), which a second plan
	// compares equal.
	keepInt := []planmodifier.Int64{int64planmodifier.UseStateForUnknown()}
	for _, name := range []string{"cores", "memory_mb"} {
		setInt64(attrs, name, func(a *schema.Int64Attribute) { a.Optional, a.PlanModifiers = true, keepInt })
	}
	setInt64(attrs, "cores", func(a *schema.Int64Attribute) {
		a.Validators = []validator.Int64{int64validator.Between(1, validate.MaxCores)}
	})
	setInt64(attrs, "memory_mb", func(a *schema.Int64Attribute) {
		a.Validators = []validator.Int64{int64validator.Between(validate.MinMemoryMB, validate.MaxMemoryMB)}
	})
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
	if req.State.Raw.IsNull() || !plan.Node.Equal(state.Node) {
		checkNode(ctx, r.c, &resp.Diagnostics, plan.Node)
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
		case plan.PowerState.ValueString() != powerRunning && state.State.ValueString() != string(api.StateRunning):
			resp.Diagnostics.AddAttributeError(path.Root("ttl"), "Invalid Lease Change",
				fmt.Sprintf("sandbox %s is %s and stays %s; a lease is renewed only while the sandbox runs. "+
					"Apply with power_state = \"running\" to renew it, then set power_state = %q.",
					state.Name.ValueString(), state.State.ValueString(), plan.PowerState.ValueString(), plan.PowerState.ValueString()))
		}
	}
	if resizes(plan, state) && plan.PowerState.ValueString() == powerPaused && state.State.ValueString() == string(api.StateSuspended) {
		resp.Diagnostics.AddAttributeError(path.Root("cores"), "Invalid Resize",
			fmt.Sprintf("sandbox %s is hibernated and stays paused; agentd resizes only a running or stopped sandbox. "+
				"Apply with power_state = \"stopped\" or \"running\" to resize it.", state.Name.ValueString()))
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

// The values of power_state.
const (
	powerRunning = "running"
	powerStopped = "stopped"
	powerPaused  = "paused"
)

// powerChanges reports whether the update starts, stops, hibernates or
// resumes the sandbox: the wanted power state differs, or it should run and
// does not (idle-stopped, or still booting), or it should be hibernated and
// is not yet.
func powerChanges(plan, state sandboxModel) bool {
	want, now := plan.PowerState.ValueString(), api.State(state.State.ValueString())
	return want != state.PowerState.ValueString() || want == powerRunning && now != api.StateRunning ||
		want == powerPaused && now != api.StateSuspended
}

// resizes reports whether the update changes cores or memory.
func resizes(plan, state sandboxModel) bool {
	return changedInt(plan.Cores, state.Cores) || changedInt(plan.MemoryMB, state.MemoryMB)
}

func changedInt(plan, state types.Int64) bool {
	return !plan.IsUnknown() && !plan.IsNull() && !plan.Equal(state)
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
		m.PowerState = types.StringValue(powerStopped)
	case api.StateSuspended:
		m.PowerState = types.StringValue(powerPaused)
	default:
		m.PowerState = types.StringValue(powerRunning)
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
	// Overrides go into the create: the VM is configured with them before
	// its first boot.
	if !plan.Cores.IsNull() && !plan.Cores.IsUnknown() {
		creq.Cores = int(plan.Cores.ValueInt64())
	}
	if !plan.MemoryMB.IsNull() && !plan.MemoryMB.IsUnknown() {
		creq.MemoryMB = int(plan.MemoryMB.ValueInt64())
	}
	if !plan.Node.IsNull() && !plan.Node.IsUnknown() {
		creq.Node = plan.Node.ValueString()
	}
	sb, err := r.create(ctx, creq)
	if err != nil {
		resp.Diagnostics.AddError("Unable to Create Sandbox", err.Error())
		return
	}
	if sb.State != api.StateRunning {
		resp.Diagnostics.Append(plan.fromAPI(ctx, sb)...)
		resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
		resp.Diagnostics.AddError("Unable to Create Sandbox", fmt.Sprintf("sandbox %s is %s: %s", sb.Name, sb.State, sb.Error))
		return
	}
	want, id := plan, sb.ID
	settled, err := r.settle(ctx, sb, &want, &plan, &resp.Diagnostics)
	if settled == nil {
		// The state must still hold the sandbox, so that the next apply
		// replaces it (tainted) instead of losing it.
		if settled, _ = r.c.Sandbox(ctx, id); settled == nil || settled.ID == "" {
			settled = sb
		}
	}
	resp.Diagnostics.Append(plan.fromAPI(ctx, settled)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	if err != nil {
		resp.Diagnostics.AddError("Unable to Create Sandbox", fmt.Sprintf("sandbox %s was created, but %v", creq.Name, err))
	}
}

// settle brings a sandbox that has just become RUNNING to the configured
// power state. into receives the cores and memory agentd reports; should
// they differ from want (an agent that ignored the create's overrides), they
// are set while it is stopped, so that it boots with them: nothing of the
// user's runs in it yet.
func (r *sandboxResource) settle(ctx context.Context, sb *api.Sandbox, want, into *sandboxModel, diags *diag.Diagnostics) (*api.Sandbox, error) {
	var err error
	into.Cores, into.MemoryMB = types.Int64Value(int64(sb.Cores)), types.Int64Value(int64(sb.MemoryMB))
	if sb.Cores == 0 || sb.MemoryMB == 0 {
		p, err := r.c.Profile(ctx, sb.Profile)
		if err != nil {
			// Null, not unknown, in the state: Read fills them in later.
			into.Cores, into.MemoryMB = types.Int64Null(), types.Int64Null()
			return sb, fmt.Errorf("reading its profile %s for the default cores and memory failed: %w", sb.Profile, err)
		}
		into.Cores, into.MemoryMB = types.Int64Value(int64(p.Cores)), types.Int64Value(int64(p.MemoryMB))
	}
	if changedInt(want.Cores, into.Cores) || changedInt(want.MemoryMB, into.MemoryMB) {
		if sb, err = r.c.Stop(ctx, sb.ID); err != nil {
			return nil, fmt.Errorf("stopping it to resize it failed: %w", err)
		}
		if sb, err = r.resize(ctx, sb.ID, *want, into, diags); err != nil {
			return sb, err
		}
	}
	switch want.PowerState.ValueString() {
	case powerStopped:
		if sb.State != api.StateStopped {
			if sb, err = r.c.Stop(ctx, sb.ID); err != nil {
				return nil, fmt.Errorf("stopping it failed: %w", err)
			}
		}
	case powerPaused:
		if sb.State != api.StateRunning {
			if sb, err = r.start(ctx, sb.ID); err != nil {
				return sb, err
			}
		}
		return r.hibernate(ctx, sb.ID)
	default:
		if sb.State != api.StateRunning {
			return r.start(ctx, sb.ID)
		}
	}
	return sb, nil
}

// start starts or resumes a sandbox and waits until it runs.
func (r *sandboxResource) start(ctx context.Context, id string) (*api.Sandbox, error) {
	if _, err := r.c.Start(ctx, id); err != nil {
		return nil, fmt.Errorf("starting it failed: %w", err)
	}
	sb, err := r.c.WaitSandbox(ctx, id, 500*time.Millisecond)
	if err != nil {
		return nil, fmt.Errorf("waiting for it to run failed: %w", err)
	}
	if sb.State != api.StateRunning {
		return sb, fmt.Errorf("it did not start: %s %s", sb.State, sb.Error)
	}
	return sb, nil
}

// hibernate suspends a running sandbox to disk.
func (r *sandboxResource) hibernate(ctx context.Context, id string) (*api.Sandbox, error) {
	sb, err := r.c.Hibernate(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("hibernating it failed: %w", err)
	}
	if sb.State != api.StateSuspended {
		return sb, fmt.Errorf("hibernating it left it %s %s, not SUSPENDED", sb.State, sb.Error)
	}
	return sb, nil
}

// resize sets the cores and memory that want configures and differ from
// into's, and stores what Proxmox read back in into. A change a running VM
// takes only at its next start is reported as a warning: the value in the
// state is already the new one (Proxmox's config shows pending values), so
// the next plan is empty and the sandbox gets it when it is next started.
func (r *sandboxResource) resize(ctx context.Context, id string, want sandboxModel, into *sandboxModel, diags *diag.Diagnostics) (*api.Sandbox, error) {
	var req api.ResizeRequest
	if changedInt(want.Cores, into.Cores) {
		req.Cores = int(want.Cores.ValueInt64())
	}
	if changedInt(want.MemoryMB, into.MemoryMB) {
		req.MemoryMB = int(want.MemoryMB.ValueInt64())
	}
	res, err := r.c.Resize(ctx, id, req)
	if err != nil {
		return nil, fmt.Errorf("resizing it failed: %w", err)
	}
	into.Cores, into.MemoryMB = types.Int64Value(int64(res.Cores)), types.Int64Value(int64(res.MemoryMB))
	if len(res.Pending) > 0 {
		diags.AddAttributeWarning(path.Root(res.Pending[0]), "Sandbox Resize Pending",
			fmt.Sprintf("Sandbox %s is running: Proxmox applies %s at its next start. To apply it now, stop and start it "+
				"(power_state = \"stopped\", apply, then \"running\"; or `agentd sandbox stop %s` and `agentd sandbox start %s`).",
				res.Sandbox.Name, strings.Join(res.Pending, " and "), res.Sandbox.Name, res.Sandbox.Name))
	}
	return &res.Sandbox, nil
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
	if state.Cores.IsNull() || state.MemoryMB.IsNull() {
		// Imported from an agent that does not report resources: the VM got
		// its profile's when it was provisioned.
		p, err := r.c.Profile(ctx, sb.Profile)
		if err != nil {
			resp.Diagnostics.AddError("Unable to Read Sandbox", fmt.Sprintf("sandbox %s: reading its profile %s for its cores and memory: %v", sb.Name, sb.Profile, err))
			return
		}
		state.Cores, state.MemoryMB = types.Int64Value(int64(p.Cores)), types.Int64Value(int64(p.MemoryMB))
	}
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
		switch plan.PowerState.ValueString() {
		case powerStopped:
			_, err := r.c.Stop(ctx, id)
			return err
		case powerPaused:
			sb, err := r.c.Sandbox(ctx, id)
			if err != nil {
				return err
			}
			if sb.State != api.StateRunning {
				if _, err := r.start(ctx, id); err != nil {
					return err
				}
			}
			_, err = r.hibernate(ctx, id)
			return err
		default:
			_, err := r.start(ctx, id)
			return err
		}
	}
	// plan receives what the resize reads back; want keeps the configuration.
	want := plan
	plan.Cores, plan.MemoryMB = state.Cores, state.MemoryMB
	resize := func() error {
		if !resizes(want, state) {
			return nil
		}
		_, err := r.resize(ctx, id, want, &plan, &resp.Diagnostics)
		return err
	}
	steps := updateOrder(api.State(state.State.ValueString()), plan.PowerState.ValueString(), renew, power, resize)
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

// updateOrder orders an update's steps. A lease is renewed only while the
// sandbox runs: renew before a stop or a hibernation, after a start
// (ModifyPlan refuses a renewal of a sandbox that does not run afterwards),
// so a valid plan always applies. Cores and memory are changed while the
// sandbox is stopped when the apply stops it or it is stopped, so that its
// next start takes them instead of leaving them pending.
func updateOrder(now api.State, want string, renew, power, resize func() error) []func() error {
	switch {
	case now == api.StateRunning && want == powerStopped:
		return []func() error{renew, power, resize}
	case now == api.StateRunning:
		return []func() error{renew, resize, power}
	case now == api.StateStopped:
		return []func() error{resize, power, renew}
	case want == powerStopped:
		return []func() error{power, resize, renew}
	default:
		return []func() error{power, renew, resize}
	}
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
