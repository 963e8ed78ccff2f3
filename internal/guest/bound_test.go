package guest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/jobs"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/token"
)

// TestBootstrapIsBoundToTheAssignedAddress: the bootstrap token is bound at
// issuance to the sandbox's assigned address. While the sandbox is still
// BOOTING (agentd has no guest-reported IP yet) and after it is RUNNING, a
// request from any other address is refused and spends nothing; the bound
// address gets the bootstrap once; the artifact token it carries is bound too.
func TestBootstrapIsBoundToTheAssignedAddress(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.CheckSourceIP = true })
	e.srv.jobs = jobs.New(e.st, nil) // Started only reads the store
	ctx := context.Background()
	const assigned, other = "10.77.0.20", "10.77.0.21"
	sb := &store.Sandbox{Sandbox: api.Sandbox{ID: "sbx-bound", Name: "bound", Profile: "plain", State: api.StateBooting}}
	if err := e.st.CreateSandbox(ctx, sb, store.Event{}); err != nil {
		t.Fatal(err)
	}
	raw, hash := token.New()
	if err := e.st.CreateToken(ctx, &store.Token{Hash: hash, Kind: store.TokenBootstrap, SandboxID: sb.ID,
		ExpiresAt: e.clk.Now().Add(time.Hour), BoundIP: assigned}); err != nil {
		t.Fatal(err)
	}
	get := func(from string) int {
		r := httptest.NewRequest("GET", "/v1/bootstrap", nil)
		r.RemoteAddr = from + ":40000"
		r.Header.Set("Authorization", "Bearer "+raw)
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, r)
		return w.Code
	}
	if code := get(other); code != http.StatusForbidden {
		t.Fatalf("before boot (no IP known), from another address: %d", code)
	}
	sb, _ = e.st.Sandbox(ctx, sb.ID)
	sb.IP = assigned
	for _, to := range []api.State{api.StateReady, api.StateRunning} {
		from := sb.State
		sb.State = to
		if err := e.st.Save(ctx, sb, from, store.Event{}); err != nil {
			t.Fatal(err)
		}
	}
	if code := get(other); code != http.StatusForbidden {
		t.Fatalf("after boot, from another address: %d", code)
	}
	if code := get("127.0.0.1"); code != http.StatusForbidden {
		t.Fatalf("from loopback: %d", code)
	}
	if code := get(assigned); code != http.StatusOK {
		t.Fatalf("from the assigned address: %d", code)
	}
	if code := get(assigned); code != http.StatusUnauthorized {
		t.Fatalf("a second time: %d", code)
	}
	var n int
	e.st.DB().QueryRow(`SELECT COUNT(*) FROM tokens WHERE sandbox_id=? AND kind='artifact' AND bound_ip=?`, sb.ID, assigned).Scan(&n)
	if n != 1 {
		t.Fatalf("artifact tokens bound to %s: %d", assigned, n)
	}
}
