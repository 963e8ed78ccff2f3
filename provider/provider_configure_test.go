package provider_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/path"
	fwprovider "github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"github.com/agentlab/terraform-provider-agentlab/provider"
)

// configure runs the provider's Configure with the given attributes set
// (the others null), as Terraform does before any plan.
func configure(t *testing.T, attrs map[string]string) *fwprovider.ConfigureResponse {
	t.Helper()
	ctx := context.Background()
	p := provider.New("test")()
	var sr fwprovider.SchemaResponse
	p.Schema(ctx, fwprovider.SchemaRequest{}, &sr)
	typ := sr.Schema.Type().TerraformType(ctx).(tftypes.Object)
	vals := map[string]tftypes.Value{}
	for name, at := range typ.AttributeTypes {
		vals[name] = tftypes.NewValue(at, nil)
		if v, ok := attrs[name]; ok {
			vals[name] = tftypes.NewValue(at, v)
		}
	}
	resp := &fwprovider.ConfigureResponse{}
	p.Configure(ctx, fwprovider.ConfigureRequest{Config: tfsdk.Config{Schema: sr.Schema, Raw: tftypes.NewValue(typ, vals)}}, resp)
	return resp
}

// TestConfigureTokenErrors: a refused token is reported on the token
// attribute as invalid, with where to set it and where the agent keeps it,
// and without the "is agentd running?" hint, which only an agent that does
// not answer gets.
func TestConfigureTokenErrors(t *testing.T) {
	d, _ := startAgent(t)
	for _, c := range []struct {
		name  string
		token string
		want  []string
	}{
		{"wrong", strings.Repeat("x", 40), []string{"invalid token", "refused the token", d.Info.Endpoint, "token attribute (or AGENTLAB_TOKEN)", "token_file", "/var/lib/agentd/api-token"}},
		{"missing", "", []string{"missing token", "token attribute (or AGENTLAB_TOKEN)", "token_file"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("AGENTLAB_TOKEN", c.token)
			resp := configure(t, map[string]string{"endpoint": d.Info.Endpoint, "ca_cert": d.Info.CACert})
			errs := resp.Diagnostics.Errors()
			if len(errs) != 1 {
				t.Fatalf("want one error, got %v", resp.Diagnostics)
			}
			e := errs[0]
			if e.Summary() != "Invalid agentd Token" {
				t.Errorf("summary %q", e.Summary())
			}
			if wp, ok := e.(interface{ Path() path.Path }); !ok || !wp.Path().Equal(path.Root("token")) {
				t.Errorf("error is not on the token attribute: %#v", e)
			}
			for _, w := range c.want {
				if !strings.Contains(e.Detail(), w) {
					t.Errorf("detail lacks %q: %s", w, e.Detail())
				}
			}
			if strings.Contains(e.Detail(), "running?") {
				t.Errorf("a refused token got the connection hint: %s", e.Detail())
			}
			if resp.ResourceData != nil {
				t.Error("a refused token still configured the resources")
			}
		})
	}
	t.Run("right", func(t *testing.T) {
		if resp := configure(t, map[string]string{"endpoint": d.Info.Endpoint, "ca_cert": d.Info.CACert, "token": d.Info.Token}); resp.Diagnostics.HasError() || resp.ResourceData == nil {
			t.Fatalf("the right token: %v", resp.Diagnostics)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		resp := configure(t, map[string]string{"endpoint": "unix://" + filepath.Join(t.TempDir(), "none.sock")})
		if errs := resp.Diagnostics.Errors(); len(errs) != 1 || errs[0].Summary() != "Unable to Reach agentd" || !strings.Contains(errs[0].Detail(), "Is agentd running?") {
			t.Fatalf("no agent: %v", resp.Diagnostics)
		}
	})
}
