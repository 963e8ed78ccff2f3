package agent_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets"
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets/sopstest"
)

// TestSopsBundleReachesSandbox: a sops file in secrets_dir, encrypted to
// the agent's recipient, is what a sandbox's bootstrap delivers (env, git
// token, SSH keys), with no value in the agent's log.
func TestSopsBundleReachesSandbox(t *testing.T) {
	var logs bytes.Buffer
	d, c := startDev(t, agent.DevOptions{Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	st := secrets.Store{Dir: d.Config.SecretsDir, KeyFile: d.Config.SecretsKeyFile}
	rcpt, err := st.Init()
	if err != nil {
		t.Fatal(err)
	}
	const apiKey, gitTok = "sk-sops-bootstrap-31337", "ghp_sopsBootstrapTok"
	pub := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl op@laptop"
	doc, err := sopstest.Encrypt([]byte("env:\n  API_KEY: "+apiKey+"\nssh_keys:\n  laptop: "+pub+"\ngit:\n  username: bot\n  token: "+gitTok+"\n"), false, rcpt)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(st.Dir, "default.sops.yaml"), doc, 0o600); err != nil {
		t.Fatal(err)
	}
	sb := create(t, c, "sops-sb")
	bs := bootstrapOf(t, d, sb.ID)
	code, got := fetch(t, bs.URL, bs.Token)
	if code != 200 || got.Env["API_KEY"] != apiKey || got.Git == nil || got.Git.Token != gitTok || strings.Join(got.SSHKeys, ",") != pub {
		t.Fatalf("bootstrap from the sops bundle: %d %+v", code, got)
	}
	for _, v := range []string{apiKey, gitTok} {
		if strings.Contains(logs.String(), v) {
			t.Errorf("the agent's log contains a sops value")
		}
	}
}
