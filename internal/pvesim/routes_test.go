package pvesim

import (
	"crypto/tls"
	"net/http"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim/apischema"
)

// Every route must have its entry in the generated schema (apischema/paths.txt):
// without one the simulator would answer 501, so a missing entry is a bug here.
func TestEveryRouteHasSchema(t *testing.T) {
	for _, rt := range routes {
		if _, ok := apischema.Lookup(rt.pattern, rt.method); !ok {
			t.Errorf("%s %s has no schema entry; add the path to apischema/paths.txt and run make schema", rt.method, rt.pattern)
		}
	}
}

// A route the schema does not know is a 501 at run time, never served unvalidated.
func TestRouteWithoutSchemaIs501(t *testing.T) {
	called := false
	handle("GET", "/nodes/{node}/not-in-schema", func(*Sim, *request) (any, error) { called = true; return nil, nil })
	defer func() { routes = routes[:len(routes)-1] }()
	sim, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: sim.CertPool()}}}
	req, _ := http.NewRequest("GET", sim.URL()+"/nodes/pve/not-in-schema", nil)
	id, secret := sim.Token()
	req.Header.Set("Authorization", "PVEAPIToken="+id+"="+secret)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.Status != "501 Method 'GET /nodes/pve/not-in-schema' not implemented" || called {
		t.Fatalf("status %q, handler called %v", res.Status, called)
	}
}
