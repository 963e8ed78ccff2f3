package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
)

// Facts extraction (-extract): the official schema reduced to the machine
// facts the simulator may ever validate against, vendored in the repository
// (apischema/schema/pve-api-facts.json) so `make schema` works from a clone.
// It keeps the tree shape of pve-api-schema.json (path, info by method,
// children) so gen reads either file; it keeps every path and method and,
// per parameter, type, optional, enum, format (property-string definitions
// recursively), bounds, lengths, pattern, default, default_key, alias,
// keyAlias, requires, items, oneOf, instance-types and type-property, and,
// per method, additionalProperties, allowtoken, protected and proxyto. Every
// description, typetext, title, permission text and return description is
// dropped, and so is a default written as prose instead of a value.

var factKeys = map[string]bool{"type": true, "optional": true, "enum": true, "format": true,
	"minimum": true, "maximum": true, "min": true, "max": true, "maxLength": true, "minLength": true,
	"pattern": true, "default": true, "default_key": true, "alias": true, "keyAlias": true,
	"requires": true, "items": true, "oneOf": true, "instance-types": true, "type-property": true}

// factualDefault matches defaults that are values: a word, or a list of words.
var factualDefault = regexp.MustCompile(`^[^\s,]*(, ?[^\s,]+)*$`)

type factNode struct {
	Path     string                `json:"path"`
	Info     map[string]factMethod `json:"info,omitempty"`
	Children []factNode            `json:"children,omitempty"`
}

type factMethod struct {
	AllowToken any        `json:"allowtoken,omitempty"`
	Protected  any        `json:"protected,omitempty"`
	ProxyTo    any        `json:"proxyto,omitempty"`
	Parameters factParams `json:"parameters"`
}

type factParams struct {
	AdditionalProperties any            `json:"additionalProperties,omitempty"`
	Properties           map[string]any `json:"properties,omitempty"`
}

type srcNode struct {
	Path     string                     `json:"path"`
	Info     map[string]json.RawMessage `json:"info"`
	Children []srcNode                  `json:"children"`
}

type srcMethod struct {
	AllowToken any `json:"allowtoken"`
	Protected  any `json:"protected"`
	ProxyTo    any `json:"proxyto"`
	Parameters struct {
		AdditionalProperties any                       `json:"additionalProperties"`
		Properties           map[string]map[string]any `json:"properties"`
	} `json:"parameters"`
}

func extractFacts(schemaPath, out string) error {
	raw, err := os.ReadFile(schemaPath)
	if err != nil {
		return err
	}
	var roots []srcNode
	if err := json.Unmarshal(raw, &roots); err != nil {
		return fmt.Errorf("parse %s: %w", schemaPath, err)
	}
	facts := make([]factNode, 0, len(roots))
	for _, r := range roots {
		n, err := factsOf(r)
		if err != nil {
			return err
		}
		facts = append(facts, n)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	if err := enc.Encode(facts); err != nil {
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

func factsOf(n srcNode) (factNode, error) {
	f := factNode{Path: n.Path}
	for m, rawInfo := range n.Info {
		var mi srcMethod
		if err := json.Unmarshal(rawInfo, &mi); err != nil {
			return f, fmt.Errorf("%s %s: %w", m, n.Path, err)
		}
		fm := factMethod{AllowToken: mi.AllowToken, Protected: mi.Protected, ProxyTo: mi.ProxyTo,
			Parameters: factParams{AdditionalProperties: mi.Parameters.AdditionalProperties}}
		if len(mi.Parameters.Properties) > 0 {
			fm.Parameters.Properties = map[string]any{}
			for name, prop := range mi.Parameters.Properties {
				fm.Parameters.Properties[name] = factsOfProp(prop)
			}
		}
		if f.Info == nil {
			f.Info = map[string]factMethod{}
		}
		f.Info[m] = fm
	}
	for _, c := range n.Children {
		cf, err := factsOf(c)
		if err != nil {
			return f, err
		}
		f.Children = append(f.Children, cf)
	}
	return f, nil
}

// factsOfProp keeps a property's fact keys; a format, items or oneOf that is
// a schema (or a map of sub-key schemas) is reduced the same way.
func factsOfProp(prop map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range prop {
		if !factKeys[k] {
			continue
		}
		switch k {
		case "default":
			if str, ok := v.(string); ok && !factualDefault.MatchString(str) {
				continue // a default described in words ("clone limit from datacenter …")
			}
		case "format":
			if sub, ok := v.(map[string]any); ok {
				fm := map[string]any{}
				for sk, sv := range sub {
					if m, ok := sv.(map[string]any); ok {
						fm[sk] = factsOfProp(m)
					}
				}
				v = fm
			}
		case "items":
			if m, ok := v.(map[string]any); ok {
				v = factsOfProp(m)
			}
		case "oneOf":
			if list, ok := v.([]any); ok {
				var l []any
				for _, e := range list {
					if m, ok := e.(map[string]any); ok {
						l = append(l, factsOfProp(m))
					}
				}
				v = l
			}
		}
		out[k] = v
	}
	return out
}
