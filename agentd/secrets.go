package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/runner"
	"github.com/agentlab/terraform-provider-agentlab/internal/sandbox"
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets"
)

func newSecretsCmd() *cobra.Command {
	var cfgPath, bundle string
	cmd := &cobra.Command{
		Use:   "secrets",
		Short: "Manage age-encrypted secrets bundles (env, SSH keys, git credentials)",
		Long: `Secrets live in age-encrypted bundles under secrets_dir, opened by the key in
secrets_key_file (mode 0600). A profile's "secrets.bundle" names the bundle its
sandboxes receive at bootstrap (and "secrets.env" which variables). Values are
read from a file or stdin, never from the command line, and never echoed.`,
	}
	configFlag(cmd.PersistentFlags(), &cfgPath)
	cmd.PersistentFlags().StringVar(&bundle, "bundle", "default", "bundle name")
	store := func() (secrets.Store, error) {
		cfg, err := loadConfigFile(cfgPath)
		if err != nil {
			return secrets.Store{}, err
		}
		return secrets.Store{Dir: cfg.SecretsDir, KeyFile: cfg.SecretsKeyFile}, nil
	}
	edit := func(fn func(b *secrets.Bundle) error) error {
		st, err := store()
		if err != nil {
			return err
		}
		b, err := st.Load(bundle)
		if err != nil {
			return err
		}
		if err := fn(b); err != nil {
			return err
		}
		return st.Save(bundle, b)
	}
	readValue := func(cmd *cobra.Command, file string) (string, error) {
		var r io.Reader = cmd.InOrStdin()
		if file != "" {
			f, err := os.Open(file)
			if err != nil {
				return "", err
			}
			defer f.Close()
			r = f
		}
		b, err := io.ReadAll(io.LimitReader(r, 1<<20))
		if err != nil {
			return "", err
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return "", fmt.Errorf("empty value (give --value-file or pipe the value on stdin)")
		}
		return v, nil
	}
	initCmd := &cobra.Command{
		Use: "init", Short: "Create the age key (once)", Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := store()
			if err != nil {
				return err
			}
			rcpt, err := st.Init()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created %s (public key %s); back it up: without it the bundles cannot be opened\n", st.KeyFile, rcpt)
			return nil
		},
	}
	var valueFile string
	setEnv := &cobra.Command{
		Use: "set-env NAME [--value-file FILE]", Short: "Set an environment variable (value from --value-file or stdin)", Args: args("NAME"),
		Example: `  printf %s "$TOKEN" | agentd secrets set-env OPENAI_API_KEY
  agentd secrets set-env GITHUB_TOKEN --value-file /root/gh-token`,
		RunE: func(cmd *cobra.Command, a []string) error {
			v, err := readValue(cmd, valueFile)
			if err != nil {
				return err
			}
			err = edit(func(b *secrets.Bundle) error {
				if b.Env == nil {
					b.Env = map[string]string{}
				}
				b.Env[a[0]] = v
				return nil
			})
			if err != nil {
				return err
			}
			// Only once it is saved: never a success line before a failure.
			fmt.Fprintf(cmd.OutOrStdout(), "set %s in bundle %s\n", a[0], bundle)
			return nil
		},
	}
	setEnv.Flags().StringVar(&valueFile, "value-file", "", "read the value from this file instead of stdin")
	unsetEnv := &cobra.Command{
		Use: "unset-env NAME", Short: "Remove an environment variable", Args: args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return edit(func(b *secrets.Bundle) error {
				if _, ok := b.Env[a[0]]; !ok {
					return fmt.Errorf("bundle %s has no %s", bundle, a[0])
				}
				delete(b.Env, a[0])
				return nil
			})
		},
	}
	var keyFile string
	addKey := &cobra.Command{
		Use: "add-ssh-key NAME --key-file FILE.pub", Short: "Authorize an SSH public key in sandboxes", Args: args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			k, err := os.ReadFile(keyFile)
			if err != nil {
				return err
			}
			return edit(func(b *secrets.Bundle) error {
				if b.SSHKeys == nil {
					b.SSHKeys = map[string]string{}
				}
				b.SSHKeys[a[0]] = strings.TrimSpace(string(k))
				return nil
			})
		},
	}
	addKey.Flags().StringVar(&keyFile, "key-file", "", "public key file (required)")
	_ = addKey.MarkFlagRequired("key-file")
	rmKey := &cobra.Command{
		Use: "remove-ssh-key NAME", Short: "Remove an SSH key", Args: args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return edit(func(b *secrets.Bundle) error {
				if _, ok := b.SSHKeys[a[0]]; !ok {
					return fmt.Errorf("bundle %s has no ssh key %s", bundle, a[0])
				}
				delete(b.SSHKeys, a[0])
				return nil
			})
		},
	}
	var gitUser, gitHost, gitTokenFile string
	setGit := &cobra.Command{
		Use: "set-git --username U [--host H] [--token-file F]", Short: "Set git credentials (token from --token-file or stdin)", Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := readValue(cmd, gitTokenFile)
			if err != nil {
				return err
			}
			return edit(func(b *secrets.Bundle) error {
				b.Git = &secrets.Git{Username: gitUser, Host: gitHost, Token: tok}
				return nil
			})
		},
	}
	setGit.Flags().StringVar(&gitUser, "username", "", "git user")
	setGit.Flags().StringVar(&gitHost, "host", "github.com", "git host")
	setGit.Flags().StringVar(&gitTokenFile, "token-file", "", "read the token from this file instead of stdin")
	var reveal bool
	show := &cobra.Command{
		Use: "show [--reveal]", Short: "Show a bundle (values redacted unless --reveal)", Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := store()
			if err != nil {
				return err
			}
			b, err := st.Load(bundle)
			if err != nil {
				return err
			}
			if !reveal {
				b = b.Redacted()
			}
			return printJSON(cmd.OutOrStdout(), b)
		},
	}
	show.Flags().BoolVar(&reveal, "reveal", false, "print the values")
	validate := &cobra.Command{
		Use: "validate", Short: "Open every bundle and check it", Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := store()
			if err != nil {
				return err
			}
			names, err := st.Names()
			if err != nil {
				return err
			}
			for _, n := range names {
				b, err := st.Load(n)
				if err == nil {
					err = b.Validate()
				}
				if err != nil {
					return fmt.Errorf("bundle %s: %w", n, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "bundle %s: ok (%d env, %d ssh keys, git %t)\n", n, len(b.Env), len(b.SSHKeys), b.Git != nil)
			}
			return nil
		},
	}
	cmd.AddCommand(initCmd, setEnv, unsetEnv, addKey, rmKey, setGit, show, validate)
	return cmd
}

func newGuestCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "guest", Short: "Commands that run inside a sandbox"}
	o := runner.Options{}
	run := &cobra.Command{
		Use:   "run",
		Short: "Fetch the bootstrap, install secrets, run the job, upload artifacts, report",
		Long: `The sandbox side of AgentLab (a systemd unit in the VM template runs it once
at boot): fetch the bootstrap with the single-use token cloud-init wrote to
` + sandbox.BootstrapPath + `, write secrets 0600 into a tmpfs directory, run the
job's task with its secrets in the environment, upload files the task left in
$AGENTLAB_ARTIFACTS and its log, and report the exit code.`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := signalContext(cmd)
			defer cancel()
			o.Stdout = cmd.OutOrStdout()
			res, err := runner.Run(ctx, o)
			if err != nil {
				return err
			}
			if res.Job != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "agentlab: job %s exited %d; artifacts: %s\n", res.Job, res.ExitCode, strings.Join(res.Artifacts, ", "))
			}
			return nil
		},
	}
	run.Flags().StringVar(&o.BootstrapFile, "bootstrap-file", sandbox.BootstrapPath, "bootstrap file written by cloud-init")
	run.Flags().StringVar(&o.SecretsDir, "secrets-dir", "/run/agentlab/secrets", "tmpfs directory for secrets (mode 0700)")
	run.Flags().StringVar(&o.WorkDir, "workdir", "/work/job", "where the job runs")
	cmd.AddCommand(run)
	return cmd
}
