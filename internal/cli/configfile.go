package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/config"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
)

// EnvConfig names the configuration file every command that reads one uses
// when --config is not given; `agentd dev` exports it.
const EnvConfig = "AGENTD_CONFIG"

// devMarker, in a state dir, says `agentd dev` owns it: commands that would
// change this machine (nftables) leave it alone.
const devMarker = "agentd-dev"

// defaultConfigPath is $AGENTD_CONFIG, else /etc/agentd/config.yaml.
func defaultConfigPath() string {
	if p := os.Getenv(EnvConfig); p != "" {
		return p
	}
	return config.DefaultPath
}

// configFlag adds --config with the shared default and help.
func configFlag(f *pflag.FlagSet, p *string) {
	f.StringVar(p, "config", defaultConfigPath(), "configuration file (env "+EnvConfig+")")
}

// loadConfigFile is config.Load with errors that say what to set.
func loadConfigFile(path string) (*config.Config, error) {
	if path == "" {
		return nil, usagef("no configuration file: give --config FILE or set %s", EnvConfig)
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) && path != config.DefaultPath {
		return nil, fmt.Errorf("configuration file %s does not exist: give --config FILE or set %s (agentd dev writes one into its state dir)", path, EnvConfig)
	}
	return config.Load(path)
}

// loadConfig reads the config file and the profiles it points at.
func loadConfig(path string) (*config.Config, profile.Set, error) {
	cfg, err := loadConfigFile(path)
	if err != nil {
		return nil, nil, err
	}
	if err := needDir(cfg, "profiles_dir", cfg.ProfilesDir); err != nil {
		return nil, nil, err
	}
	profiles, err := profile.LoadDir(cfg.ProfilesDir, cfg.AgentBridge)
	if err != nil {
		return nil, nil, err
	}
	return cfg, profiles, nil
}

// needDir fails with the key to set when dir does not exist.
func needDir(cfg *config.Config, key, dir string) error {
	st, err := os.Stat(dir)
	if err == nil && st.IsDir() {
		return nil
	}
	what := "does not exist"
	if err == nil {
		what = "is not a directory"
	} else if !errors.Is(err, fs.ErrNotExist) {
		what = err.Error()
	}
	return fmt.Errorf("%s %s %s: set %s in %s (or give --config / %s for another configuration)", key, dir, what, key, cfg.File, EnvConfig)
}

// isDev reports whether cfg is the configuration `agentd dev` wrote.
func isDev(cfg *config.Config) bool {
	_, err := os.Stat(filepath.Join(cfg.StateDir, devMarker))
	return err == nil
}

// writeDevConfig writes the configuration of a running `agentd dev` into its
// state dir as config.yaml (with the simulator's token secret and CA beside
// it), so every command that reads a configuration file works against it.
func writeDevConfig(d *agent.Dev) (string, error) {
	cfg := *d.Config
	dir := d.StateDir
	secretFile := filepath.Join(dir, "pve-token-secret")
	if err := os.WriteFile(secretFile, []byte(cfg.ProxmoxTokenSecret+"\n"), 0o600); err != nil {
		return "", err
	}
	caFile := filepath.Join(dir, "pve-ca.pem")
	if err := os.WriteFile(caFile, cfg.ProxmoxCAPEM, 0o644); err != nil {
		return "", err
	}
	cfg.ProxmoxTokenSecretFile, cfg.ProxmoxCAFile = secretFile, caFile
	if err := os.MkdirAll(cfg.SnippetsDir, 0o755); err != nil {
		return "", err
	}
	if ep := d.Info.Endpoint; strings.HasPrefix(ep, "https://") {
		cfg.Listen = strings.TrimPrefix(ep, "https://")
	}
	b, err := yaml.Marshal(&cfg)
	if err != nil {
		return "", err
	}
	head := "# Written by agentd dev: the configuration of the running dev instance, for\n" +
		"# the commands that read one (agentd secrets, backup, host check, ...).\n"
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, append([]byte(head), b...), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, devMarker), []byte("this state dir belongs to agentd dev\n"), 0o644); err != nil {
		return "", err
	}
	if _, err := config.Load(path); err != nil {
		return "", fmt.Errorf("the generated %s does not load: %w", path, err)
	}
	return path, nil
}
