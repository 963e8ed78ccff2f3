package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

// TestJobEndToEnd: agent + simulator in this process, `agentd guest run` as a
// separate process pointed at the guest listener with the bootstrap file
// cloud-init would write. The job reads an injected secret and writes an
// artifact; it ends COMPLETED, the artifact downloads with a matching SHA-256,
// and no secret value is in the database, the logs or the events.
func TestJobEndToEnd(t *testing.T) {
	bin := buildAgentd(t)
	var logs bytes.Buffer
	ctx := context.Background()
	d, err := agent.StartDev(ctx, agent.DevOptions{StateDir: t.TempDir(), ProvisioningTimeout: time.Minute,
		Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c, _ := client.New(client.Config{Endpoint: d.Info.Endpoint, Token: d.Info.Token, CACert: d.Info.CACert})

	const apiKey, gitToken = "sk-e2e-9d8c7b6a5f4e", "ghp_e2eTokenValue123"
	// Secrets through the CLI, as an operator would (value on stdin, never on the command line).
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfgPath, []byte("secrets_dir: "+d.Config.SecretsDir+"\nsecrets_key_file: "+d.Config.SecretsKeyFile+"\nproxmox_node: pve\n"), 0o600)
	agentdCmd := func(stdin string, args ...string) string {
		cmd := exec.Command(bin, args...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("agentd %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	agentdCmd("", "secrets", "init", "--config", cfgPath)
	if out := agentdCmd(apiKey+"\n", "secrets", "set-env", "API_KEY", "--config", cfgPath); strings.Contains(out, apiKey) {
		t.Fatal("set-env echoed the value")
	}
	agentdCmd(gitToken, "secrets", "set-git", "--username", "bot", "--config", cfgPath)
	if out := agentdCmd("", "secrets", "show", "--config", cfgPath); strings.Contains(out, apiKey) || !strings.Contains(out, "API_KEY") {
		t.Fatalf("show without --reveal: %s", out)
	}
	if fi, _ := os.Stat(d.Config.SecretsKeyFile); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", fi.Mode())
	}
	if b, _ := os.ReadFile(filepath.Join(d.Config.SecretsDir, "default.age")); bytes.Contains(b, []byte(apiKey)) {
		t.Fatal("the bundle on disk is not encrypted")
	}

	// The task proves it sees the secret by its hash (the task text is stored).
	keyHash := sha256.Sum256([]byte(apiKey))
	job, err := c.RunJob(ctx, api.RunJobRequest{Profile: "yolo-ephemeral",
		Task: `test "$(printf %s "$API_KEY" | sha256sum | cut -d' ' -f1)" = ` + hex.EncodeToString(keyHash[:]) +
			` && printf 'result: %s' ok > "$AGENTLAB_ARTIFACTS/report.txt" && test -f "$AGENTLAB_SECRETS_DIR/git-credentials" && echo task-done`})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := c.WaitSandbox(ctx, job.ID, 20*time.Millisecond)
	if err != nil || sb.State != api.StateRunning {
		t.Fatalf("job sandbox %+v %v", sb, err)
	}
	// The dev-mode guest's filesystem: agentd wrote the bootstrap file there
	// through the guest agent (agent/file-write), as into a real guest.
	bsFile := filepath.Join(d.StateDir, "pve", "guests", fmt.Sprint(sb.VMID), "etc", "agentlab", "bootstrap.json")
	if snippet, _ := os.ReadFile(filepath.Join(d.Config.SnippetsDir, "agentlab-"+sb.ID+".yaml")); strings.Contains(string(snippet), "token") {
		t.Fatalf("the cloud-init snippet carries a token:\n%s", snippet)
	}
	guestDir := t.TempDir()
	run := exec.Command(bin, "guest", "run", "--bootstrap-file", bsFile, "--secrets-dir", filepath.Join(guestDir, "secrets"), "--workdir", filepath.Join(guestDir, "work"))
	out, err := run.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "task-done") || !strings.Contains(string(out), "exited 0") {
		t.Fatalf("guest run: %v\n%s", err, out)
	}
	for _, f := range []string{"env", "git-credentials"} {
		if fi, err := os.Stat(filepath.Join(guestDir, "secrets", f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("secret file %s: %v %v", f, fi, err)
		}
	}
	j, err := c.Job(ctx, job.ID)
	if err != nil || j.Status != "COMPLETED" || j.ExitCode == nil || *j.ExitCode != 0 {
		t.Fatalf("job %+v %v", j, err)
	}
	arts, err := c.Artifacts(ctx, job.ID)
	if err != nil || len(arts) != 2 || arts[0].Name != "report.txt" || arts[1].Name != "agentlab-job.log" {
		t.Fatalf("artifacts %+v %v", arts, err)
	}
	var buf bytes.Buffer
	sum, err := c.Download(ctx, arts[0].ID, &buf)
	h := sha256.Sum256(buf.Bytes())
	if err != nil || buf.String() != "result: ok" || sum != arts[0].SHA256 || hex.EncodeToString(h[:]) != sum {
		t.Fatalf("download %q sha %s (recorded %s) %v", buf.String(), hex.EncodeToString(h[:]), arts[0].SHA256, err)
	}
	// The token was single-use: a second run is refused and gets nothing.
	if out, err := exec.Command(bin, "guest", "run", "--bootstrap-file", bsFile, "--secrets-dir", filepath.Join(guestDir, "s2"), "--workdir", filepath.Join(guestDir, "w2")).CombinedOutput(); err == nil || !strings.Contains(string(out), "401") {
		t.Fatalf("reused bootstrap: %v %s", err, out)
	}
	// Not keepalive: the sandbox goes away after the job.
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if s, _ := c.Sandbox(ctx, job.ID); s.State == api.StateDestroyed {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("job sandbox not destroyed after the job")
		}
	}
	// No secret value anywhere agentd writes.
	d.Agent.Store.DB().Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
	evs, _ := c.Events(ctx, "", 0, 1000)
	ej, _ := json.Marshal(evs)
	places := map[string][]byte{"events": ej, "logs": logs.Bytes()}
	for _, f := range []string{"agentd.db", "agentd.db-wal"} {
		b, _ := os.ReadFile(filepath.Join(d.StateDir, f))
		places[f] = b
	}
	for where, b := range places {
		for _, s := range []string{apiKey, gitToken} {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s contains a secret value", where)
			}
		}
	}
}
