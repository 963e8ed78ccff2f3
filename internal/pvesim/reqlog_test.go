package pvesim_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) lines(t *testing.T) []pvesim.RequestLogEntry {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []pvesim.RequestLogEntry
	sc := bufio.NewScanner(bytes.NewReader(b.b.Bytes()))
	for sc.Scan() {
		var e pvesim.RequestLogEntry
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

// TestRequestLog: one JSON line per request with method, path, parameters,
// status line (also PVE's custom reason phrases) and duration; the token,
// passwords and file-write content never appear.
func TestRequestLog(t *testing.T) {
	var buf syncBuffer
	sim, err := pvesim.New(pvesim.Options{Fixtures: true, RequestLog: &buf})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	_, secret := sim.Token()
	user, pass := sim.Login()

	raw(t, sim, "GET", "/version", "", true)
	raw(t, sim, "POST", "/nodes/pve/qemu/9000/clone", `{"newid":"abc"}`, true)
	raw(t, sim, "POST", "/nodes/pve/qemu/9000/config", `{"cipassword":"hunter2","cores":"4"}`, true)
	raw(t, sim, "POST", "/access/ticket", `{"username":"`+user+`","password":"`+pass+`"}`, false)
	raw(t, sim, "GET", "/version", "", false)
	raw(t, sim, "GET", "/nodes/pve/bogus", "", true)

	// A line is written once the answer is complete, which a client may see
	// a moment before.
	got := buf.lines(t)
	for i := 0; i < 200 && len(got) < 6; i++ {
		time.Sleep(5 * time.Millisecond)
		got = buf.lines(t)
	}
	// Lines come in completion order (an error's hijacked connection may be
	// closed before its line is written); time is the request's start.
	at := func(e pvesim.RequestLogEntry) time.Time { ts, _ := time.Parse(time.RFC3339Nano, e.Time); return ts }
	sort.SliceStable(got, func(i, j int) bool { return at(got[i]).Before(at(got[j])) })
	if len(got) != 6 {
		t.Fatalf("want 6 lines, got %d: %+v", len(got), got)
	}
	want := []struct{ method, path, status string }{
		{"GET", "/api2/json/version", "200 OK"},
		{"POST", "/api2/json/nodes/pve/qemu/9000/clone", "400 Parameter verification failed."},
		{"POST", "/api2/json/nodes/pve/qemu/9000/config", "200 OK"},
		{"POST", "/api2/json/access/ticket", "200 OK"},
		{"GET", "/api2/json/version", "401 No ticket"},
		{"GET", "/api2/json/nodes/pve/bogus", "501 Method 'GET /nodes/pve/bogus' not implemented"},
	}
	for i, w := range want {
		e := got[i]
		if e.Method != w.method || e.Path != w.path || e.Status != w.status {
			t.Errorf("line %d: got %s %s %q, want %s %s %q", i, e.Method, e.Path, e.Status, w.method, w.path, w.status)
		}
		if e.Time == "" || e.DurationMS < 0 {
			t.Errorf("line %d: time %q duration %v", i, e.Time, e.DurationMS)
		}
	}
	if got[1].Params["newid"] != "abc" || got[1].Params["vmid"] != "9000" || got[1].User != "agentd@pve!agentd" {
		t.Errorf("clone line: %+v", got[1])
	}
	if got[2].Params["cores"] != "4" || got[2].Params["cipassword"] != "<redacted>" {
		t.Errorf("config line: %+v", got[2])
	}
	if got[3].Params["password"] != "<redacted>" || got[3].Params["username"] != user {
		t.Errorf("ticket line: %+v", got[3])
	}
	buf.mu.Lock()
	all := buf.b.String()
	buf.mu.Unlock()
	for _, s := range []string{secret, pass, "hunter2"} {
		if strings.Contains(all, s) {
			t.Errorf("request log contains a secret %q:\n%s", s, all)
		}
	}
}
