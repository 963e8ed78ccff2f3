package provider

import (
	"context"
	"math/big"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

// TestWorkspaceReplaceWarning: a plan that replaces a workspace warns that
// its data is lost (and, when protected, that the apply will refuse).
func TestWorkspaceReplaceWarning(t *testing.T) {
	ctx := context.Background()
	r := &workspaceResource{}
	var sr resource.SchemaResponse
	r.Schema(ctx, resource.SchemaRequest{}, &sr)
	sch := sr.Schema
	to := sch.Attributes["timeouts"].GetType().(timeouts.Type).AttrTypes
	model := func(name, storage string, protect bool) workspaceModel {
		return workspaceModel{workspaceObject: workspaceObject{ID: types.StringValue("ws-1"), Name: types.StringValue(name),
			Storage: types.StringValue(storage), HolderVMID: types.Int64Value(100), AttachedSandbox: types.StringNull()},
			SizeGB:             types.NumberValue(big.NewFloat(5)),
			DeletionProtection: types.BoolValue(protect), ForceDestroy: types.BoolValue(false),
			Timeouts: timeouts.Value{Object: types.ObjectNull(map[string]attr.Type(to))}}
	}
	for _, c := range []struct {
		name        string
		state, plan workspaceModel
		want        []string // substrings of the warning; nil = no warning
	}{
		{"resize", model("w", "local-lvm", true), func() workspaceModel {
			m := model("w", "local-lvm", true)
			m.SizeGB = types.NumberValue(big.NewFloat(6))
			return m
		}(), nil},
		{"rename", model("w", "local-lvm", false), model("w2", "local-lvm", false), []string{"replaces workspace w (name w → w2)", "data"}},
		{"storage", model("w", "local-lvm", true), model("w", "local-zfs", true), []string{"storage local-lvm → local-zfs", "deletion_protection is true"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			state := tfsdk.State{Schema: sch, Raw: tftypes.NewValue(sch.Type().TerraformType(ctx), nil)}
			plan := tfsdk.Plan{Schema: sch, Raw: tftypes.NewValue(sch.Type().TerraformType(ctx), nil)}
			if d := state.Set(ctx, &c.state); d.HasError() {
				t.Fatal(d)
			}
			if d := plan.Set(ctx, &c.plan); d.HasError() {
				t.Fatal(d)
			}
			resp := &resource.ModifyPlanResponse{Plan: plan}
			r.ModifyPlan(ctx, resource.ModifyPlanRequest{State: state, Plan: plan}, resp)
			if resp.Diagnostics.HasError() {
				t.Fatal(resp.Diagnostics)
			}
			w := resp.Diagnostics.Warnings()
			if c.want == nil {
				if len(w) != 0 {
					t.Fatalf("unexpected warnings %v", w)
				}
				return
			}
			if len(w) != 1 || w[0].Summary() != "Workspace Will Be Replaced" {
				t.Fatalf("warnings %v", w)
			}
			for _, s := range c.want {
				if !strings.Contains(w[0].Detail(), s) {
					t.Errorf("warning %q lacks %q", w[0].Detail(), s)
				}
			}
		})
	}
}
