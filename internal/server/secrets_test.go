package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets"
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets/sopstest"
)

func startAgent(t *testing.T) (*agent.Dev, *client.Client, *bytes.Buffer) {
	t.Helper()
	logs := &bytes.Buffer{}
	d, err := agent.StartDev(context.Background(), agent.DevOptions{StateDir: t.TempDir(), ProvisioningTimeout: time.Minute,
		Log: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	c, err := client.New(client.Config{Endpoint: d.Info.Endpoint, Token: d.Info.Token, CACert: d.Info.CACert})
	if err != nil {
		t.Fatal(err)
	}
	return d, c, logs
}

// TestSecretsChangesAreEvents: every change through the API is one event
// naming the bundle and the key changed, listed by GET /v1/events (what
// `agentd events` shows); no value is in any event, answer or log line.
func TestSecretsChangesAreEvents(t *testing.T) {
	d, c, logs := startAgent(t)
	ctx := context.Background()
	st := secrets.Store{Dir: d.Config.SecretsDir, KeyFile: d.Config.SecretsKeyFile}
	if _, err := st.Init(); err != nil {
		t.Fatal(err)
	}
	const val, val2, tok = "sk-audit-value-5a5a5a", "sk-audit-second-6b6b", "ghp_auditToken77"
	pub := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl op@laptop"
	var answers bytes.Buffer
	keep := func(v any, err error) {
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(v)
		answers.Write(b)
	}
	keep(c.SetSecretEnv(ctx, "team", "API_KEY", val))
	keep(c.SetSecretEnv(ctx, "team", "API_KEY", val2))
	keep(c.UnsetSecretEnv(ctx, "team", "API_KEY"))
	keep(c.AddSSHKey(ctx, "team", "laptop", pub))
	keep(c.RemoveSSHKey(ctx, "team", "laptop"))
	keep(c.SetGit(ctx, "team", api.SetGitRequest{Username: "bot", Token: tok}))
	// A refused change records nothing.
	if _, err := c.UnsetSecretEnv(ctx, "team", "NOPE"); !api.IsCode(err, api.CodeSecretNotFound) {
		t.Fatalf("unset missing: %v", err)
	}
	if _, err := c.SetSecretEnv(ctx, "team", "bad-name", val); !api.IsCode(err, api.CodeInvalidField) {
		t.Fatalf("bad name: %v", err)
	}

	evs, err := c.Events(ctx, "", 0, 1000)
	keep(evs, err)
	var got []string
	for _, e := range evs.Events {
		if strings.HasPrefix(e.Kind, "secrets.") {
			if e.SandboxID != "" || e.Sandbox != "" {
				t.Errorf("secrets event tied to a sandbox: %+v", e)
			}
			got = append(got, e.Kind+" "+e.Message)
		}
	}
	want := []string{
		"secrets.env_set bundle team: set env API_KEY",
		"secrets.env_set bundle team: set env API_KEY",
		"secrets.env_unset bundle team: removed env API_KEY",
		"secrets.ssh_key_added bundle team: added ssh key laptop",
		"secrets.ssh_key_removed bundle team: removed ssh key laptop",
		"secrets.git_set bundle team: set git credentials for bot@github.com",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("secrets events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(logs.String(), "/v1/secrets/team/env/API_KEY") {
		t.Fatal("the agent's log is not captured (no request line)")
	}
	for _, v := range []string{val, val2, tok} {
		for what, buf := range map[string][]byte{"answers and events": answers.Bytes(), "agent log": logs.Bytes()} {
			if bytes.Contains(buf, []byte(v)) {
				t.Errorf("a secret value is in the %s", what)
			}
		}
	}
}

// TestSecretsSopsThroughAPI: a sops bundle is listed and described with
// format sops and read_only; a change is 409 secrets_read_only saying to
// use sops; a sops file not encrypted to the agent is 422
// secrets_unreadable naming the bundle and the agent's recipient.
func TestSecretsSopsThroughAPI(t *testing.T) {
	d, c, logs := startAgent(t)
	ctx := context.Background()
	st := secrets.Store{Dir: d.Config.SecretsDir, KeyFile: d.Config.SecretsKeyFile}
	rcpt, err := st.Init()
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("env:\n  SOPS_KEY: sk-from-sops-9f9f\n")
	write := func(file string, recipients ...string) {
		doc, err := sopstest.Encrypt(plain, false, recipients...)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(st.Dir, file), doc, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("team.sops.yaml", rcpt)
	sum, err := c.SecretsBundle(ctx, "team")
	if err != nil || sum.Format != "sops" || !sum.ReadOnly || strings.Join(sum.Env, ",") != "SOPS_KEY" {
		t.Fatalf("sops bundle %+v %v", sum, err)
	}
	_, err = c.SetSecretEnv(ctx, "team", "OTHER", "v")
	var ae *api.Error
	if !api.IsCode(err, api.CodeSecretsReadOnly) || !asAPI(err, &ae) || ae.Status != http.StatusConflict || !strings.Contains(ae.Message, "sops edit") {
		t.Fatalf("set on a sops bundle: %v", err)
	}
	if _, err := c.UnsetSecretEnv(ctx, "team", "SOPS_KEY"); !api.IsCode(err, api.CodeSecretsReadOnly) {
		t.Fatalf("unset on a sops bundle: %v", err)
	}

	other, _ := age.GenerateX25519Identity()
	write("theirs.sops.yaml", other.Recipient().String())
	_, err = c.SecretsBundle(ctx, "theirs")
	if !api.IsCode(err, api.CodeSecretsUnreadable) || !asAPI(err, &ae) || ae.Status != http.StatusUnprocessableEntity ||
		!strings.Contains(ae.Message, "bundle theirs") || !strings.Contains(ae.Message, rcpt) {
		t.Fatalf("sops bundle for another key: %v", err)
	}
	// The list names the unreadable bundle rather than hiding it.
	if _, err := c.SecretsBundles(ctx); !api.IsCode(err, api.CodeSecretsUnreadable) {
		t.Fatalf("list with an unreadable bundle: %v", err)
	}
	evs, err := c.Events(ctx, "", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Events {
		if strings.HasPrefix(e.Kind, "secrets.") {
			t.Errorf("a refused change was recorded: %+v", e)
		}
	}
	if strings.Contains(logs.String(), "sk-from-sops-9f9f") {
		t.Error("a sops value is in the agent's log")
	}
}

func asAPI(err error, out **api.Error) bool { return errors.As(err, out) }
