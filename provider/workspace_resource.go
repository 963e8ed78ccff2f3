package provider

import (
	"context"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

var (
	_ resource.ResourceWithImportState = (*workspaceResource)(nil)
	_ resource.ResourceWithModifyPlan  = (*workspaceResource)(nil)
)

// NewWorkspaceResource is the agentlab_workspace factory.
func NewWorkspaceResource() resource.Resource { return &workspaceResource{} }

type workspaceResource struct{ c *client.Client }

type workspaceModel struct {
	workspaceObject
	SizeGB             types.Number   `tfsdk:"size_gb"`
	DeletionProtection types.Bool     `tfsdk:"deletion_protection"`
	ForceDestroy       types.Bool     `tfsdk:"force_destroy"`
	Timeouts           timeouts.Value `tfsdk:"timeouts"`
}

func (r *workspaceResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_workspace"
}

func (r *workspaceResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	attrs := workspaceAttrs.resource()
	setString(attrs, "id", func(a *schema.StringAttribute) {
		a.PlanModifiers = []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	})
	setString(attrs, "name", func(a *schema.StringAttribute) {
		a.Computed, a.Required = false, true
		a.PlanModifiers = []planmodifier.String{stringplanmodifier.RequiresReplace()}
		a.Validators = []validator.String{nameChars("Workspace", validate.MaxWorkspaceName)}
	})
	setString(attrs, "storage", func(a *schema.StringAttribute) {
		a.Optional = true
		a.PlanModifiers = []planmodifier.String{stringplanmodifier.RequiresReplaceIf(storageReplaces,
			"Changing storage alone replaces the workspace; changed together with node it moves in place.",
			"Changing `storage` alone replaces the workspace; changed together with `node` it moves in place."),
			stringplanmodifier.UseStateForUnknown()}
		a.Validators = []validator.String{storageIDRule()}
	})
	setString(attrs, "team", func(a *schema.StringAttribute) {
		a.PlanModifiers = []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	})
	setInt64(attrs, "holder_vmid", func(a *schema.Int64Attribute) {
		a.PlanModifiers = []planmodifier.Int64{int64planmodifier.UseStateForUnknown()}
	})
	// Changing it moves the holder in place (a move keeps the data).
	setString(attrs, "node", func(a *schema.StringAttribute) {
		a.Optional = true
		a.PlanModifiers = []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	})
	// Only a sandbox or session attaches or detaches it, never this resource's update.
	setString(attrs, "attached_sandbox", func(a *schema.StringAttribute) {
		a.PlanModifiers = []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	})
	setNumber(attrs, "size_gb", func(a *schema.NumberAttribute) {
		a.Computed, a.Required = false, true
		a.Validators = []validator.Number{sizeRule{}}
	})
	attrs["deletion_protection"] = schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(true),
		MarkdownDescription: "Refuse to delete the workspace (default `true`). To destroy or replace it, set `false` and apply first; the setting lives in the state, so it must be applied before the destroy."}
	attrs["force_destroy"] = schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(false),
		MarkdownDescription: "Delete the workspace even if it still has snapshots, which are deleted with it (default `false`: deleting a workspace with snapshots fails and names them)."}
	attrs["timeouts"] = timeouts.Attributes(ctx, timeouts.Opts{Create: true, Update: true, Delete: true})
	resp.Schema = schema.Schema{
		MarkdownDescription: "A persistent workspace: the durable `/work` volume that outlives sandboxes. Proxmox-wise it is a disk owned by a " +
			"never-started holder VM, so destroying a sandbox never frees it. **Destroying this resource destroys the data**, " +
			"so it is refused while `deletion_protection` is true (the default), and a workspace that still has snapshots is " +
			"deleted only with `force_destroy = true`. A plan that replaces the workspace warns that its data is lost.",
		Attributes: attrs,
	}
}

func (r *workspaceResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.c = clientFrom(req.ProviderData, &resp.Diagnostics)
}

// ModifyPlan checks a new workspace's name with agentd's whole rule and a new
// storage against the storages agentd allows, refuses to shrink (a
// replacement would destroy the data), and warns when the plan replaces the
// workspace.
func (r *workspaceResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	checkNewName(ctx, req, resp, validate.WorkspaceName)
	if req.Plan.Raw.IsNull() {
		return
	}
	var planned, current types.String
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, path.Root("storage"), &planned)...)
	if !req.State.Raw.IsNull() {
		resp.Diagnostics.Append(req.State.GetAttribute(ctx, path.Root("storage"), &current)...)
	}
	if !resp.Diagnostics.HasError() && !planned.Equal(current) {
		checkStorage(ctx, r.c, &resp.Diagnostics, path.Root("storage"), planned)
	}
	var node, stateNode types.String
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, path.Root("node"), &node)...)
	if !req.State.Raw.IsNull() {
		resp.Diagnostics.Append(req.State.GetAttribute(ctx, path.Root("node"), &stateNode)...)
	}
	if !resp.Diagnostics.HasError() && !node.Equal(stateNode) {
		checkNode(ctx, r.c, &resp.Diagnostics, node)
	}
	if req.State.Raw.IsNull() {
		return
	}
	var plan, state workspaceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if why := replacedBy(plan, state); why != "" {
		detail := fmt.Sprintf("The plan replaces workspace %s (%s): the new workspace starts empty, and the data on the current volume "+
			"and its snapshots are deleted.", state.Name.ValueString(), why)
		if state.DeletionProtection.ValueBool() {
			detail += " deletion_protection is true, so the apply will fail before anything is deleted; set deletion_protection = false and apply first if the data may go."
		}
		resp.Diagnostics.AddWarning("Workspace Will Be Replaced", detail)
	}
	if plan.SizeGB.IsUnknown() {
		return
	}
	if gib(plan.SizeGB) < gib(state.SizeGB) && plan.Name.Equal(state.Name) {
		resp.Diagnostics.AddAttributeError(path.Root("size_gb"), "Workspace Cannot Shrink",
			fmt.Sprintf("workspace %s is %d GiB; volumes can grow but never shrink (planned %d GiB). Keep the size, or create a new workspace and copy the data.",
				state.Name.ValueString(), gib(state.SizeGB), gib(plan.SizeGB)))
	}
}

// replacedBy names the change that makes the plan replace the workspace, if
// one does (the attributes whose plan modifiers require replacement).
func replacedBy(plan, state workspaceModel) string {
	switch {
	case !plan.Name.IsUnknown() && !plan.Name.Equal(state.Name):
		return fmt.Sprintf("name %s → %s", state.Name.ValueString(), plan.Name.ValueString())
	case !plan.Storage.IsUnknown() && !plan.Storage.IsNull() && !plan.Storage.Equal(state.Storage) && !moves(plan.Node, state.Node):
		return fmt.Sprintf("storage %s → %s", state.Storage.ValueString(), plan.Storage.ValueString())
	}
	return ""
}

// moves reports whether the planned node differs from the state's: the
// update then migrates the holder (and takes a changed storage with it).
func moves(plan, state types.String) bool {
	return !plan.IsNull() && !plan.IsUnknown() && !plan.Equal(state)
}

// storageReplaces: a new storage replaces the workspace unless the node
// changes too (a move copies the volume onto the storage there).
func storageReplaces(ctx context.Context, req planmodifier.StringRequest, resp *stringplanmodifier.RequiresReplaceIfFuncResponse) {
	if req.ConfigValue.IsNull() || req.StateValue.IsNull() || req.PlanValue.Equal(req.StateValue) {
		return
	}
	var node, stateNode types.String
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("node"), &node)...)
	resp.Diagnostics.Append(req.State.GetAttribute(ctx, path.Root("node"), &stateNode)...)
	resp.RequiresReplace = !moves(node, stateNode)
}

// gib reads size_gb, which the validator has checked is a whole number.
func gib(n types.Number) int64 {
	if n.IsNull() || n.IsUnknown() {
		return 0
	}
	v, _ := n.ValueBigFloat().Int64()
	return v
}

func (m *workspaceModel) fromAPI(w *api.Workspace) {
	m.workspaceObject.fromAPI(w)
	m.SizeGB = types.NumberValue(big.NewFloat(float64(w.SizeGB)))
}

func (r *workspaceResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan workspaceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := plan.Timeouts.Create(ctx, 10*time.Minute)
	resp.Diagnostics.Append(d...)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	w, err := r.c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: plan.Name.ValueString(), SizeGB: int(gib(plan.SizeGB)),
		Storage: plan.Storage.ValueString(), Node: plan.Node.ValueString()})
	if err != nil {
		resp.Diagnostics.AddError("Unable to Create Workspace", err.Error())
		return
	}
	plan.fromAPI(w)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *workspaceResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state workspaceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	w, err := r.c.Workspace(ctx, state.ID.ValueString())
	if client.IsNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Unable to Read Workspace", err.Error())
		return
	}
	state.fromAPI(w)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *workspaceResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state workspaceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := plan.Timeouts.Update(ctx, 10*time.Minute)
	resp.Diagnostics.Append(d...)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	id := state.ID.ValueString()
	w, err := r.c.Workspace(ctx, id)
	if err == nil && moves(plan.Node, types.StringValue(w.Node)) {
		move := api.MoveWorkspaceRequest{Node: plan.Node.ValueString()}
		if !plan.Storage.IsNull() && !plan.Storage.IsUnknown() && plan.Storage.ValueString() != w.Storage {
			move.Storage = plan.Storage.ValueString()
		}
		_, err = r.c.MoveWorkspace(ctx, id, move)
	}
	if err == nil && gib(plan.SizeGB) != gib(state.SizeGB) {
		_, err = r.c.ResizeWorkspace(ctx, id, api.ResizeWorkspaceRequest{SizeGB: int(gib(plan.SizeGB))})
	}
	if err == nil {
		// Read back: the state holds what agentd has after every change.
		w, err = r.c.Workspace(ctx, id)
	}
	if err != nil {
		resp.Diagnostics.AddError("Unable to Update Workspace", err.Error())
		return
	}
	plan.fromAPI(w)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *workspaceResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state workspaceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := state.Timeouts.Delete(ctx, 10*time.Minute)
	resp.Diagnostics.Append(d...)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	name := state.Name.ValueString()
	if state.DeletionProtection.IsNull() || state.DeletionProtection.ValueBool() {
		resp.Diagnostics.AddError("Unable to Delete Workspace",
			fmt.Sprintf("workspace %s has deletion_protection = true, and deleting it destroys its data. To delete it, set "+
				"deletion_protection = false in its resource block and run terraform apply, then destroy it (or apply the change that replaces it).", name))
		return
	}
	if !state.ForceDestroy.ValueBool() {
		snaps, err := r.c.Snapshots(ctx, state.ID.ValueString())
		if client.IsNotFound(err) {
			return
		}
		if err != nil {
			resp.Diagnostics.AddError("Unable to Delete Workspace", fmt.Sprintf("listing the snapshots of workspace %s: %v", name, err))
			return
		}
		if len(snaps) > 0 {
			names := make([]string, len(snaps))
			for i, s := range snaps {
				names[i] = s.Name
			}
			resp.Diagnostics.AddError("Unable to Delete Workspace",
				fmt.Sprintf("workspace %s still has %d snapshot(s) (%s), which would be deleted with it. Delete them first "+
					"(agentd workspace snapshot delete %s NAME), or set force_destroy = true and apply, then destroy it.",
					name, len(snaps), strings.Join(names, ", "), name))
			return
		}
	}
	if _, err := r.c.DeleteWorkspace(ctx, state.ID.ValueString()); err != nil && !client.IsNotFound(err) {
		resp.Diagnostics.AddError("Unable to Delete Workspace", err.Error())
	}
}

// ImportState accepts a workspace id, holder VMID or name.
func (r *workspaceResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	w, err := r.c.Workspace(ctx, req.ID)
	if err != nil {
		resp.Diagnostics.AddError("Unable to Import Workspace", fmt.Sprintf("%q: %v", req.ID, err))
		return
	}
	if !importedMatches(&resp.Diagnostics, "Workspace", req.ID, w.ID, w.HolderVMID, w.Name) {
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), w.ID)...)
	// The settings live only in Terraform: an imported workspace starts at
	// the defaults, so it is protected as one created by Terraform is.
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("deletion_protection"), true)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("force_destroy"), false)...)
}
