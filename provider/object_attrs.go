package provider

import (
	"fmt"

	dschema "github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	rschema "github.com/hashicorp/terraform-plugin-framework/resource/schema"
)

// objectAttr is one attribute of an object agentd reports (a sandbox, a
// workspace) that both its resource and its data source carry. Its type and
// descriptions are defined once; each side applies Required, Optional or
// Computed, plan modifiers and validators.
type objectAttr struct {
	int64 bool   // an Int64 attribute; otherwise a String
	desc  string // the resource's description
	// dataDesc is the data source's description where it differs: the
	// data source describes the value read, the resource also how it is set.
	dataDesc string
}

// objectAttrs are an object's shared attributes by name.
type objectAttrs map[string]objectAttr

// dataSource returns the attributes for the data source: Computed, except
// the one named by required, the data source's lookup key.
func (o objectAttrs) dataSource(required string) map[string]dschema.Attribute {
	out := make(map[string]dschema.Attribute, len(o))
	for name, a := range o {
		desc := a.desc
		if a.dataDesc != "" {
			desc = a.dataDesc
		}
		req := name == required
		if a.int64 {
			out[name] = dschema.Int64Attribute{Required: req, Computed: !req, MarkdownDescription: desc}
		} else {
			out[name] = dschema.StringAttribute{Required: req, Computed: !req, MarkdownDescription: desc}
		}
	}
	return out
}

// resource returns the attributes for the resource, all Computed; the
// resource adjusts each with setString and setInt64.
func (o objectAttrs) resource() map[string]rschema.Attribute {
	out := make(map[string]rschema.Attribute, len(o))
	for name, a := range o {
		if a.int64 {
			out[name] = rschema.Int64Attribute{Computed: true, MarkdownDescription: a.desc}
		} else {
			out[name] = rschema.StringAttribute{Computed: true, MarkdownDescription: a.desc}
		}
	}
	return out
}

// setString applies a resource's settings to a shared string attribute.
func setString(attrs map[string]rschema.Attribute, name string, set func(*rschema.StringAttribute)) {
	a, ok := attrs[name].(rschema.StringAttribute)
	if !ok {
		panic(fmt.Sprintf("attribute %s is %T, not a shared string attribute", name, attrs[name]))
	}
	set(&a)
	attrs[name] = a
}

// setInt64 applies a resource's settings to a shared Int64 attribute.
func setInt64(attrs map[string]rschema.Attribute, name string, set func(*rschema.Int64Attribute)) {
	a, ok := attrs[name].(rschema.Int64Attribute)
	if !ok {
		panic(fmt.Sprintf("attribute %s is %T, not a shared Int64 attribute", name, attrs[name]))
	}
	set(&a)
	attrs[name] = a
}
