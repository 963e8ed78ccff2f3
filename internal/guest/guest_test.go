package guest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/metrics"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/token"
)

// clock is a fake clock the tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	t       *testing.T
	st      *store.Store
	srv     *Server
	clk     *clock
	dir     string // everything on the host: paths must never show up in answers
	sb      *store.Sandbox
	art     string // raw artifact token of sb
	secrets secrets.Store
	dbPath  string
}

const guestIP = "10.77.0.9"

func newEnv(t *testing.T, mod func(*Options)) *env {
	t.Helper()
	dir := t.TempDir()
	clk := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	ctx := context.Background()
	dbPath := filepath.Join(dir, "state", "agentd.db")
	st, err := store.Open(ctx, dbPath, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sec := secrets.Store{Dir: filepath.Join(dir, "secrets"), KeyFile: filepath.Join(dir, "secrets", "age.key")}
	profiles := profile.Set{
		"plain":   &profile.Profile{Name: "plain"},
		"secrets": &profile.Profile{Name: "secrets", Secrets: profile.Secrets{Bundle: "team"}},
	}
	o := Options{BaseURL: "http://" + guestIP, ArtifactDir: filepath.Join(dir, "artifacts"), MaxBytes: 1 << 20,
		ArtifactTokenTTL: time.Hour, Now: clk.Now}
	if mod != nil {
		mod(&o)
	}
	e := &env{t: t, st: st, clk: clk, dir: dir, secrets: sec, dbPath: dbPath,
		srv: New(st, nil, sec, profiles, o, slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New(func() map[string]int { return nil }))}
	e.sb, e.art = e.sandbox("sb1", "plain", "")
	return e
}

// sandbox records a RUNNING sandbox and an artifact token for it.
func (e *env) sandbox(name, prof, jobID string) (*store.Sandbox, string) {
	e.t.Helper()
	ctx := context.Background()
	sb := &store.Sandbox{Sandbox: api.Sandbox{ID: "sbx-" + name, Name: name, Team: "default", Profile: prof, State: api.StateRunning, IP: guestIP}}
	if err := e.st.CreateSandbox(ctx, sb, store.Event{}); err != nil {
		e.t.Fatal(err)
	}
	raw, hash := token.New()
	if err := e.st.CreateToken(ctx, &store.Token{Hash: hash, Kind: store.TokenArtifact, SandboxID: sb.ID, JobID: jobID,
		ExpiresAt: e.clk.Now().Add(time.Hour)}); err != nil {
		e.t.Fatal(err)
	}
	return sb, raw
}

type answer struct {
	status int
	body   string
	err    api.Error
}

func (e *env) do(method, target, tok string, body io.Reader) answer {
	e.t.Helper()
	r := httptest.NewRequest(method, target, body)
	r.RemoteAddr = guestIP + ":40000"
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	w := httptest.NewRecorder()
	e.srv.ServeHTTP(w, r)
	a := answer{status: w.Code, body: w.Body.String()}
	var eb api.ErrorBody
	if json.Unmarshal(w.Body.Bytes(), &eb) == nil && eb.Error != nil {
		a.err = *eb.Error
	}
	e.noHostPaths(a.body)
	return a
}

func (e *env) upload(tok, name, content string) answer {
	return e.do("POST", "/v1/artifacts?name="+name, tok, strings.NewReader(content))
}

// noHostPaths: no answer names a host path or a key file.
func (e *env) noHostPaths(body string) {
	e.t.Helper()
	for _, bad := range []string{e.dir, "age.key", "/var/lib", "/etc/agentd"} {
		if strings.Contains(body, bad) {
			e.t.Errorf("answer names a host path (%s): %s", bad, body)
		}
	}
}

func (e *env) events(kind string) []api.Event {
	e.t.Helper()
	evs, err := e.st.Events(context.Background(), store.EventFilter{}, 0, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []api.Event
	for _, ev := range evs {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

func (e *env) dbBytes() int64 {
	var n int64
	for _, f := range []string{e.dbPath, e.dbPath + "-wal"} {
		if fi, err := os.Stat(f); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// TestRefusalFloodIsCoalesced: 20,000 bad requests in one interval (a fake
// clock that does not move) leave at most one event per sandbox or source,
// grow the database by almost nothing, and the flood is answered 429 after
// the burst; the next interval's event counts what was not recorded.
func TestRefusalFloodIsCoalesced(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.RefusalInterval, o.RefusalBurst = time.Minute, 20 })
	// A known sandbox's spent token: refusals about that sandbox.
	raw, hash := token.New()
	ctx := context.Background()
	e.st.CreateToken(ctx, &store.Token{Hash: hash, Kind: store.TokenBootstrap, SandboxID: e.sb.ID, ExpiresAt: e.clk.Now().Add(time.Hour)})
	e.st.SpendToken(ctx, hash)
	before := e.dbBytes()
	statuses := map[int]int{}
	for i := 0; i < 20000; i++ {
		switch i % 3 {
		case 0:
			statuses[e.do("GET", "/v1/bootstrap", "", nil).status]++
		case 1:
			statuses[e.do("GET", "/v1/bootstrap", fmt.Sprintf("bogus-%d", i), nil).status]++
		default:
			statuses[e.do("GET", "/v1/bootstrap", raw, nil).status]++
		}
	}
	refused := e.events("guest.refused")
	if len(refused) > 2 {
		t.Errorf("%d guest.refused events for one source and one sandbox in one interval, want at most 2", len(refused))
	}
	if grew := e.dbBytes() - before; grew > 64<<10 {
		t.Errorf("database grew by %d bytes during the flood", grew)
	}
	if statuses[http.StatusTooManyRequests] < 19000 || statuses[http.StatusUnauthorized] > 21 {
		t.Errorf("answers: %v, want 429 after the first %d refusals", statuses, 20)
	}
	// Next interval: one event again, saying how many were not recorded.
	e.clk.Add(time.Minute + time.Second)
	if a := e.do("GET", "/v1/bootstrap", "", nil); a.status != http.StatusUnauthorized {
		t.Fatalf("after the interval: %d %s", a.status, a.body)
	}
	refused = e.events("guest.refused")
	last := refused[len(refused)-1].Message
	if len(refused) > 3 || !strings.Contains(last, "similar refusal(s)") {
		t.Errorf("events after the interval (%d): last %q", len(refused), last)
	}
}

// TestSlowUploadIsCutOff: an upload that trickles is answered 408
// upload_too_slow once a rate window passes without its bytes, and its temp
// file is removed. The client's own deadline only keeps a broken server from
// hanging the test.
func TestSlowUploadIsCutOff(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.UploadMinRate, o.UploadRateWindow = 1000, 200*time.Millisecond })
	hs := httptest.NewUnstartedServer(e.srv)
	e.srv.Configure(hs.Config)
	hs.Start()
	defer hs.Close()
	conn, err := net.Dial("tcp", hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	// The source-address check is off for the test server's 127.0.0.1.
	e.srv.opts.CheckSourceIP = false
	fmt.Fprintf(conn, "POST /v1/artifacts?name=slow.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100000\r\n\r\n", e.art)
	conn.Write([]byte("0123456789"))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a trickling upload: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	var eb api.ErrorBody
	json.Unmarshal(body, &eb)
	if resp.StatusCode != http.StatusRequestTimeout || eb.Error == nil || eb.Error.Code != api.CodeUploadTooSlow || eb.Error.Limit == nil {
		t.Fatalf("answer %d %s, want 408 upload_too_slow with its limit", resp.StatusCode, body)
	}
	e.noHostPaths(string(body))
	left, _ := filepath.Glob(filepath.Join(e.srv.opts.ArtifactDir, e.sb.ID, ".upload-*"))
	if len(left) > 0 {
		t.Errorf("temp files left: %v", left)
	}
	if as, _ := e.st.Artifacts(context.Background(), e.sb.ID, ""); len(as) != 0 {
		t.Errorf("artifact recorded: %+v", as[0])
	}
}

// TestSecondUploadOfANameKeepsTheFirst: the same name twice is a 409
// artifact_exists, and the file behind the first record is untouched.
func TestSecondUploadOfANameKeepsTheFirst(t *testing.T) {
	e := newEnv(t, nil)
	if a := e.upload(e.art, "out/report.txt", "first"); a.status != http.StatusCreated {
		t.Fatalf("first upload: %d %s", a.status, a.body)
	}
	a := e.upload(e.art, "out/report.txt", "second, and longer")
	if a.status != http.StatusConflict || a.err.Code != api.CodeArtifactExists {
		t.Fatalf("second upload: %d %s, want 409 artifact_exists", a.status, a.body)
	}
	as, _ := e.st.Artifacts(context.Background(), e.sb.ID, "")
	if len(as) != 1 {
		t.Fatalf("%d artifact rows, want 1", len(as))
	}
	got, err := os.ReadFile(as[0].Path)
	if err != nil || string(got) != "first" || as[0].Size != 5 {
		t.Errorf("first artifact's file now holds %q (%v)", got, err)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(as[0].Path), ".upload-*"))
	if len(left) > 0 {
		t.Errorf("temp files left: %v", left)
	}
}

// TestArtifactNamesThatCollideWithPaths: a name through another artifact's
// file, or naming a directory of artifacts, is a 400 that names no host path.
func TestArtifactNamesThatCollideWithPaths(t *testing.T) {
	e := newEnv(t, nil)
	steps := []struct {
		name   string
		status int
	}{
		{"conf", http.StatusCreated},
		{"conf/sub", http.StatusBadRequest},
		{"conf/sub/deeper", http.StatusBadRequest},
		{"dir/a", http.StatusCreated},
		{"dir", http.StatusBadRequest},
		{"..%2Fescape", http.StatusBadRequest},
		{"red%1B%5B31m", http.StatusBadRequest},
		{"two%0Alines", http.StatusBadRequest},
	}
	for _, s := range steps {
		if a := e.upload(e.art, s.name, "x"); a.status != s.status {
			t.Errorf("upload %s: %d %s, want %d", s.name, a.status, a.body, s.status)
		}
	}
}

// TestArtifactQuotas: bytes per sandbox, bytes per job and the count per
// sandbox refuse with the limit, its value and the use; a refused upload
// leaves no file and gives its bytes back.
func TestArtifactQuotas(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.SandboxQuotaBytes, o.JobQuotaBytes, o.MaxArtifacts = 100, 70, 3 })
	if a := e.upload(e.art, "a", strings.Repeat("a", 60)); a.status != http.StatusCreated {
		t.Fatalf("a: %d %s", a.status, a.body)
	}
	a := e.upload(e.art, "b", strings.Repeat("b", 60))
	if a.status != http.StatusRequestEntityTooLarge || a.err.Code != api.CodeArtifactQuota || a.err.Limit == nil ||
		*a.err.Limit != (api.Limit{Key: "artifact_quota_sandbox_bytes", Value: 100, Used: 60}) {
		t.Fatalf("b: %d %s, want 413 artifact_quota_exceeded at 60 of 100", a.status, a.body)
	}
	if _, err := os.Stat(filepath.Join(e.srv.opts.ArtifactDir, e.sb.ID, "b")); !os.IsNotExist(err) {
		t.Errorf("refused artifact's file exists: %v", err)
	}
	// The refused bytes were given back: 40 more fit exactly.
	if a := e.upload(e.art, "c", strings.Repeat("c", 40)); a.status != http.StatusCreated {
		t.Fatalf("c: %d %s", a.status, a.body)
	}
	if a := e.upload(e.art, "d", "d"); a.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("d over a full quota: %d %s", a.status, a.body)
	}

	// Count: a fresh sandbox with tiny artifacts.
	sb2, tok2 := e.sandbox("sb2", "plain", "")
	for i := 0; i < 3; i++ {
		if a := e.upload(tok2, fmt.Sprintf("f%d", i), "x"); a.status != http.StatusCreated {
			t.Fatalf("f%d: %d %s", i, a.status, a.body)
		}
	}
	a = e.upload(tok2, "f3", "x")
	if a.status != http.StatusTooManyRequests || a.err.Code != api.CodeArtifactCount || a.err.Limit == nil || a.err.Limit.Used != 3 {
		t.Fatalf("f3: %d %s, want 429 artifact_count_limit_reached", a.status, a.body)
	}
	_ = sb2

	// Job quota (70) binds before the sandbox's (100).
	_, tok3 := e.sandbox("sb3", "plain", "job-1")
	e.upload(tok3, "j1", strings.Repeat("j", 50))
	a = e.upload(tok3, "j2", strings.Repeat("j", 30))
	if a.status != http.StatusRequestEntityTooLarge || a.err.Limit == nil || a.err.Limit.Key != "artifact_quota_job_bytes" {
		t.Fatalf("j2: %d %s, want the job quota", a.status, a.body)
	}
}

// TestTeamArtifactQuota: the team's quota artifact_bytes binds across its
// sandboxes, counting what they stored before; raising it holds from the
// next upload.
func TestTeamArtifactQuota(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	team := &api.Team{Name: "default", Quota: api.TeamQuota{ArtifactBytes: 120}}
	if err := e.st.UpdateTeam(ctx, team); err != nil {
		t.Fatal(err)
	}
	_, tokA := e.sandbox("qa", "plain", "")
	_, tokB := e.sandbox("qb", "plain", "")
	if a := e.upload(tokA, "a", strings.Repeat("a", 100)); a.status != http.StatusCreated {
		t.Fatalf("a: %d %s", a.status, a.body)
	}
	a := e.upload(tokB, "b", strings.Repeat("b", 30))
	if a.status != http.StatusRequestEntityTooLarge || a.err.Limit == nil || a.err.Limit.Key != "team default quota artifact_bytes" ||
		a.err.Limit.Value != 120 || a.err.Limit.Used != 100 {
		t.Fatalf("b over the team quota: %d %s", a.status, a.body)
	}
	team.Quota.ArtifactBytes = 200
	if err := e.st.UpdateTeam(ctx, team); err != nil {
		t.Fatal(err)
	}
	if a := e.upload(tokB, "b", strings.Repeat("b", 30)); a.status != http.StatusCreated {
		t.Fatalf("b after the quota was raised: %d %s", a.status, a.body)
	}
}

// TestQuotaReservationsAreShared: two uploads in flight at once cannot both
// take the last bytes (the reservation level, where the race would be).
func TestQuotaReservationsAreShared(t *testing.T) {
	e := newEnv(t, nil)
	q := newQuotas(e.st, 100, 0, 10)
	ctx := context.Background()
	r1, err1 := q.begin(ctx, e.sb.ID, "", "default")
	r2, err2 := q.begin(ctx, e.sb.ID, "", "default")
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if err := r1.add(60); err != nil {
		t.Fatal(err)
	}
	if err := r2.add(60); !api.IsCode(err, api.CodeArtifactQuota) {
		t.Fatalf("second in-flight upload over the quota: %v", err)
	}
	r2.end()
	if err := r1.add(40); err != nil {
		t.Fatalf("the refused upload's bytes were not given back: %v", err)
	}
	r1.end()
	if len(q.usage) != 0 {
		t.Errorf("usage kept with nothing in flight: %v", q.usage)
	}
}

// TestJobLogIsMasked: the job log is stored with the bundle's values
// masked, whatever the chunking; other artifacts are stored as sent; the
// report's message is masked too.
func TestJobLogIsMasked(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := e.secrets.Init(); err != nil {
		t.Fatal(err)
	}
	const apiKey, gitTok = "sk-live-0123456789", "ghp_abcdefghijkl"
	if err := e.secrets.Save("team", &secrets.Bundle{Env: map[string]string{"API_KEY": apiKey}, Git: &secrets.Git{Token: gitTok}}); err != nil {
		t.Fatal(err)
	}
	sb, tok := e.sandbox("withsecrets", "secrets", "")
	log := "starting\nusing key " + apiKey + " and " + gitTok + "\nend " + apiKey
	if a := e.do("POST", "/v1/artifacts?name="+api.JobLogName, tok, io.MultiReader(strings.NewReader(log[:20]), strings.NewReader(log[20:]))); a.status != http.StatusCreated {
		t.Fatalf("log upload: %d %s", a.status, a.body)
	}
	if a := e.upload(tok, "data.txt", apiKey); a.status != http.StatusCreated {
		t.Fatalf("data upload: %d %s", a.status, a.body)
	}
	as, _ := e.st.Artifacts(context.Background(), sb.ID, "")
	for _, a := range as {
		b, _ := os.ReadFile(a.Path)
		switch a.Name {
		case api.JobLogName:
			if bytes.Contains(b, []byte(apiKey)) || bytes.Contains(b, []byte(gitTok)) || !bytes.Contains(b, []byte("using key "+secrets.Mask)) {
				t.Errorf("job log stored unmasked: %q", b)
			}
		case "data.txt":
			if string(b) != apiKey {
				t.Errorf("a plain artifact was changed: %q", b)
			}
		}
	}
}

// TestBootstrapFailureNamesNoHostPath: a bundle that cannot be opened is a
// 500 that names neither the key file nor the secrets directory (the
// operator finds the cause in the sandbox's events).
func TestBootstrapFailureNamesNoHostPath(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := e.secrets.Init(); err != nil {
		t.Fatal(err)
	}
	if err := e.secrets.Save("team", &secrets.Bundle{Env: map[string]string{"K": "value"}}); err != nil {
		t.Fatal(err)
	}
	os.Remove(e.secrets.KeyFile)
	sb, _ := e.sandbox("nokey", "secrets", "")
	raw, hash := token.New()
	e.st.CreateToken(context.Background(), &store.Token{Hash: hash, Kind: store.TokenBootstrap, SandboxID: sb.ID, ExpiresAt: e.clk.Now().Add(time.Hour)})
	a := e.do("GET", "/v1/bootstrap", raw, nil) // do checks the body for host paths
	if a.status != http.StatusInternalServerError {
		t.Fatalf("bootstrap without a key: %d %s", a.status, a.body)
	}
	if evs := e.events("bootstrap.failed"); len(evs) != 1 || !strings.Contains(evs[0].Message, "age.key") {
		t.Errorf("the cause is not in the events: %+v", evs)
	}
}
