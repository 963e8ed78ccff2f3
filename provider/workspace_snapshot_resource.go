package provider

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

var _ resource.ResourceWithImportState = (*snapshotResource)(nil)

// NewWorkspaceSnapshotResource is the agentlab_workspace_snapshot factory.
func NewWorkspaceSnapshotResource() resource.Resource { return &snapshotResource{} }

type snapshotResource struct{ c *client.Client }

type snapshotModel struct {
	ID          types.String   `tfsdk:"id"`
	Workspace   types.String   `tfsdk:"workspace"`
	Name        types.String   `tfsdk:"name"`
	Description types.String   `tfsdk:"description"`
	CreatedAt   types.String   `tfsdk:"created_at"`
	Timeouts    timeouts.Value `tfsdk:"timeouts"`
}

func (r *snapshotResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_workspace_snapshot"
}

func (r *snapshotResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		MarkdownDescription: "A snapshot of a workspace (of its holder VM). The workspace must be detached when the snapshot is taken. " +
			"Restoring is deliberately not a Terraform action: it discards data, so it stays an operator command " +
			"(`agentd workspace snapshot restore WORKSPACE NAME --yes`). Raw volumes on dir storage cannot be snapshotted.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{Computed: true, MarkdownDescription: "`WORKSPACE/NAME`.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}},
			"workspace": schema.StringAttribute{Required: true, MarkdownDescription: "Workspace name.", PlanModifiers: replace},
			"name": schema.StringAttribute{Required: true, MarkdownDescription: "Snapshot name (2-40 letters, digits, `_`, `-`; starts with a letter; not `current` or `pending`).",
				PlanModifiers: replace, Validators: []validator.String{snapshotNameRule()}},
			"description": schema.StringAttribute{Optional: true, MarkdownDescription: "Free text kept with the snapshot.", PlanModifiers: replace},
			"created_at": schema.StringAttribute{Computed: true, MarkdownDescription: "When the snapshot was taken (RFC 3339).",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}},
			"timeouts": timeouts.Attributes(ctx, timeouts.Opts{Create: true, Delete: true}),
		},
	}
}

func (r *snapshotResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.c = clientFrom(req.ProviderData, &resp.Diagnostics)
}

func (m *snapshotModel) fromAPI(s *api.Snapshot) {
	m.ID = types.StringValue(s.Workspace + "/" + s.Name)
	m.Workspace, m.Name = types.StringValue(s.Workspace), types.StringValue(s.Name)
	if s.Description != "" || !m.Description.IsNull() {
		m.Description = types.StringValue(s.Description)
	}
	m.CreatedAt = types.StringValue(s.CreatedAt.UTC().Format(time.RFC3339))
}

func (r *snapshotResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan snapshotModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := plan.Timeouts.Create(ctx, 10*time.Minute)
	resp.Diagnostics.Append(d...)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := r.c.CreateSnapshot(ctx, plan.Workspace.ValueString(), api.CreateSnapshotRequest{Name: plan.Name.ValueString(), Description: plan.Description.ValueString()})
	if err != nil {
		resp.Diagnostics.AddError("Unable to Create Workspace Snapshot", err.Error())
		return
	}
	plan.fromAPI(s)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *snapshotResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state snapshotModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	s, err := r.c.Snapshot(ctx, state.Workspace.ValueString(), state.Name.ValueString())
	if client.IsNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Unable to Read Workspace Snapshot", err.Error())
		return
	}
	state.fromAPI(s)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *snapshotResource) Update(_ context.Context, _ resource.UpdateRequest, resp *resource.UpdateResponse) {
	resp.Diagnostics.AddError("Unable to Update Workspace Snapshot", "every attribute forces replacement; this is a provider bug")
}

func (r *snapshotResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state snapshotModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := state.Timeouts.Delete(ctx, 10*time.Minute)
	resp.Diagnostics.Append(d...)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := r.c.DeleteSnapshot(ctx, state.Workspace.ValueString(), state.Name.ValueString()); err != nil && !client.IsNotFound(err) {
		resp.Diagnostics.AddError("Unable to Delete Workspace Snapshot", err.Error())
	}
}

// ImportState accepts WORKSPACE/NAME.
func (r *snapshotResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	ws, name, ok := strings.Cut(req.ID, "/")
	if !ok || ws == "" || name == "" {
		resp.Diagnostics.AddError("Unable to Import Workspace Snapshot", fmt.Sprintf("want WORKSPACE/NAME, got %q", req.ID))
		return
	}
	// The workspace part is a reference like any other: store the name it
	// resolves to, as the resource's own reads and plans use it.
	w, err := r.c.Workspace(ctx, ws)
	if err != nil {
		resp.Diagnostics.AddError("Unable to Import Workspace Snapshot", fmt.Sprintf("workspace %q: %v", ws, err))
		return
	}
	if !importedMatches(&resp.Diagnostics, "Workspace", ws, w.ID, w.HolderVMID, w.Name) {
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), w.Name+"/"+name)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("workspace"), w.Name)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("name"), name)...)
}
