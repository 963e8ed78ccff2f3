package provider

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	dschema "github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
)

// TestSharedAttributesDefinedOnce: an attribute that a resource and its data
// source both have reads the same in both (the resource may only add how it
// is set, the data source's lookup key what else it accepts), and so does one
// that a data source and another's nested objects both have. A second,
// diverging definition fails here.
func TestSharedAttributesDefinedOnce(t *testing.T) {
	ctx := context.Background()
	p := New("test")()
	type described interface{ GetMarkdownDescription() string }
	res := map[string]map[string]described{}
	for _, f := range p.Resources(ctx) {
		r := f()
		var m resource.MetadataResponse
		r.Metadata(ctx, resource.MetadataRequest{ProviderTypeName: "agentlab"}, &m)
		var s resource.SchemaResponse
		r.Schema(ctx, resource.SchemaRequest{}, &s)
		res[m.TypeName] = map[string]described{}
		for n, a := range s.Schema.Attributes {
			res[m.TypeName][n] = a
		}
	}
	ds := map[string]map[string]dschema.Attribute{}
	for _, f := range p.DataSources(ctx) {
		d := f()
		var m datasource.MetadataResponse
		d.Metadata(ctx, datasource.MetadataRequest{ProviderTypeName: "agentlab"}, &m)
		var s datasource.SchemaResponse
		d.Schema(ctx, datasource.SchemaRequest{}, &s)
		ds[m.TypeName] = s.Schema.Attributes
	}
	shared := map[string]objectAttrs{"agentlab_sandbox": sandboxAttrs, "agentlab_workspace": workspaceAttrs, "agentlab_team": teamAttrs}
	pairs := 0
	for typ, dattrs := range ds {
		rattrs, ok := res[typ]
		if !ok {
			continue
		}
		for name, da := range dattrs {
			ra, ok := rattrs[name]
			if !ok {
				continue
			}
			pairs++
			rd, dd := ra.GetMarkdownDescription(), da.GetMarkdownDescription()
			sa, ok := shared[typ][name]
			if !ok {
				if rd != dd {
					t.Errorf("%s.%s is defined twice: resource %q, data source %q; define it once in %s's objectAttrs", typ, name, rd, dd, typ)
				}
				continue
			}
			if rd != sa.resourceDesc() {
				t.Errorf("%s.%s: the resource replaced the shared description: %q", typ, name, rd)
			}
			if dd != sa.desc && !((da.IsRequired() || da.IsOptional()) && strings.HasPrefix(dd, sa.desc+" ")) {
				t.Errorf("%s.%s: the data source's description %q is not the shared %q", typ, name, dd, sa.desc)
			}
		}
	}
	if pairs < 25 {
		t.Errorf("compared %d attributes in both a resource and its data source; the sandbox, the workspace and the team alone have 25", pairs)
	}
	// The list's nested profile is the single profile data source.
	nested := ds["agentlab_profiles"]["profiles"].(dschema.ListNestedAttribute).NestedObject.Attributes
	for name, a := range ds["agentlab_profile"] {
		if n, ok := nested[name]; !ok || n.GetMarkdownDescription() != a.GetMarkdownDescription() {
			t.Errorf("agentlab_profiles.profiles.%s differs from agentlab_profile.%s: %v", name, name, n)
		}
	}
}
