package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
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
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets"
)

// TestSecretsThroughAPI: secrets set through the agent's API (the Go client
// over TCP + token, and the CLI with no key file on its side) land in the
// bundle, and the value is nowhere in the API's answers, the events, the
// agent's log or the state directory (the SQLite file included).
func TestSecretsThroughAPI(t *testing.T) {
	bin := buildAgentd(t)
	var logs bytes.Buffer
	ctx := context.Background()
	d, err := agent.StartDev(ctx, agent.DevOptions{StateDir: t.TempDir(), ProvisioningTimeout: time.Minute,
		Log: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c, err := client.New(client.Config{Endpoint: d.Info.Endpoint, Token: d.Info.Token, CACert: d.Info.CACert})
	if err != nil {
		t.Fatal(err)
	}
	st := secrets.Store{Dir: d.Config.SecretsDir, KeyFile: d.Config.SecretsKeyFile}

	const apiVal, cliVal, gitTok = "sk-api-7f6e5d4c3b2a", "sk-cli-0a1b2c3d4e5f", "ghp_apiTokenValue987"
	var answers bytes.Buffer
	keep := func(v any) {
		b, _ := json.Marshal(v)
		answers.Write(b)
	}
	// No key on the agent yet: a clear error, not a 500.
	if _, err := c.SetSecretEnv(ctx, "default", "API_KEY", apiVal); !api.IsCode(err, api.CodeNoSecretsKey) {
		t.Fatalf("set-env before init: %v", err)
	} else {
		keep(err)
	}
	if _, err := st.Init(); err != nil {
		t.Fatal(err)
	}
	sum, err := c.SetSecretEnv(ctx, "default", "API_KEY", apiVal)
	if err != nil {
		t.Fatal(err)
	}
	keep(sum)
	if len(sum.Env) != 1 || sum.Env[0] != "API_KEY" {
		t.Fatalf("summary %+v", sum)
	}
	sum, err = c.SetGit(ctx, "default", api.SetGitRequest{Username: "bot", Token: gitTok})
	if err != nil || sum.Git == nil || !sum.Git.TokenSet || sum.Git.Host != "github.com" {
		t.Fatalf("set git %+v %v", sum, err)
	}
	keep(sum)
	if _, err := c.SetSecretEnv(ctx, "default", "not-a-name", apiVal); !api.IsCode(err, api.CodeInvalidField) {
		t.Fatalf("bad env name: %v", err)
	} else {
		keep(err)
	}
	if _, err := c.UnsetSecretEnv(ctx, "default", "NOPE"); !api.IsCode(err, api.CodeSecretNotFound) {
		t.Fatalf("unset missing: %v", err)
	}
	// Strict decoding: an unknown field is refused.
	if err := c.Do(ctx, "PUT", "/v1/secrets/default/env/X", map[string]string{"value": "v", "extra": "1"}, nil); !api.IsCode(err, api.CodeInvalidField) && !api.IsCode(err, api.CodeBadRequest) {
		t.Fatalf("unknown field: %v", err)
	}
	pub := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl op@laptop"
	if sum, err = c.AddSSHKey(ctx, "default", "laptop", pub); err != nil || len(sum.SSHKeys) != 1 {
		t.Fatalf("add key %+v %v", sum, err)
	}
	keep(sum)
	if sum, err = c.RemoveSSHKey(ctx, "default", "laptop"); err != nil || len(sum.SSHKeys) != 0 {
		t.Fatalf("remove key %+v %v", sum, err)
	}

	// The CLI, as from a remote machine: endpoint and token only, no key file.
	cli := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), d.Env()...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := cli(cliVal+"\n", "secrets", "set-env", "CLI_KEY", "--config", filepath.Join(t.TempDir(), "none.yaml"))
	if err != nil || out != "set CLI_KEY in bundle default\n" {
		t.Fatalf("cli set-env: %v\n%s", err, out)
	}
	answers.WriteString(out)
	// A failure prints the failure only.
	out, err = cli(cliVal, "secrets", "set-env", "bad-name")
	if err == nil || strings.Contains(out, "set bad-name") || strings.Contains(out, cliVal) {
		t.Fatalf("cli set-env bad name: %v\n%s", err, out)
	}
	answers.WriteString(out)
	out, err = cli("", "secrets", "show")
	if err != nil || !strings.Contains(out, "CLI_KEY") || !strings.Contains(out, "API_KEY") {
		t.Fatalf("cli show: %v\n%s", err, out)
	}
	answers.WriteString(out)
	// The audit trail, as an operator reads it.
	out, err = cli("", "events")
	if err != nil || !strings.Contains(out, "secrets.env_set") || !strings.Contains(out, "bundle default: set env CLI_KEY") {
		t.Fatalf("agentd events does not show the secrets change: %v\n%s", err, out)
	}
	answers.WriteString(out)
	list, err := c.SecretsBundles(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("list %+v %v", list, err)
	}
	keep(list)

	// The bundle decrypts with the values.
	b, err := st.Load("default")
	if err != nil {
		t.Fatal(err)
	}
	if b.Env["API_KEY"] != apiVal || b.Env["CLI_KEY"] != cliVal || b.Git.Token != gitTok {
		t.Fatalf("bundle does not hold the values set")
	}

	evs, err := c.Events(ctx, "", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	keep(evs)
	// Let the WAL reach the database file before reading it.
	d.Stop()
	var files bytes.Buffer
	_ = filepath.WalkDir(d.StateDir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() && !strings.HasPrefix(p, d.Config.SecretsDir) {
			if b, err := os.ReadFile(p); err == nil {
				files.Write(b)
			}
		}
		return nil
	})
	for _, v := range []string{apiVal, cliVal, gitTok} {
		for what, buf := range map[string][]byte{"API answers": answers.Bytes(), "agent log": logs.Bytes(), "state dir": files.Bytes()} {
			if bytes.Contains(buf, []byte(v)) {
				t.Errorf("a secret value is in the %s", what)
			}
		}
	}
	if !strings.Contains(logs.String(), "/v1/secrets/default/env/API_KEY") {
		t.Errorf("the requests were not logged at all (is the log captured?)")
	}
}
