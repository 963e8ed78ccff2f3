// Package strictyaml decodes YAML into structs the strict way operators need:
// unknown keys, duplicate keys and values of the wrong type are errors that
// name the file, the line and the full key (e.g. "resources.cores").
package strictyaml

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Error is one decoding problem.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Key == "" {
		return fmt.Sprintf("%s: %s", loc, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Key, e.Msg)
}

var durationType = reflect.TypeOf(time.Duration(0))

// Decode decodes one YAML document (data) into out, a pointer to a struct whose
// fields carry `yaml:"name"` tags. Keys missing from data keep out's values, so
// callers pre-fill defaults.
func Decode(file string, data []byte, out any) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return &Error{File: file, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if doc.Kind == 0 {
		return nil // empty file
	}
	return DecodeNode(file, &doc, out)
}

// DecodeNode decodes an already parsed node (a document or a mapping).
func DecodeNode(file string, n *yaml.Node, out any) error {
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	d := decoder{file: file}
	return d.value(n, reflect.ValueOf(out).Elem(), "")
}

type decoder struct{ file string }

func (d decoder) errf(n *yaml.Node, key, format string, args ...any) error {
	return &Error{File: d.file, Line: n.Line, Key: key, Msg: fmt.Sprintf(format, args...)}
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

func (d decoder) value(n *yaml.Node, v reflect.Value, key string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	switch {
	case v.Type() == durationType:
		if n.Kind != yaml.ScalarNode {
			return d.errf(n, key, "want a duration such as 30s, 10m or 2h")
		}
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			return d.errf(n, key, "invalid duration %q: want a number with a unit such as 30s, 10m or 2h", n.Value)
		}
		if dur < 0 {
			return d.errf(n, key, "duration %q must not be negative", n.Value)
		}
		v.SetInt(int64(dur))
		return nil
	case v.Kind() == reflect.Struct:
		return d.mapping(n, v, key)
	case v.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			return d.errf(n, key, "want a mapping of key: value")
		}
		m := reflect.MakeMap(v.Type())
		for i := 0; i+1 < len(n.Content); i += 2 {
			ev := reflect.New(v.Type().Elem()).Elem()
			k := n.Content[i].Value
			if err := d.value(n.Content[i+1], ev, join(key, k)); err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(k), ev)
		}
		v.Set(m)
		return nil
	case v.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return d.errf(n, key, "want a list")
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			if err := d.value(c, s.Index(i), fmt.Sprintf("%s[%d]", key, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case v.Kind() == reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		if err := d.value(n, p.Elem(), key); err != nil {
			return err
		}
		v.Set(p)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return d.errf(n, key, "want a single value, not a %s", kindName(n.Kind))
	}
	switch v.Kind() {
	case reflect.String:
		if n.Tag != "!!str" && n.Tag != "!!int" && n.Tag != "!!float" {
			return d.errf(n, key, "want a string, got %q (quote it)", n.Value)
		}
		v.SetString(n.Value)
	case reflect.Bool:
		if n.Tag != "!!bool" {
			return d.errf(n, key, "want true or false, got %q", n.Value)
		}
		b, _ := strconv.ParseBool(strings.ToLower(n.Value))
		v.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		i, err := strconv.ParseInt(n.Value, 10, 64)
		if n.Tag != "!!int" || err != nil {
			return d.errf(n, key, "want a whole number, got %q", n.Value)
		}
		v.SetInt(i)
	case reflect.Float64:
		f, err := strconv.ParseFloat(n.Value, 64)
		if (n.Tag != "!!float" && n.Tag != "!!int") || err != nil {
			return d.errf(n, key, "want a number, got %q", n.Value)
		}
		v.SetFloat(f)
	default:
		return d.errf(n, key, "unsupported field type %s", v.Type())
	}
	return nil
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "value"
}

func (d decoder) mapping(n *yaml.Node, v reflect.Value, key string) error {
	if n.Kind != yaml.MappingNode {
		if key == "" {
			return d.errf(n, key, "want a mapping of key: value at the top level")
		}
		return d.errf(n, key, "want a mapping of key: value")
	}
	fields := map[string]int{}
	var names []string
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		fields[tag] = i
		names = append(names, tag)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		full := join(key, kn.Value)
		idx, ok := fields[kn.Value]
		if !ok {
			return d.errf(kn, full, "unknown key (known keys: %s)", strings.Join(names, ", "))
		}
		if seen[kn.Value] {
			return d.errf(kn, full, "key appears twice")
		}
		seen[kn.Value] = true
		if err := d.value(vn, v.Field(idx), full); err != nil {
			return err
		}
	}
	return nil
}
