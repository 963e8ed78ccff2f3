package server

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// TestDecodeIsStrict: the documented strictness holds at the API's one
// decoder: case-variant and duplicate keys are 400s that name the field.
func TestDecodeIsStrict(t *testing.T) {
	cases := []struct {
		body, field string
	}{
		{`{"Name":"x","profile":"p"}`, "Name"},
		{`{"name":"x","NAME":"y","profile":"p"}`, "NAME"},
		{`{"name":"x","name":"y","profile":"p"}`, "name"},
		{`{"name":"x","profile":"p","tags":["a"],"tags":["b"]}`, "tags"},
		{`{"name":"x","profile":"p","Ttl":"1h"}`, "Ttl"},
	}
	for _, tc := range cases {
		var req api.CreateSandboxRequest
		r := httptest.NewRequest("POST", "/v1/sandboxes", strings.NewReader(tc.body))
		err := decode(httptest.NewRecorder(), r, &req, false)
		ae, ok := err.(*api.Error)
		if !ok || ae.Status != 400 || ae.Code != api.CodeInvalidField || ae.Field != tc.field {
			t.Errorf("%s: got %#v, want a 400 invalid_field on %q", tc.body, err, tc.field)
		}
	}
	var req api.CreateSandboxRequest
	r := httptest.NewRequest("POST", "/v1/sandboxes", strings.NewReader(`{"name":"x","profile":"p","tags":["a"]}`))
	if err := decode(httptest.NewRecorder(), r, &req, false); err != nil || req.Name != "x" || len(req.Tags) != 1 {
		t.Errorf("valid body: %v %+v", err, req)
	}
}
