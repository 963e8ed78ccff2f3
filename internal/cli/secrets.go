package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/runner"
	"github.com/agentlab/terraform-provider-agentlab/internal/sandbox"
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets"
)

func (g *options) newSecretsCmd() *cobra.Command {
	var cfgPath, bundle string
	var local bool
	cmd := &cobra.Command{
		Use:   "secrets",
		Short: "Manage age-encrypted secrets bundles (env, SSH keys, git credentials)",
		Long: `Secrets live in age-encrypted bundles under secrets_dir, opened by the key in
secrets_key_file (mode 0600). A bundle may also be a sops document
(<name>.sops.yaml or .sops.json, encrypted with sops to the recipient that
"agentd secrets recipient" prints): agentd reads it with the same key, and
refuses to change it (edit it with sops). A profile's "secrets.bundle" names
the bundle its sandboxes receive at bootstrap (and "secrets.env" which
variables). Values are read from a file or stdin, never from the command line,
and never echoed.

Where the change is made: set-env, unset-env, add-ssh-key, remove-ssh-key,
set-git and show go through the agent's API (the Unix socket, or --endpoint
with --token, as every other command), so this machine needs no key file; the
API answers with names only, never a value. They use the key file on this
machine instead:
  - with --local (never contacting an agent), or
  - when no agent answers and --config names a config whose secrets_key_file
    exists (a note on stderr says so).
An agent that answers with an error is never bypassed. init, validate and
show --reveal always use the key file (the API never returns values).`,
	}
	configFlag(cmd.PersistentFlags(), &cfgPath)
	cmd.PersistentFlags().StringVar(&bundle, "bundle", "default", "bundle name")
	cmd.PersistentFlags().BoolVar(&local, "local", false, "use the key file on this machine (from --config), not the agent's API")
	store := func() (secrets.Store, error) {
		cfg, err := loadConfigFile(cfgPath)
		if err != nil {
			return secrets.Store{}, err
		}
		return secrets.Store{Dir: cfg.SecretsDir, KeyFile: cfg.SecretsKeyFile}, nil
	}
	edit := func(fn func(b *secrets.Bundle) error) (*secrets.Bundle, error) {
		st, err := store()
		if err != nil {
			return nil, err
		}
		b, err := st.Load(bundle)
		if err != nil {
			return nil, err
		}
		if err := fn(b); err != nil {
			return nil, err
		}
		return b, st.Save(bundle, b)
	}
	// fallback says whether a command may use the key file after no agent
	// answered: only with an explicit --config whose key file exists.
	fallback := func(cmd *cobra.Command) (string, bool) {
		if f := cmd.Flag("config"); f == nil || !f.Changed {
			return "", false
		}
		st, err := store()
		if err != nil {
			return "", false
		}
		if _, err := os.Stat(st.KeyFile); err != nil {
			return "", false
		}
		return st.KeyFile, true
	}
	// run does one change through the API, or locally (see the help), and
	// prints what happened only once it has.
	run := func(cmd *cobra.Command, viaAPI func(c *client.Client, ctx contextT) (*api.SecretsBundle, error),
		viaKey func(b *secrets.Bundle) error, done string) error {
		var sum *api.SecretsBundle
		if !local {
			err := g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				var err error
				sum, err = viaAPI(c, ctx)
				if client.IsUnreachable(err) {
					key, ok := fallback(cmd)
					if !ok {
						return fmt.Errorf("%w\n(to use the key file on this machine instead, pass --local, with --config if not the default)", err)
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "agentd: no agent answers at %s; using the key file %s\n", c.Endpoint(), key)
					sum = nil
					return nil
				}
				return err
			})
			if err != nil {
				return err
			}
		}
		if sum == nil {
			b, err := edit(viaKey)
			if err != nil {
				return err
			}
			s := b.Summary(bundle)
			sum = &s
		}
		if g.json {
			return printJSON(cmd.OutOrStdout(), sum)
		}
		fmt.Fprintln(cmd.OutOrStdout(), done)
		return nil
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
		b, err := io.ReadAll(io.LimitReader(r, api.SecretValueMax+1))
		if err != nil {
			return "", err
		}
		if len(b) > api.SecretValueMax {
			return "", fmt.Errorf("value longer than %d bytes", api.SecretValueMax)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return "", fmt.Errorf("empty value (give --value-file or pipe the value on stdin)")
		}
		return v, nil
	}
	initCmd := &cobra.Command{
		Use: "init", Short: "Create the age key (once; on the agent's host)", Args: args(),
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
  agentd secrets set-env GITHUB_TOKEN --value-file /root/gh-token
  agentd secrets set-env GITHUB_TOKEN --value-file gh-token --local --config /etc/agentd/config.yaml`,
		RunE: func(cmd *cobra.Command, a []string) error {
			v, err := readValue(cmd, valueFile)
			if err != nil {
				return err
			}
			return run(cmd, func(c *client.Client, ctx contextT) (*api.SecretsBundle, error) {
				return c.SetSecretEnv(ctx, bundle, a[0], v)
			}, func(b *secrets.Bundle) error {
				b.SetEnv(a[0], v)
				return nil
			}, fmt.Sprintf("set %s in bundle %s", a[0], bundle))
		},
	}
	setEnv.Flags().StringVar(&valueFile, "value-file", "", "read the value from this file instead of stdin")
	unsetEnv := &cobra.Command{
		Use: "unset-env NAME", Short: "Remove an environment variable", Args: args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return run(cmd, func(c *client.Client, ctx contextT) (*api.SecretsBundle, error) {
				return c.UnsetSecretEnv(ctx, bundle, a[0])
			}, func(b *secrets.Bundle) error {
				return b.UnsetEnv(bundle, a[0])
			}, fmt.Sprintf("removed %s from bundle %s", a[0], bundle))
		},
	}
	var keyFile string
	addKey := &cobra.Command{
		Use: "add-ssh-key NAME --key-file FILE.pub", Short: "Authorize an SSH public key in sandboxes", Args: args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			raw, err := os.ReadFile(keyFile)
			if err != nil {
				return err
			}
			k := strings.TrimSpace(string(raw))
			return run(cmd, func(c *client.Client, ctx contextT) (*api.SecretsBundle, error) {
				return c.AddSSHKey(ctx, bundle, a[0], k)
			}, func(b *secrets.Bundle) error {
				b.AddSSHKey(a[0], k)
				return nil
			}, fmt.Sprintf("added ssh key %s to bundle %s", a[0], bundle))
		},
	}
	addKey.Flags().StringVar(&keyFile, "key-file", "", "public key file (required)")
	_ = addKey.MarkFlagRequired("key-file")
	rmKey := &cobra.Command{
		Use: "remove-ssh-key NAME", Short: "Remove an SSH key", Args: args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return run(cmd, func(c *client.Client, ctx contextT) (*api.SecretsBundle, error) {
				return c.RemoveSSHKey(ctx, bundle, a[0])
			}, func(b *secrets.Bundle) error {
				return b.RemoveSSHKey(bundle, a[0])
			}, fmt.Sprintf("removed ssh key %s from bundle %s", a[0], bundle))
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
			return run(cmd, func(c *client.Client, ctx contextT) (*api.SecretsBundle, error) {
				return c.SetGit(ctx, bundle, api.SetGitRequest{Username: gitUser, Host: gitHost, Token: tok})
			}, func(b *secrets.Bundle) error {
				b.Git = &secrets.Git{Username: gitUser, Host: gitHost, Token: tok}
				return nil
			}, fmt.Sprintf("set git credentials for %s@%s in bundle %s", gitUser, gitHost, bundle))
		},
	}
	setGit.Flags().StringVar(&gitUser, "username", "", "git user")
	setGit.Flags().StringVar(&gitHost, "host", "github.com", "git host")
	setGit.Flags().StringVar(&gitTokenFile, "token-file", "", "read the token from this file instead of stdin")
	var reveal bool
	show := &cobra.Command{
		Use: "show [--reveal]", Short: "Show a bundle's names (values only with --reveal, from the key file)", Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !local && !reveal {
				var sum *api.SecretsBundle
				err := g.withClient(cmd, func(c *client.Client, ctx contextT) error {
					var err error
					sum, err = c.SecretsBundle(ctx, bundle)
					if client.IsUnreachable(err) {
						if key, ok := fallback(cmd); ok {
							fmt.Fprintf(cmd.ErrOrStderr(), "agentd: no agent answers at %s; using the key file %s\n", c.Endpoint(), key)
							sum = nil
							return nil
						}
						return fmt.Errorf("%w\n(to use the key file on this machine instead, pass --local, with --config if not the default)", err)
					}
					return err
				})
				if err != nil {
					return err
				}
				if sum != nil {
					return printJSON(cmd.OutOrStdout(), sum)
				}
			}
			st, err := store()
			if err != nil {
				return err
			}
			b, err := st.Load(bundle)
			if err != nil {
				return err
			}
			if reveal {
				return printJSON(cmd.OutOrStdout(), b)
			}
			return printJSON(cmd.OutOrStdout(), b.Summary(bundle))
		},
	}
	show.Flags().BoolVar(&reveal, "reveal", false, "print the values (reads the key file on this machine: the API never returns values)")
	validate := &cobra.Command{
		Use: "validate", Short: "Open every bundle and check it (with the key file)", Args: args(),
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
				fmt.Fprintf(cmd.OutOrStdout(), "bundle %s: ok (%s, %d env, %d ssh keys, git %t)\n", n, b.Format, len(b.Env), len(b.SSHKeys), b.Git != nil)
			}
			return nil
		},
	}
	recipient := &cobra.Command{
		Use: "recipient", Short: "Print the age public key bundles are encrypted to (for sops --age)", Args: args(),
		Example: `  sops encrypt --age "$(agentd secrets recipient)" team.yaml > /var/lib/agentd/secrets/team.sops.yaml`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := store()
			if err != nil {
				return err
			}
			r, err := st.Recipient()
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), r)
			return nil
		},
	}
	cmd.AddCommand(initCmd, recipient, setEnv, unsetEnv, addKey, rmKey, setGit, show, validate)
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
