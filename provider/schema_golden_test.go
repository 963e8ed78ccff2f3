package provider

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"reflect"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/schema.golden.json from the current schemas")

// TestSchemaGolden pins every schema: the protocol schema Terraform sees
// (GetProviderSchema) and, per attribute, what the protocol does not carry:
// plan modifiers, validators, defaults and custom types. A change to any of
// them fails here; rerun with -update when it is intended.
func TestSchemaGolden(t *testing.T) {
	ctx := context.Background()
	srv, err := providerserver.NewProtocol6WithError(New("test")())()
	if err != nil {
		t.Fatal(err)
	}
	ps, err := srv.GetProviderSchema(ctx, &tfprotov6.GetProviderSchemaRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ps.Diagnostics) > 0 {
		t.Fatalf("diagnostics: %+v", ps.Diagnostics)
	}
	p := New("test")()
	fw := map[string]any{}
	var pr provider.SchemaResponse
	p.Schema(ctx, provider.SchemaRequest{}, &pr)
	fw["provider"] = dumpSchema(ctx, reflect.ValueOf(pr.Schema))
	var meta provider.MetadataResponse
	p.Metadata(ctx, provider.MetadataRequest{}, &meta)
	for _, f := range p.Resources(ctx) {
		r := f()
		var m resource.MetadataResponse
		r.Metadata(ctx, resource.MetadataRequest{ProviderTypeName: meta.TypeName}, &m)
		var s resource.SchemaResponse
		r.Schema(ctx, resource.SchemaRequest{}, &s)
		fw["resource."+m.TypeName] = dumpSchema(ctx, reflect.ValueOf(s.Schema))
	}
	for _, f := range p.DataSources(ctx) {
		d := f()
		var m datasource.MetadataResponse
		d.Metadata(ctx, datasource.MetadataRequest{ProviderTypeName: meta.TypeName}, &m)
		var s datasource.SchemaResponse
		d.Schema(ctx, datasource.SchemaRequest{}, &s)
		fw["data."+m.TypeName] = dumpSchema(ctx, reflect.ValueOf(s.Schema))
	}
	got, err := json.MarshalIndent(map[string]any{
		"protocol":  map[string]any{"provider": ps.Provider, "resources": ps.ResourceSchemas, "data_sources": ps.DataSourceSchemas},
		"framework": fw,
	}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	const file = "testdata/schema.golden.json"
	if *updateGolden {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		_ = os.WriteFile(file+".got", got, 0o644)
		t.Fatalf("schemas differ from %s (see %s.got); rerun with -update if the change is intended", file, file)
	}
}

type describer interface {
	Description(context.Context) string
}

// dumpSchema renders a framework schema value: exported fields that are set,
// and the type and description of each plan modifier, validator and default.
func dumpSchema(ctx context.Context, v reflect.Value) any {
	if !v.IsValid() {
		return nil
	}
	if v.Kind() == reflect.Interface || v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return nil
		}
	}
	if v.CanInterface() {
		if d, ok := v.Interface().(describer); ok {
			return map[string]any{"type": fmt.Sprintf("%T", d), "description": d.Description(ctx)}
		}
	}
	switch v.Kind() {
	case reflect.Interface, reflect.Pointer:
		return dumpSchema(ctx, v.Elem())
	case reflect.Struct:
		out := map[string]any{"_type": v.Type().String()}
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			if !f.IsExported() || v.Field(i).IsZero() {
				continue
			}
			out[f.Name] = dumpSchema(ctx, v.Field(i))
		}
		if s, ok := v.Interface().(fmt.Stringer); ok {
			out["_string"] = s.String()
		}
		return out
	case reflect.Slice, reflect.Array:
		out := make([]any, v.Len())
		for i := range out {
			out[i] = dumpSchema(ctx, v.Index(i))
		}
		return out
	case reflect.Map:
		out := map[string]any{}
		for _, k := range v.MapKeys() {
			out[fmt.Sprint(k.Interface())] = dumpSchema(ctx, v.MapIndex(k))
		}
		return out
	case reflect.Func:
		return v.Type().String()
	default:
		return v.Interface()
	}
}
