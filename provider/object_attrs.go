package provider

import (
	"fmt"

	dschema "github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	rschema "github.com/hashicorp/terraform-plugin-framework/resource/schema"
)

// attrKind is the type of a shared attribute.
type attrKind int

const (
	kindString attrKind = iota
	kindInt64
	// kindGiB is a whole number of GiB: a Number in the resource, so that
	// 1.5 is an error on the attribute (an Int64 attribute fails converting
	// it, as a provider error), and an Int64 in the data source, which only
	// reports agentd's value.
	kindGiB
)

// objectAttr is one attribute of an object agentd reports (a sandbox, a
// workspace) that both its resource and its data source carry. Its type and
// description are defined once, so the two pages of the docs cannot drift
// apart; each side applies Required, Optional or Computed, plan modifiers
// and validators.
type objectAttr struct {
	kind attrKind
	// desc says what the value is: the whole description in the data
	// source, the start of it in the resource.
	desc string
	// set says how the resource sets or changes it (what a change does);
	// only the resource's description has it.
	set string
}

// objectAttrs are an object's shared attributes by name.
type objectAttrs map[string]objectAttr

func (a objectAttr) resourceDesc() string {
	if a.set == "" {
		return a.desc
	}
	return a.desc + " " + a.set
}

// dataSource returns the attributes for the data source: Computed, except
// the one named by required, the data source's lookup key, whose description
// gains lookup (what else the key may be).
func (o objectAttrs) dataSource(required, lookup string) map[string]dschema.Attribute {
	out := make(map[string]dschema.Attribute, len(o))
	for name, a := range o {
		desc := a.desc
		req := name == required
		if req && lookup != "" {
			desc += " " + lookup
		}
		if a.kind == kindString {
			out[name] = dschema.StringAttribute{Required: req, Computed: !req, MarkdownDescription: desc}
		} else {
			out[name] = dschema.Int64Attribute{Required: req, Computed: !req, MarkdownDescription: desc}
		}
	}
	return out
}

// resource returns the attributes for the resource, all Computed; the
// resource adjusts each with setString, setInt64 and setNumber.
func (o objectAttrs) resource() map[string]rschema.Attribute {
	out := make(map[string]rschema.Attribute, len(o))
	for name, a := range o {
		switch a.kind {
		case kindInt64:
			out[name] = rschema.Int64Attribute{Computed: true, MarkdownDescription: a.resourceDesc()}
		case kindGiB:
			out[name] = rschema.NumberAttribute{Computed: true, MarkdownDescription: a.resourceDesc()}
		default:
			out[name] = rschema.StringAttribute{Computed: true, MarkdownDescription: a.resourceDesc()}
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

// setNumber applies a resource's settings to a shared GiB attribute.
func setNumber(attrs map[string]rschema.Attribute, name string, set func(*rschema.NumberAttribute)) {
	a, ok := attrs[name].(rschema.NumberAttribute)
	if !ok {
		panic(fmt.Sprintf("attribute %s is %T, not a shared GiB attribute", name, attrs[name]))
	}
	set(&a)
	attrs[name] = a
}
