package agent_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/config"
	"github.com/agentlab/terraform-provider-agentlab/internal/sandbox"
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets"
)

// bootstrapOf reads the bootstrap file agentd wrote into the guest through
// the guest agent (the simulator keeps the guest's files); the snippet on
// host storage must not carry the token.
func bootstrapOf(t *testing.T, d *agent.Dev, sandboxID string) sandbox.Bootstrap {
	t.Helper()
	sb, err := d.Agent.Store.Sandbox(tctx(t), sandboxID)
	if err != nil {
		t.Fatal(err)
	}
	raw, ok := d.Sim.GuestFile(sb.VMID, sandbox.BootstrapPath)
	if !ok {
		t.Fatalf("guest of VM %d has no %s", sb.VMID, sandbox.BootstrapPath)
	}
	var b sandbox.Bootstrap
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	snippet, _ := os.ReadFile(filepath.Join(d.Config.SnippetsDir, "agentlab-"+sandboxID+".yaml"))
	if len(snippet) == 0 || strings.Contains(string(snippet), b.Token) || strings.Contains(string(snippet), "token") {
		t.Fatalf("snippet missing or carries the token:\n%s", snippet)
	}
	return b
}

func fetch(t *testing.T, url, tok string) (int, api.GuestBootstrap) {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/v1/bootstrap", nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b api.GuestBootstrap
	json.NewDecoder(resp.Body).Decode(&b)
	return resp.StatusCode, b
}

func post(t *testing.T, url, tok string, body io.Reader) int {
	t.Helper()
	req, _ := http.NewRequest("POST", url, body)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestGuestTokenSecurity: every refused request delivers nothing and leaves an
// event; uploads are capped and names validated.
func TestGuestTokenSecurity(t *testing.T) {
	clk := &fakeClock{t: time.Now().UTC()}
	var logs bytes.Buffer
	d, c := startDev(t, agent.DevOptions{Log: slog.New(slog.NewTextHandler(&logs, nil)), Hooks: agent.Hooks{Now: clk.Now, NoLoops: true},
		Configure: func(cfg *config.Config) { cfg.ArtifactMaxBytes = 1024 }})
	ctx := tctx(t)
	st := secrets.Store{Dir: d.Config.SecretsDir, KeyFile: d.Config.SecretsKeyFile}
	if _, err := st.Init(); err != nil {
		t.Fatal(err)
	}
	const secret = "sk-live-4f9a1c0ffee"
	st.Save("default", &secrets.Bundle{Env: map[string]string{"API_KEY": secret}})
	a := create(t, c, "ga")
	b := create(t, c, "gb")
	ba, bb := bootstrapOf(t, d, a.ID), bootstrapOf(t, d, b.ID)
	if ba.URL != d.Info.Guest || ba.Token == bb.Token {
		t.Fatalf("bootstrap files %+v %+v", ba, bb)
	}
	if code, _ := fetch(t, ba.URL, ""); code != 401 {
		t.Fatalf("missing token: %d", code)
	}
	if code, _ := fetch(t, ba.URL, "not-a-token"); code != 401 {
		t.Fatalf("unknown token: %d", code)
	}
	code, got := fetch(t, ba.URL, ba.Token)
	if code != 200 || got.Env["API_KEY"] != secret || got.SandboxID != a.ID || got.ArtifactToken == "" || got.Job != nil {
		t.Fatalf("first fetch: %d %+v", code, got)
	}
	if code, again := fetch(t, ba.URL, ba.Token); code != 401 || again.Env != nil {
		t.Fatalf("reused token: %d %+v", code, again)
	}
	// Expired: b's token, eleven minutes later.
	clk.Add(11 * time.Minute)
	if code, got := fetch(t, bb.URL, bb.Token); code != 401 || got.Env != nil {
		t.Fatalf("expired token: %d", code)
	}
	// Uploads: cap, names.
	up := func(name string, n int) int {
		return post(t, got.ArtifactURL+"?name="+name, got.ArtifactToken, bytes.NewReader(bytes.Repeat([]byte("x"), n)))
	}
	if code := up("ok.txt", 10); code != 201 {
		t.Fatalf("small upload: %d", code)
	}
	if code := up("big.bin", 2000); code != 413 {
		t.Fatalf("oversize upload: %d", code)
	}
	for _, bad := range []string{"../escape", "%2Fetc%2Fpasswd", "a/../../b", ".hidden", "a%00b", "dir/.git/config", ""} {
		if code := up(bad, 5); code != 400 {
			t.Errorf("name %q: %d, want 400", bad, code)
		}
	}
	var files []string
	filepath.WalkDir(filepath.Join(d.StateDir, "artifacts"), func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			files = append(files, filepath.Base(p))
		}
		return nil
	})
	if strings.Join(files, ",") != "ok.txt" {
		t.Fatalf("artifact dir holds %v; refused uploads must leave nothing", files)
	}
	if code := post(t, got.ArtifactURL+"?name=x", "wrong", strings.NewReader("x")); code != 401 {
		t.Fatalf("wrong artifact token: %d", code)
	}
	// Refusals are events, without the token: one per sandbox or source per
	// guest_refusal_interval (the unknown token from the same address in the
	// first minute is counted in the next event, not recorded on its own).
	l, _ := c.Events(ctx, "", 0, 1000)
	var refused []string
	for _, e := range l.Events {
		if e.Kind == "guest.refused" {
			refused = append(refused, e.Message)
			if strings.Contains(e.Message, ba.Token) || strings.Contains(e.Message, bb.Token) {
				t.Fatal("an event contains a token")
			}
		}
	}
	if len(refused) != 4 {
		t.Fatalf("refusal events: %q", refused)
	}
	if strings.Contains(logs.String(), secret) {
		t.Fatal("the agent's log contains the secret")
	}
}

// TestGuestSourceAddressIsChecked: with guest_check_source_ip (the default
// outside agentd dev) a token presented from another address than its
// sandbox's is refused with 403 and delivers nothing.
func TestGuestSourceAddressIsChecked(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Configure: func(cfg *config.Config) { cfg.GuestCheckSourceIP = true }})
	sb := create(t, c, "foreign")
	bs := bootstrapOf(t, d, sb.ID)
	code, got := fetch(t, bs.URL, bs.Token) // from 127.0.0.1; the sandbox is 10.77.x.y
	if code != 403 || got.ArtifactToken != "" {
		t.Fatalf("foreign address: %d %+v", code, got)
	}
	l, _ := c.Events(tctx(t), sb.Name, 0, 0)
	last := l.Events[len(l.Events)-1]
	if last.Kind != "guest.refused" || !strings.Contains(last.Message, fmt.Sprintf("sandbox foreign (bound to %s) presented from 127.0.0.1", sb.IP)) {
		t.Fatalf("event %+v", last)
	}
	_ = client.IsNotFound
}

// TestJobsAreFinalized: a job whose sandbox dies never stays RUNNING; cancel
// ends a job and destroys its sandbox.
func TestJobsAreFinalized(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	j1, err := c.RunJob(ctx, api.RunJobRequest{Profile: "yolo-ephemeral", Task: "true"})
	if err != nil {
		t.Fatal(err)
	}
	c.WaitSandbox(ctx, j1.ID, 0)
	bs := bootstrapOf(t, d, j1.SandboxID)
	if code, got := fetch(t, bs.URL, bs.Token); code != 200 || got.Job == nil || got.Job.Task != "true" {
		t.Fatalf("bootstrap %d %+v", code, got)
	}
	// The job turns RUNNING once the delivery is confirmed, which happens
	// after the guest already has the bytes: wait for it.
	j, _ := c.Job(ctx, j1.ID)
	for j.Status == "QUEUED" && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
		j, _ = c.Job(ctx, j1.ID)
	}
	if j.Status != "RUNNING" {
		t.Fatalf("after bootstrap: %s", j.Status)
	}
	c.Destroy(ctx, j1.ID, true)
	if err := d.Agent.Jobs.Finalize(ctx); err != nil {
		t.Fatal(err)
	}
	if j, _ := c.Job(ctx, j1.ID); j.Status != "FAILED" || !strings.Contains(j.Error, "its sandbox is DESTROYED") {
		t.Fatalf("orphaned job %+v", j)
	}
	j2, _ := c.RunJob(ctx, api.RunJobRequest{Profile: "yolo-ephemeral", Task: "sleep 100", Keepalive: ptr(true)})
	c.WaitSandbox(ctx, j2.ID, 0)
	if j, err := c.CancelJob(ctx, j2.ID); err != nil || j.Status != "FAILED" || j.Error != "cancelled by an operator" {
		t.Fatalf("cancel %+v %v", j, err)
	}
	if sb, _ := c.Sandbox(ctx, j2.ID); sb.State != api.StateDestroyed {
		t.Fatalf("cancelled job's sandbox is %s", sb.State)
	}
	_, err = c.RunJob(ctx, api.RunJobRequest{Profile: "yolo-ephemeral"})
	wantCode(t, err, 400, api.CodeInvalidField)
	if js, _ := c.Jobs(ctx); len(js) != 2 {
		t.Fatalf("jobs %+v", js)
	}
}
