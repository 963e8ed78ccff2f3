package doctor_test

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/doctor"
)

// TestBundleHasNoSecrets: a bundle of a run with an API token, a Proxmox token
// secret and an inline secret in the config contains none of them, and does
// contain the diagnostics.
func TestBundleHasNoSecrets(t *testing.T) {
	ctx := context.Background()
	d, err := agent.StartDev(ctx, agent.DevOptions{StateDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c, _ := client.New(client.Config{Endpoint: d.Info.Endpoint, Token: d.Info.Token, CACert: d.Info.CACert})
	c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "doc", Profile: "yolo-ephemeral"})
	c.WaitSandbox(ctx, "doc", 10*time.Millisecond)

	dir := t.TempDir()
	_, pveSecret := d.Sim.Token()
	os.WriteFile(filepath.Join(dir, "pve-secret"), []byte(pveSecret+"\n"), 0o600)
	cfg := "proxmox_token_id: agentd@pve!agentd\nproxmox_token_secret_file: " + filepath.Join(dir, "pve-secret") +
		"\ntoken_file: " + d.Config.TokenFile + "\nstate_dir: " + d.StateDir + "\nproxmox_node: pve\nsocket_path: " + d.Info.Socket + "\n"
	cfgPath := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)

	files := doctor.Collect(ctx, c, cfgPath, nil)
	out := filepath.Join(dir, "doctor.tar.gz")
	if err := doctor.Write(out, files); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(out)
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	all := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		all[h.Name] = string(b)
	}
	for name, body := range all {
		for _, secret := range []string{d.Info.Token, pveSecret} {
			if strings.Contains(body, secret) {
				t.Errorf("%s contains the secret %q", name, secret[:6]+"…")
			}
		}
	}
	for _, want := range []string{"agentd-doctor/status.json", "agentd-doctor/events.json", "agentd-doctor/sandboxes.json", "agentd-doctor/config.yaml", "agentd-doctor/versions.json"} {
		if all[want] == "" {
			t.Errorf("bundle lacks %s (has %v)", want, len(all))
		}
	}
	if !strings.Contains(all["agentd-doctor/sandboxes.json"], `"name": "doc"`) || !strings.Contains(all["agentd-doctor/config.yaml"], "proxmox_token_secret_file: ") ||
		!strings.Contains(all["agentd-doctor/status.json"], `"loops"`) {
		t.Errorf("diagnostics missing:\n%s\n%s", all["agentd-doctor/config.yaml"], all["agentd-doctor/status.json"][:200])
	}
}
