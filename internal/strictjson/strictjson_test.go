package strictjson

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

type inner struct {
	Size int `json:"size"`
}

type embedded struct {
	Note string `json:"note,omitempty"`
}

type doc struct {
	embedded
	Name   string            `json:"name"`
	Tags   []string          `json:"tags,omitempty"`
	Disks  []inner           `json:"disks,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	Opt    *inner            `json:"opt,omitempty"`
	Skip   string            `json:"-"`
}

func TestDecode(t *testing.T) {
	cases := []struct {
		in, field, msg string // msg "" means accepted
	}{
		{`{"name":"a","tags":["x"],"disks":[{"size":1}],"labels":{"k":"v"},"opt":{"size":2},"note":"n"}`, "", ""},
		{`  {"name":"a"}  `, "", ""},
		{`{"Name":"a"}`, "Name", `did you mean "name"`},
		{`{"NAME":"a"}`, "NAME", "case-sensitive"},
		{`{"name":"a","name":"b"}`, "name", "duplicate key"},
		{`{"name":"a","Name":"b"}`, "Name", "case-sensitive"},
		{`{"disks":[{"size":1,"size":2}]}`, "disks[0].size", "duplicate key"},
		{`{"disks":[{"Size":1}]}`, "disks[0].Size", "case-sensitive"},
		{`{"opt":{"SIZE":1}}`, "opt.SIZE", "case-sensitive"},
		{`{"labels":{"k":"v","k":"w"}}`, "labels.k", "duplicate key"},
		{`{"Note":"x"}`, "Note", "case-sensitive"},
		{`{"Skip":"x"}`, "Skip", "unknown field"},
		{`{"colour":"red"}`, "colour", "unknown field"},
		{`{"name":"a"} {"name":"b"}`, "", "data after the object"},
		{`{"name":"a"`, "", "end of JSON"},
	}
	for _, tc := range cases {
		var d doc
		err := Decode([]byte(tc.in), &d)
		if tc.msg == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.in, err)
			}
			continue
		}
		var se *Error
		if !errors.As(err, &se) || se.Field != tc.field || !strings.Contains(se.Msg, tc.msg) {
			t.Errorf("%s: got %v (%#v), want field %q with %q", tc.in, err, se, tc.field, tc.msg)
		}
	}
	// Type errors still come from encoding/json, with the field.
	var d doc
	var te *json.UnmarshalTypeError
	if err := Decode([]byte(`{"name":1}`), &d); !errors.As(err, &te) || te.Field != "name" {
		t.Errorf("type error: %v", err)
	}
}
