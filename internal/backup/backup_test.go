package backup_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/backup"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets"
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets/sopstest"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// TestBackupWhileCreating takes backups while 20 sandboxes are being created
// and restores each into a fresh state directory: the database passes
// integrity_check and every sandbox is present in a state it really passed
// through (its row agrees with its own last transition event) or absent.
func TestBackupWhileCreating(t *testing.T) {
	ctx := context.Background()
	d, err := agent.StartDev(ctx, agent.DevOptions{StateDir: t.TempDir(), Speed: 10, ProvisioningTimeout: time.Minute,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c, _ := client.New(client.Config{Endpoint: d.Info.Endpoint, Token: d.Info.Token, CACert: d.Info.CACert})
	done := make(chan error, 1)
	go func() {
		for i := 0; i < 20; i++ {
			if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: fmt.Sprintf("b%02d", i), Profile: "yolo-ephemeral"}); err != nil {
				done <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		done <- nil
	}()
	var archives []string
	for i := 0; i < 4; i++ {
		time.Sleep(250 * time.Millisecond)
		out := filepath.Join(t.TempDir(), fmt.Sprintf("b%d.tar.gz", i))
		m, err := backup.Backup(ctx, d.Config, out, backup.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if m.SchemaVersion != store.SchemaVersion() || len(m.Files) != 4 { // db + 3 profiles (no bundles yet)
			t.Fatalf("manifest %+v", m)
		}
		archives = append(archives, out)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Restore(ctx, d.Config, archives[0], store.SchemaVersion()); !errors.Is(err, backup.ErrRunning) {
		t.Fatalf("restore over a running agent: %v", err)
	}
	sawMidway := false
	for _, a := range archives {
		cfg := *d.Config
		cfg.StateDir, cfg.SocketPath, cfg.ProfilesDir, cfg.File = t.TempDir(), filepath.Join(t.TempDir(), "none.sock"), t.TempDir(), ""
		if _, err := backup.Restore(ctx, &cfg, a, store.SchemaVersion()); err != nil {
			t.Fatal(err)
		}
		if ents, _ := os.ReadDir(cfg.ProfilesDir); len(ents) != 3 {
			t.Fatalf("profiles restored: %d", len(ents))
		}
		st, err := store.Open(ctx, backup.DBPath(&cfg), nil)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := st.Sandboxes(ctx, store.Filter{IncludeDestroyed: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, sb := range rows {
			evs, _ := st.Events(ctx, store.EventFilter{SandboxID: sb.ID}, 0, 0)
			last := api.StateRequested
			for _, e := range evs {
				if e.To != "" {
					last = e.To
				}
			}
			if last != sb.State || !sb.State.Valid() {
				t.Fatalf("%s: row says %s, its events end at %s", sb.Name, sb.State, last)
			}
			if sb.State != api.StateRunning {
				sawMidway = true
			}
		}
		st.Close()
	}
	if !sawMidway {
		t.Log("every backup happened to see only settled sandboxes")
	}
	// Encrypted bundles are always included; the key only on request.
	sec := secrets.Store{Dir: d.Config.SecretsDir, KeyFile: d.Config.SecretsKeyFile}
	sec.Init()
	sec.Save("default", &secrets.Bundle{Env: map[string]string{"K": "v-secret-value"}})
	for _, withKey := range []bool{false, true} {
		m, err := backup.Backup(ctx, d.Config, filepath.Join(t.TempDir(), "s.tar.gz"), backup.Options{IncludeKey: withKey})
		if err != nil {
			t.Fatal(err)
		}
		files := strings.Join(m.Files, " ")
		if !strings.Contains(files, "secrets/default.age") || strings.Contains(files, "keys/") != withKey {
			t.Fatalf("include key %v: %v", withKey, m.Files)
		}
	}
	// A sops bundle (the team's own file, read-only to agentd) is carried
	// and restored byte for byte: it exists nowhere else on the host.
	rcpt, err := sec.Recipient()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := sopstest.Encrypt([]byte("env:\n  TEAM_TOKEN: t-secret\n"), false, rcpt)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(d.Config.SecretsDir, "team.sops.yaml"), doc, 0o600)
	os.WriteFile(filepath.Join(d.Config.SecretsDir, "notes.txt"), []byte("not a bundle"), 0o600)
	withSops := filepath.Join(t.TempDir(), "sops.tar.gz")
	m, err := backup.Backup(ctx, d.Config, withSops, backup.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if files := strings.Join(m.Files, " "); !strings.Contains(files, "secrets/team.sops.yaml") || strings.Contains(files, "notes.txt") {
		t.Fatalf("backup with a sops bundle: %v", m.Files)
	}
	rcfg := *d.Config
	rcfg.StateDir, rcfg.SocketPath, rcfg.SecretsDir = t.TempDir(), filepath.Join(t.TempDir(), "none.sock"), t.TempDir()
	if _, err := backup.Restore(ctx, &rcfg, withSops, store.SchemaVersion()); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(rcfg.SecretsDir, "team.sops.yaml")); err != nil || string(got) != string(doc) {
		t.Fatalf("restored sops bundle differs: %v", err)
	}
	// A damaged archive is refused before anything is replaced.
	bad := filepath.Join(t.TempDir(), "bad.tar.gz")
	os.WriteFile(bad, []byte("not a backup"), 0o600)
	cfg := *d.Config
	cfg.StateDir, cfg.SocketPath = t.TempDir(), filepath.Join(t.TempDir(), "none.sock")
	if _, err := backup.Restore(ctx, &cfg, bad, store.SchemaVersion()); err == nil {
		t.Fatal("a damaged archive was restored")
	}
	if _, err := os.Stat(backup.DBPath(&cfg)); !os.IsNotExist(err) {
		t.Fatal("a refused restore wrote a database")
	}
}
