package provider

import (
	"context"
	"math/big"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

func TestStringRules(t *testing.T) {
	p := path.Root("x")
	for _, c := range []struct {
		name string
		v    validator.String
		in   types.String
		want string // "" = accepted
	}{
		{"sandbox name", nameChars("Sandbox", validate.MaxSandboxName), types.StringValue("web-1"), ""},
		{"bad sandbox name", nameChars("Sandbox", validate.MaxSandboxName), types.StringValue("Bad_Name!"), "lowercase letters"},
		{"70 characters", nameChars("Sandbox", validate.MaxSandboxName), types.StringValue(strings.Repeat("a", 70)), "1-63"},
		// Names from before the rule stay plannable: see checkNewName.
		{"legacy all-digit name", nameChars("Sandbox", validate.MaxSandboxName), types.StringValue("100"), ""},
		{"53-character workspace", nameChars("Workspace", validate.MaxWorkspaceName), types.StringValue(strings.Repeat("w", 53)), "1-52"},
		{"unknown is not checked", nameChars("Sandbox", validate.MaxSandboxName), types.StringUnknown(), ""},
		{"null is not checked", nameChars("Sandbox", validate.MaxSandboxName), types.StringNull(), ""},
		{"ttl", ttlRule(), types.StringValue("90m"), ""},
		{"ttl 0", ttlRule(), types.StringValue("0"), ""},
		{"ttl in words", ttlRule(), types.StringValue("2 hours"), "not a duration"},
		{"negative ttl", ttlRule(), types.StringValue("-1h"), "at least 1m"},
		{"ttl in days", ttlRule(), types.StringValue("1d"), "not a duration"},
		{"tag", tagRule(), types.StringValue("team-a"), ""},
		{"reserved tag", tagRule(), types.StringValue("agentlab"), "reserved"},
		{"storage", storageIDRule(), types.StringValue("local-zfs"), ""},
		{"storage with options", storageIDRule(), types.StringValue("local-lvm,foo=bar"), "not a Proxmox storage id"},
		{"snapshot", snapshotNameRule(), types.StringValue("before-upgrade"), ""},
		{"snapshot starting with a digit", snapshotNameRule(), types.StringValue("9bad"), "starting with a letter"},
		{"snapshot current", snapshotNameRule(), types.StringValue("current"), "reserved by Proxmox"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := &validator.StringResponse{}
			c.v.ValidateString(context.Background(), validator.StringRequest{Path: p, ConfigValue: c.in}, resp)
			checkDiags(t, resp.Diagnostics, p, c.want)
		})
	}
}

func TestSizeRule(t *testing.T) {
	p := path.Root("size_gb")
	for in, want := range map[float64]string{1: "", 80: "", 65536: "", 0: "between 1 and 65536", -5: "got -5", 10000000: "got 10000000",
		1.5: "whole number of GiB, got 1.5", 80.25: "got 80.25"} {
		resp := &validator.NumberResponse{}
		sizeRule{}.ValidateNumber(context.Background(), validator.NumberRequest{Path: p, ConfigValue: types.NumberValue(big.NewFloat(in))}, resp)
		checkDiags(t, resp.Diagnostics, p, want)
	}
}

func checkDiags(t *testing.T, d diag.Diagnostics, p path.Path, want string) {
	t.Helper()
	if want == "" {
		if d.HasError() {
			t.Fatalf("rejected: %v", d)
		}
		return
	}
	if len(d) != 1 || !d.HasError() {
		t.Fatalf("want one error containing %q, got %v", want, d)
	}
	withPath, ok := d[0].(diag.DiagnosticWithPath)
	if !ok || !withPath.Path().Equal(p) {
		t.Fatalf("error is not on %s: %v", p, d[0])
	}
	if !strings.Contains(d[0].Detail(), want) || strings.HasPrefix(d[0].Detail(), p.String()+":") {
		t.Fatalf("detail %q: want %q, without the field name (Terraform shows the path)", d[0].Detail(), want)
	}
}

// An agentd older than the reference rule could answer an import with the
// wrong object; the provider refuses to bind it.
func TestImportedMatches(t *testing.T) {
	for _, c := range []struct {
		ref, id string
		vmid    int
		name    string
		ok      bool
	}{
		{"100", "sbx-a", 100, "web", true},
		{"100", "sbx-b", 101, "100", false}, // the old lookup's answer: a name match
		{"0100", "sbx-a", 100, "web", false},
		{"sbx-a", "sbx-a", 100, "web", true},
		{"sbx-a", "sbx-b", 101, "x", false},
		{"sbx-legacy", "sbx-c", 102, "sbx-legacy", true}, // a legacy name that looks like an id
		{"job-0123456789", "sbx-d", 103, "job-0123456789", true},
		{"web", "sbx-a", 100, "web", true},
		{"web", "sbx-a", 100, "web2", false},
		{"300", "ses-a", 0, "300", false}, // sessions have no VMID
	} {
		var d diag.Diagnostics
		if got := importedMatches(&d, "Sandbox", c.ref, c.id, c.vmid, c.name); got != c.ok || d.HasError() == c.ok {
			t.Errorf("importedMatches(%q → %s/%d/%s) = %t, %v", c.ref, c.id, c.vmid, c.name, got, d)
		}
	}
}
