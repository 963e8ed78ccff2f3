package provider

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strconv"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

// Plan-time validators. Each runs a rule of internal/validate, the function
// agentd itself runs on the request, so `terraform validate` and plan reject
// exactly what apply would, with the error on the attribute.

func reason(err error) string {
	var ve *validate.Error
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return err.Error()
}

// stringRule checks a string attribute with one rule.
type stringRule struct {
	summary string // the diagnostic's title
	desc    string
	check   func(field, v string) error
}

var _ validator.String = stringRule{}

func (r stringRule) Description(context.Context) string         { return r.desc }
func (r stringRule) MarkdownDescription(context.Context) string { return r.desc }

func (r stringRule) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if err := r.check(req.Path.String(), req.ConfigValue.ValueString()); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, r.summary, reason(err))
	}
}

// nameChars checks the characters and length of a name. The rest of the name
// rule (not all digits, no id prefix) is newer than some names in use, so it
// applies only to names being created: see checkNewName.
func nameChars(kind string, max int) validator.String {
	return stringRule{summary: "Invalid " + kind + " Name",
		desc:  fmt.Sprintf("1-%d lowercase letters, digits or dashes, starting and ending with a letter or digit", max),
		check: func(f, v string) error { return validate.NameChars(f, v, max) }}
}

func ttlRule() validator.String {
	return stringRule{summary: "Invalid Lease",
		desc: "a duration of at least 1m in whole seconds (90m, 8h), or 0 for no lease",
		check: func(f, v string) error {
			_, err := validate.TTL(f, v)
			return err
		}}
}

func tagRule() validator.String {
	return stringRule{summary: "Invalid Tag", desc: "a Proxmox tag other than agentd's own", check: validate.Tag}
}

func storageIDRule() validator.String {
	return stringRule{summary: "Invalid Storage", desc: "a Proxmox storage id", check: validate.StorageID}
}

func snapshotNameRule() validator.String {
	return stringRule{summary: "Invalid Snapshot Name",
		desc: fmt.Sprintf("2-%d letters, digits, _ or -, starting with a letter", validate.MaxSnapshotName), check: validate.SnapshotName}
}

// sizeRule checks a size in GiB: a whole number within agentd's range.
type sizeRule struct{}

var _ validator.Number = sizeRule{}

func (sizeRule) Description(context.Context) string {
	return fmt.Sprintf("a whole number of GiB, %d-%d", validate.MinSizeGiB, validate.MaxSizeGiB)
}
func (r sizeRule) MarkdownDescription(ctx context.Context) string { return r.Description(ctx) }

func (sizeRule) ValidateNumber(_ context.Context, req validator.NumberRequest, resp *validator.NumberResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	f := req.ConfigValue.ValueBigFloat()
	n, acc := f.Int64()
	if !f.IsInt() || acc != big.Exact {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid Size", fmt.Sprintf("%s must be a whole number of GiB, got %s", req.Path, f.Text('g', -1)))
		return
	}
	if err := validate.SizeGiB(req.Path.String(), n); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid Size", reason(err))
	}
}

// checkNewName applies the whole name rule (check, e.g. validate.SandboxName)
// when the plan creates the object or gives it a new name. An object that
// exists keeps its name even if it predates the rule: refusing it there would
// leave no way to plan anything but its replacement.
func checkNewName(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse, check func(field, v string) error) {
	if req.Plan.Raw.IsNull() {
		return
	}
	var planned, current types.String
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, path.Root("name"), &planned)...)
	if !req.State.Raw.IsNull() {
		resp.Diagnostics.Append(req.State.GetAttribute(ctx, path.Root("name"), &current)...)
	}
	if resp.Diagnostics.HasError() || planned.IsNull() || planned.IsUnknown() || planned.Equal(current) {
		return
	}
	if err := check("name", planned.ValueString()); err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("name"), "Invalid Name", reason(err))
	}
}

// importedMatches guards an import against an agentd older than the
// reference rule (store.Lookup), whose lookup picked the most recently
// updated object among id, VMID and name matches: the object agentd returned
// must be the one the reference's shape names, or nothing is imported.
func importedMatches(diags *diag.Diagnostics, kind, ref, id string, vmid int, name string) bool {
	var ok bool
	switch validate.KindOf(ref) {
	case validate.ByID:
		ok = id == ref || name == ref // a job's sandbox is named after the job
	case validate.ByVMID:
		ok = vmid != 0 && strconv.Itoa(vmid) == ref
	default:
		ok = name == ref
	}
	if !ok {
		diags.AddError("Unable to Import "+kind,
			fmt.Sprintf("agentd resolved %q to %s %s (id %s, VMID %d), which is not what the reference names: an id-like reference must be its id, "+
				"digits its VMID, anything else its name. Upgrade agentd, or import by id.", ref, kind, name, id, vmid))
	}
	return ok
}

// int64Rule checks an Int64 attribute with one rule.
type int64Rule struct {
	summary string
	desc    string
	check   func(field string, n int64) error
}

var _ validator.Int64 = int64Rule{}

func (r int64Rule) Description(context.Context) string         { return r.desc }
func (r int64Rule) MarkdownDescription(context.Context) string { return r.desc }

func (r int64Rule) ValidateInt64(_ context.Context, req validator.Int64Request, resp *validator.Int64Response) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if err := r.check(req.Path.String(), req.ConfigValue.ValueInt64()); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, r.summary, reason(err))
	}
}

// exposeSourceRule checks a source of an exposed port, and that it is
// spelled as agentd stores it (the network, masked, with its prefix length),
// so that the read-back never differs from the configuration.
type exposeSourceRule struct{}

var _ validator.String = exposeSourceRule{}

func (exposeSourceRule) Description(context.Context) string {
	return "an IPv4 network in CIDR notation with the host bits zero, such as 192.168.1.0/24"
}
func (r exposeSourceRule) MarkdownDescription(ctx context.Context) string { return r.Description(ctx) }

func (exposeSourceRule) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	s := req.ConfigValue.ValueString()
	// public is checked with the whole configuration (ValidateConfig).
	p, err := validate.ExposeSource(req.Path.String(), s, true)
	if err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid Port Source", reason(err))
		return
	}
	if p.String() != s {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid Port Source",
			fmt.Sprintf("write %q as %q: agentd stores the network with its prefix length and the host bits zero", s, p.String()))
	}
}
