package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/backup"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

func (g *options) newBackupCmd() *cobra.Command {
	var cfgPath, out string
	var withKey bool
	cmd := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Back up agentd's state while it runs (database, config, profiles)",
		Long: `Write a tar.gz with a consistent copy of the SQLite database (VACUUM INTO: one
snapshot, safe while agentd writes; never copy agentd.db by hand), the config
file, the profiles and the (encrypted) secrets bundles, plus a manifest with the
schema version and checksum. --include-key adds the key that opens the bundles:
keep such a backup as safe as the key.`,
		Example: `  agentd backup --out /root/agentd-$(date +%F).tar.gz`,
		Args:    args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfigFile(cfgPath)
			if err != nil {
				return err
			}
			if err := needDir(cfg, "state_dir", cfg.StateDir); err != nil {
				return err
			}
			ctx, cancel := g.cmdContext(cmd)
			defer cancel()
			m, err := backup.Backup(ctx, cfg, out, backup.Options{IncludeKey: withKey})
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), m)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: schema %d, %d files, database sha256 %s\n", out, m.SchemaVersion, len(m.Files), m.DBSHA256[:16])
			return nil
		},
	}
	configFlag(cmd.Flags(), &cfgPath)
	cmd.Flags().StringVar(&out, "out", "", "archive to write (required)")
	cmd.Flags().BoolVar(&withKey, "include-key", false, "also include the secrets key (secrets_key_file)")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

func (g *options) newRestoreCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Restore a backup (agentd must be stopped)",
		Long: `Verify a backup (manifest, checksum, PRAGMA integrity_check, schema version)
and install it: the database, the config file and the profiles. Files it
replaces are kept beside them as *.pre-restore-<time>. Refused while agentd
runs. After a restore, start agentd: its reconcile loop compares the restored
rows with Proxmox and reports VMs created after the backup as orphans.`,
		Example: `  systemctl stop agentd && agentd restore /root/agentd-2026-11-27.tar.gz && systemctl start agentd`,
		Args:    args("FILE"),
		RunE: func(cmd *cobra.Command, a []string) error {
			cfg, err := loadConfigFile(cfgPath)
			if err != nil {
				return err
			}
			if err := needDir(cfg, "state_dir", cfg.StateDir); err != nil {
				return err
			}
			ctx, cancel := g.cmdContext(cmd)
			defer cancel()
			m, err := backup.Restore(ctx, cfg, a[0], store.SchemaVersion())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s (taken %s by agentd %s, schema %d)\n", a[0], m.CreatedAt.Format("2006-01-02 15:04:05 MST"), m.Version, m.SchemaVersion)
			return nil
		},
	}
	configFlag(cmd.Flags(), &cfgPath)
	return cmd
}
