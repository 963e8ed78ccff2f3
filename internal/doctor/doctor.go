// Package doctor collects a bug-report bundle: status, loop stats, recent
// events, sandboxes, workspaces, sessions, orphans, versions and the config,
// with every secret removed.
package doctor

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/config"
	"github.com/agentlab/terraform-provider-agentlab/internal/version"
)

// Redacted replaces every secret.
const Redacted = "[REDACTED]"

var secretKey = regexp.MustCompile(`(?i)(token|secret|password|passwd|key)`)

// redactConfig masks values of secret-looking keys (paths to secret files are
// kept: they are not secrets and help debugging).
func redactConfig(data []byte) []byte {
	var m map[string]any
	if yaml.Unmarshal(data, &m) != nil {
		return []byte("# config could not be parsed; omitted\n")
	}
	for k, v := range m {
		if !secretKey.MatchString(k) || strings.HasSuffix(k, "_file") || strings.HasSuffix(k, "_path") || k == "proxmox_token_id" {
			continue
		}
		if s, ok := v.(string); ok && s == "" {
			continue
		}
		if _, ok := v.([]any); ok && k == "ssh_public_keys" {
			continue
		}
		m[k] = Redacted
	}
	out, _ := yaml.Marshal(m)
	return out
}

// Collect gathers the bundle's files. secrets are values that must not appear
// anywhere in it (API token, Proxmox secret, …): they are scrubbed from every
// file as a last line of defence.
func Collect(ctx context.Context, c *client.Client, cfgPath string, secrets []string) map[string][]byte {
	files := map[string][]byte{}
	put := func(name string, v any, err error) {
		if err != nil {
			files[name+".error.txt"] = []byte(err.Error() + "\n")
			return
		}
		b, _ := json.MarshalIndent(v, "", "  ")
		files[name] = append(b, '\n')
	}
	st, err := c.Status(ctx)
	put("status.json", st, err)
	ev, err := c.Events(ctx, "", 0, 1000)
	put("events.json", ev, err)
	sbs, err := c.Sandboxes(ctx, map[string][]string{"all": {"true"}})
	put("sandboxes.json", sbs, err)
	ws, err := c.Workspaces(ctx)
	put("workspaces.json", ws, err)
	ss, err := c.Sessions(ctx)
	put("sessions.json", ss, err)
	or, err := c.Orphans(ctx)
	put("orphans.json", or, err)
	put("versions.json", map[string]string{"agentd_cli": version.Version, "go": runtime.Version(), "os": runtime.GOOS + "/" + runtime.GOARCH,
		"collected_at": time.Now().UTC().Format(time.RFC3339), "endpoint": c.Endpoint()}, nil)
	files["host-check.txt"] = []byte("not collected: agentd doctor runs agentd host check only with --config (or AGENTD_CONFIG); run agentd host check on the host.\n")
	if cfgPath != "" {
		if data, err := os.ReadFile(cfgPath); err == nil {
			files["config.yaml"] = redactConfig(data)
			if cfg, err := config.Load(cfgPath); err == nil {
				for _, f := range []string{cfg.ProxmoxTokenSecretFile, cfg.TokenFile} {
					if b, err := os.ReadFile(f); err == nil {
						secrets = append(secrets, strings.TrimSpace(string(b)))
					}
				}
			}
		} else {
			files["config.error.txt"] = []byte(err.Error() + "\n")
		}
	}
	for name, b := range files {
		for _, s := range secrets {
			if len(s) >= 8 {
				b = bytes.ReplaceAll(b, []byte(s), []byte(Redacted))
			}
		}
		files[name] = b
	}
	return files
}

// Write stores the files as a tar.gz (mode 0600: it describes the host).
func Write(path string, files map[string][]byte) error {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	now := time.Now()
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: "agentd-doctor/" + n, Mode: 0o600, Size: int64(len(files[n])), ModTime: now}); err != nil {
			return err
		}
		if _, err := tw.Write(files[n]); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	return nil
}
