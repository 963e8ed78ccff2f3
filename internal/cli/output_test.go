package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/jobs"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/sandbox"
	"github.com/agentlab/terraform-provider-agentlab/internal/server"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// apiOnSocket serves the real API on a Unix socket over a fresh store (no
// Proxmox: only the routes that read the store are used).
func apiOnSocket(t *testing.T) (*store.Store, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(context.Background(), filepath.Join(dir, "agentd.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	mgr := sandbox.New(st, nil, nil, nil, nil, profile.Set{}, sandbox.Options{})
	srv := server.New(mgr, nil, "pve", nil)
	srv.SetJobs(jobs.New(st, mgr))
	sock := filepath.Join(dir, "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close(); mgr.Close(); st.Close() })
	return st, "unix://" + sock
}

// run runs the CLI in-process and returns its standard output.
func run(t *testing.T, args ...string) string {
	t.Helper()
	root := new(options).newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		t.Fatalf("agentd %v: %v\n%s", args, err, out.String())
	}
	return out.String()
}

// TestCLIEscapesControlCharacters: an artifact name, an error and an event
// message with terminal escapes, carriage returns, newlines, tabs and a
// bidi override are printed escaped; long cells are cut unless --wide.
func TestCLIEscapesControlCharacters(t *testing.T) {
	st, ep := apiOnSocket(t)
	ctx := context.Background()
	sb := &store.Sandbox{Sandbox: api.Sandbox{ID: "sbx-0123456789ab", Name: "victim", Profile: "p", State: api.StateRunning}}
	if err := st.CreateSandbox(ctx, sb, store.Event{Kind: "sandbox.requested", Message: "ok\x1b]0;pwned\x07\rFAKE\nline"}); err != nil {
		t.Fatal(err)
	}
	evil := "report\x1b[2J\x1b[31m.txt\r\n\tforged\u202etxt.exe"
	if err := st.AddArtifact(ctx, &store.Artifact{SandboxID: sb.ID, Name: evil, Size: 1, SHA256: strings.Repeat("ab", 32), Path: "/x"},
		store.Event{Kind: "artifact.received", Message: evil}); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("n", 60)
	if err := st.AddArtifact(ctx, &store.Artifact{SandboxID: sb.ID, Name: long, Size: 1, SHA256: strings.Repeat("cd", 32), Path: "/y"},
		store.Event{Kind: "artifact.received", Message: "long"}); err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"artifacts list": run(t, "--endpoint", ep, "artifacts", "list", "victim"),
		"events":         run(t, "--endpoint", ep, "events"),
		"sandbox events": run(t, "--endpoint", ep, "sandbox", "events", "victim"),
	}
	for what, out := range outputs {
		for _, r := range out {
			if r < 0x20 && r != '\n' || r == 0x7f || r == '\u202e' {
				t.Errorf("%s prints %U:\n%q", what, r, out)
				break
			}
		}
		if strings.Contains(out, "\nFAKE") || strings.Contains(out, "\n\tforged") {
			t.Errorf("%s lets data start a line of its own:\n%s", what, out)
		}
	}
	wide := run(t, "--endpoint", ep, "--wide", "artifacts", "list", "victim")
	if !strings.Contains(wide, `report\x1b[2J\x1b[31m.txt\r\n\tforged\u202etxt.exe`) {
		t.Errorf("artifact name not shown escaped:\n%s", wide)
	}
	if strings.Contains(outputs["artifacts list"], long) || !strings.Contains(outputs["artifacts list"], strings.Repeat("n", maxCell-1)+"…") {
		t.Errorf("a 60-character name is not cut:\n%s", outputs["artifacts list"])
	}
	if !strings.Contains(wide, long) {
		t.Errorf("--wide cuts:\n%s", wide)
	}
	if got := clean("ok\x00\xff\u2067é"); got != `ok\x00\xff\u2067é` {
		t.Errorf("clean: %q", got)
	}
	var b bytes.Buffer
	printf(&b, "Error: %s\n", fmt.Errorf("bad \x1b[0m name"))
	if b.String() != "Error: bad \\x1b[0m name\n" {
		t.Errorf("errors are not cleaned: %q", b.String())
	}
}

// TestFollowNeverSkips: with 2,500 events already there and 1,700 more
// arriving between two polls (pages hold 1,000), --follow prints each of the
// 4,200 once, in order, against the real API.
func TestFollowNeverSkips(t *testing.T) {
	st, ep := apiOnSocket(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	add := func(n int) {
		for i := 0; i < n; i++ {
			if err := st.AddEvent(ctx, nil, store.Event{Kind: "test", Message: "e"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	add(2500)
	c, err := client.New(client.Config{Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	polls := 0
	wait := func() bool {
		polls++
		if polls == 1 {
			add(1700)
			return true
		}
		return false
	}
	err = followEvents(ctx, 0, func(after int64) (*api.EventList, error) { return c.EventsAfter(ctx, "", after, 1000) },
		func(e api.Event) { got = append(got, e.ID) }, wait)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4200 {
		t.Fatalf("printed %d events, want 4200", len(got))
	}
	for i, id := range got {
		if id != int64(i+1) {
			t.Fatalf("event %d has id %d: skipped or repeated", i, id)
		}
	}
	// The API itself pages forward: after=N is the next ids, not the newest.
	l, err := c.EventsAfter(ctx, "", 100, 50)
	if err != nil || len(l.Events) != 50 || l.Events[0].ID != 101 || l.Last != 150 || !l.More {
		t.Fatalf("after=100&limit=50: %d events from %v, last %d, more %t (%v)", len(l.Events), l.Events, l.Last, l.More, err)
	}
}

// TestArtifactIDsOutOfRange: ids that do not parse as a stored artifact's
// (too large for int64, negative, zero, not a number) are 404s, not 500s,
// and a row whose file is gone answers without its host path.
func TestArtifactIDsOutOfRange(t *testing.T) {
	st, ep := apiOnSocket(t)
	c, err := client.New(client.Config{Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, id := range []string{"99999999999999999999", "-1", "0", "x"} {
		err := c.Do(ctx, "GET", "/v1/artifacts/"+id, nil, nil)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Status != 404 || ae.Code != api.CodeArtifactNotFound {
			t.Errorf("artifact %s: %#v, want 404 artifact_not_found", id, err)
		}
	}
	sb := &store.Sandbox{Sandbox: api.Sandbox{ID: "sbx-0123456789ab", Name: "v", Profile: "p", State: api.StateRunning}}
	st.CreateSandbox(ctx, sb, store.Event{})
	gone := filepath.Join(t.TempDir(), "secret-host-dir", "file")
	st.AddArtifact(ctx, &store.Artifact{SandboxID: sb.ID, Name: "f", Size: 1, SHA256: strings.Repeat("ab", 32), Path: gone}, store.Event{})
	_, err = c.Download(ctx, 1, io.Discard)
	if err == nil || strings.Contains(err.Error(), "secret-host-dir") {
		t.Errorf("download of a gone file: %v", err)
	}
}
