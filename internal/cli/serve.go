package cli

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/config"
)

func newServeCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the host agent (the systemd service)",
		Long: `Run the host agent until SIGINT or SIGTERM.

It reads the configuration file (every key and its default: "agentd config
default"), loads every profile in profiles_dir (any invalid profile stops the
start, with the file, line and key at fault), opens the SQLite state in
state_dir, resumes sandboxes whose provisioning was interrupted, and serves the
API on socket_path and, when listen is set, on TLS with a bearer token.`,
		Example: `  agentd serve
  agentd serve --config /etc/agentd/config.yaml`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, profiles, err := loadConfig(cfgPath)
			if err != nil {
				return err
			}
			var log *slog.Logger
			if cfg.LogFormat == "json" {
				log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
			} else {
				log = slog.New(slog.NewTextHandler(os.Stderr, nil))
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			a, err := agent.Start(ctx, cfg, profiles, log)
			if err != nil {
				return err
			}
			defer a.Close()
			select {
			case <-ctx.Done():
				log.Info("shutting down")
			case err := <-a.Err():
				return fmt.Errorf("listener failed: %w", err)
			}
			return nil
		},
	}
	configFlag(cmd.Flags(), &cfgPath)
	return cmd
}

func (g *options) newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Show or check agentd's configuration"}
	cmd.AddCommand(&cobra.Command{
		Use:   "default",
		Short: "Print every configuration key with its default and meaning",
		Args:  args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprint(cmd.OutOrStdout(), config.Sample)
			return err
		},
	})
	var path string
	check := &cobra.Command{
		Use:   "check",
		Short: "Validate a configuration file and its profiles without starting",
		Args:  args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, set, err := loadConfig(path)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), map[string]any{"config": path, "ok": true, "profiles": set.Names()})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok; profiles: %s\n", path, strings.Join(set.Names(), ", "))
			return nil
		},
	}
	configFlag(check.Flags(), &path)
	cmd.AddCommand(check)
	return cmd
}

func newDevCmd() *cobra.Command {
	var o agent.DevOptions
	var envFile string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run agentd on an embedded Proxmox VE simulator (no Proxmox needed)",
		Long: `Run a complete local AgentLab: the Proxmox VE simulator (node pve, storages
local, local-lvm and local-zfs, cloud-init template VM 9000 with the guest agent)
and an agent with the shipped profiles, listening on loopback with TLS.

It prints AGENTLAB_ENDPOINT, AGENTLAB_TOKEN and AGENTLAB_CA_CERT (read as they
are by this CLI and by the Terraform provider) and the simulator's PVE_URL,
PVE_TOKEN and PVE_NODE, one KEY=VALUE per line, and AGENTD_CONFIG: the
config.yaml it writes into its state dir, which every command that reads a
configuration file (secrets, backup, restore, host, config check, doctor)
uses when --config is not given. Then it serves until interrupted.
Task and boot times are those of a small real host divided by --speed
(0: instant). Without --state-dir the state lives in a temporary directory that
is removed on exit. With it, both the agent's state and the simulated Proxmox
host (its VMs, disks with their content, snapshots, firewall, tasks) survive a
restart, even kill -9: sandboxes come back as they were, not DESTROYED.
With --nodes N (N > 1) the simulator is a cluster of nodes pve1..pveN sharing
the NFS storage "shared"; the template and the agent's configured node are pve1.`,
		Example: `  agentd dev
  agentd dev --speed 10 --env-file /tmp/agentlab.env &
  set -a; . /tmp/agentlab.env; set +a; agentd status`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			o.Log = log
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			o.PersistSim = o.StateDir != ""
			d, err := agent.StartDev(ctx, o)
			if err != nil {
				return err
			}
			defer d.Close()
			cfgFile, err := writeDevConfig(d)
			if err != nil {
				return fmt.Errorf("write the dev config.yaml: %w", err)
			}
			env := strings.Join(append(d.Env(), EnvConfig+"="+cfgFile), "\n") + "\n"
			if envFile != "" {
				// Written whole, then renamed: a script polling for the file never
				// reads half of it.
				tmp := envFile + ".tmp"
				if err := os.WriteFile(tmp, []byte(env), 0o600); err != nil {
					return fmt.Errorf("--env-file: %w", err)
				}
				if err := os.Rename(tmp, envFile); err != nil {
					return fmt.Errorf("--env-file: %w", err)
				}
				defer os.Remove(envFile)
			}
			out := cmd.OutOrStdout()
			fmt.Fprint(out, env)
			if f, ok := out.(*os.File); ok {
				_ = f.Sync()
			}
			select {
			case <-ctx.Done():
			case err := <-d.Err():
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.StateDir, "state-dir", "", "keep state here (default: a temporary directory removed on exit)")
	f.StringVar(&o.Listen, "listen", "127.0.0.1:0", "TCP address of the API (port 0 picks a free port)")
	f.StringVar(&o.SimAddr, "sim-addr", "127.0.0.1:0", "address of the Proxmox simulator")
	f.IntVar(&o.Nodes, "nodes", 1, "simulate a cluster of this many nodes (pve1..pveN with a shared storage; 1: the standalone node pve)")
	f.Float64Var(&o.Speed, "speed", 1, "divide realistic task and boot times by this (0: instant)")
	f.DurationVar(&o.ProvisioningTimeout, "provisioning-timeout", 10*time.Minute, "fail sandboxes not RUNNING after this long")
	f.StringVar(&o.LogRequests, "log-requests", "", "append the simulator's request log (one JSON line per Proxmox API request, secrets redacted) to this file")
	f.StringVar(&envFile, "env-file", "", "also write the KEY=VALUE lines to this file (mode 0600)")
	return cmd
}
