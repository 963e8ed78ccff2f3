// Package strictjson decodes JSON the way agentd documents it: field names
// match their tags exactly (encoding/json alone matches them
// case-insensitively), a key may appear once per object (encoding/json keeps
// the last), unknown fields are errors and nothing may follow the value.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
)

// Error is a problem with one field (Field is its dotted path, "" for the
// document itself).
type Error struct {
	Field string
	Msg   string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// Decode decodes data into v (a pointer) strictly. Type errors come back as
// *json.UnmarshalTypeError, key problems as *Error.
func Decode(data []byte, v any) error {
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer {
		return errors.New("strictjson: Decode needs a pointer")
	}
	// The key check runs first: a duplicate or case-variant key must be
	// refused even when the value it carries would decode.
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := walk(dec, t.Elem(), ""); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &Error{Msg: "data after the object (a body holds one JSON value)"}
	}
	std := json.NewDecoder(bytes.NewReader(data))
	std.DisallowUnknownFields()
	return std.Decode(v)
}

// walk reads one value from dec, checking the keys of every object against
// t (nil or an interface: any key, still once).
func walk(dec *json.Decoder, t reflect.Type, path string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && reflect.PointerTo(t).Implements(unmarshaler) {
		t = nil // decodes itself: only the duplicate check applies
	}
	tok, err := dec.Token()
	if err != nil {
		return syntaxErr(err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil // a scalar: encoding/json checks its type
	}
	switch d {
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := walk(dec, elem, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, err := dec.Token()
		return syntaxErr(err)
	case '{':
		var fields map[string]reflect.Type
		var elem reflect.Type
		if t != nil {
			switch t.Kind() {
			case reflect.Struct:
				fields = fieldsOf(t)
			case reflect.Map:
				elem = t.Elem()
			}
		}
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return syntaxErr(err)
			}
			key, _ := kt.(string)
			kp := key
			if path != "" {
				kp = path + "." + key
			}
			if seen[key] {
				return &Error{Field: kp, Msg: "duplicate key"}
			}
			seen[key] = true
			next := elem
			if fields != nil {
				ft, ok := fields[key]
				if !ok {
					for name := range fields {
						if strings.EqualFold(name, key) {
							return &Error{Field: kp, Msg: fmt.Sprintf("unknown field (field names are case-sensitive: did you mean %q?)", name)}
						}
					}
					return &Error{Field: kp, Msg: "unknown field"}
				}
				next = ft
			}
			if err := walk(dec, next, kp); err != nil {
				return err
			}
		}
		_, err := dec.Token()
		return syntaxErr(err)
	}
	return nil
}

func syntaxErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, io.EOF) {
		return &Error{Msg: "unexpected end of JSON input"}
	}
	return &Error{Msg: "invalid JSON: " + err.Error()}
}

var unmarshaler = reflect.TypeFor[json.Unmarshaler]()

var fieldCache sync.Map // reflect.Type → map[string]reflect.Type

// fieldsOf maps the JSON names of a struct's fields (embedded structs'
// fields promoted, as encoding/json does) to their types.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if v, ok := fieldCache.Load(t); ok {
		return v.(map[string]reflect.Type)
	}
	out := map[string]reflect.Type{}
	var add func(reflect.Type)
	add = func(t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" {
				ft := f.Type
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					add(ft)
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if _, dup := out[name]; !dup {
				out[name] = f.Type
			}
		}
	}
	add(t)
	fieldCache.Store(t, out)
	return out
}
