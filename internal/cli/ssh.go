package cli

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/config"
	"github.com/agentlab/terraform-provider-agentlab/internal/sandbox"
)

// SSHCommand is sandbox ssh --print --json: the command and its known_hosts.
type SSHCommand struct {
	Argv           []string `json:"argv"`
	Command        string   `json:"command"`
	KnownHostsFile string   `json:"known_hosts_file,omitempty"`
	KnownHosts     string   `json:"known_hosts,omitempty"`
	Fingerprint    string   `json:"fingerprint,omitempty"`
	Insecure       bool     `json:"insecure_host_key,omitempty"`
	JumpHost       string   `json:"jump_host,omitempty"`
	Identity       string   `json:"identity,omitempty"`
}

func (g *options) sandboxSSHCmd() *cobra.Command {
	var printOnly, noStart, insecureKey, noJump bool
	var jump, identity string
	cmd := &cobra.Command{
		Use:   "ssh NAME|VMID|ID [--print] [--no-start] [-i KEYFILE] [--jump USER@HOST | --no-jump] [-- CMD…]",
		Short: "Open an SSH session to a sandbox as user agent, its host key pinned",
		Long: `Run the system ssh as user "agent" at the sandbox's address. A STOPPED or
SUSPENDED (hibernated) sandbox is started first and awaited until RUNNING,
unless --no-start (then it is an error naming the state); the session counts
as activity for idle stop.

The host key is pinned, not trusted on first use: agentd reads the guest's
/etc/ssh/ssh_host_ed25519_key.pub through the QEMU guest agent the first time
(see "agentd sandbox hostkey") and keeps it; ssh gets it in a private (0600)
known_hosts file with StrictHostKeyChecking=yes, so a guest presenting another
key is refused by ssh, and a guest whose key file changed is refused by agentd.
A guest without that file cannot be pinned: the command fails unless
--insecure-host-key, which skips host key checking altogether.

The guest user "agent" accepts the keys in the agent's ssh_public_keys; -i
KEYFILE (or AGENTLAB_SSH_IDENTITY) makes ssh offer only that private key, and
a KEYFILE.pub that is not among ssh_public_keys is warned about before ssh
runs.

--jump USER@HOST hops through a host that reaches the agent subnet (ssh -J),
typically the Proxmox host. Without it the jump host is AGENTLAB_SSH_JUMP, or,
when the CLI reaches the agent over https:// (so it is probably not on the
host), the agent's ssh_jump_host; over the Unix socket the CLI runs on the host
and connects directly. --no-jump connects directly in any case. --print prints the ssh command (shell-quoted)
instead of running it, and keeps its known_hosts file; with --json it prints
the argv, the file and the key. CMD after -- runs instead of a login shell.

Under agentd dev no SSH server runs in the simulated guest: the host key is
one the simulated guest creates at its first boot (deterministic per VM), so
--print works, but running ssh does not reach anything.`,
		Example: `  agentd sandbox ssh demo
  agentd sandbox ssh demo -- uname -a
  agentd sandbox ssh demo --jump root@pve1.lan
  agentd sandbox ssh demo -i ~/.ssh/agentlab_ed25519
  agentd sandbox ssh demo --print --no-start
  agentd sandbox ssh demo --print --json`,
		ValidArgsFunction: g.completeSandboxes,
		Args: func(cmd *cobra.Command, a []string) error {
			n := len(a)
			if d := cmd.ArgsLenAtDash(); d >= 0 {
				n = d
				if len(a) == d {
					return usagef("%s: nothing after --; give a command, e.g. %s demo -- uname -a", cmd.CommandPath(), cmd.CommandPath())
				}
			}
			if n != 1 {
				return usagef("%s needs NAME (and optionally -- CMD…), e.g. %s demo -- uname -a", cmd.CommandPath(), cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, a []string) error {
			if g.json && !printOnly {
				return usagef("--json needs --print: an ssh session has no JSON form")
			}
			if jump != "" && !config.JumpHostRE.MatchString(jump) {
				return usagef("--jump %q: want USER@HOST or HOST (optionally :PORT), e.g. root@pve1.lan", jump)
			}
			if jump != "" && noJump {
				return usagef("--jump and --no-jump contradict each other: give one")
			}
			if identity == "" {
				identity = os.Getenv(envSSHIdentity)
			}
			if identity != "" {
				if fi, err := os.Stat(identity); err != nil || fi.IsDir() {
					return usagef("-i %q: not a readable private key file (ssh -i takes the private key, e.g. ~/.ssh/id_ed25519)", identity)
				}
			}
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				sb, err := g.sshReady(cmd, c, ctx, a[0], noStart)
				if err != nil {
					return err
				}
				if _, err := c.Touch(ctx, sb.Name); err != nil {
					return err
				}
				st, err := c.Status(ctx)
				if err != nil {
					return err
				}
				out := SSHCommand{Identity: identity}
				if out.JumpHost, err = sshJump(jump, noJump, c.Endpoint(), st.SSH.JumpHost); err != nil {
					return err
				}
				if w := identityWarning(identity, st.SSH, !printOnly); w != "" {
					printf(cmd.ErrOrStderr(), "agentd: warning: %s\n", w)
				}
				hk, err := c.HostKey(ctx, sb.Name)
				switch {
				case err == nil:
					out.Fingerprint = hk.Fingerprint
					if out.KnownHosts, err = knownHostsLine(sb.IP, hk.Key); err != nil {
						return err
					}
				case insecureKey && api.IsCode(err, api.CodeHostKeyUnavailable):
					printf(cmd.ErrOrStderr(), "agentd: WARNING: host key not checked (--insecure-host-key): %s\n", err)
					out.Insecure = true
				case api.IsCode(err, api.CodeHostKeyUnavailable):
					var ae *api.Error
					if errors.As(err, &ae) {
						e := *ae
						e.Message += "; --insecure-host-key connects without checking the host key"
						return &e
					}
					return err
				default:
					return err
				}
				if !out.Insecure {
					f, err := os.CreateTemp("", "agentd-known-hosts-"+fileSafe.ReplaceAllString(sb.Name, "_")+"-*")
					if err != nil {
						return err
					}
					out.KnownHostsFile = f.Name()
					_, werr := f.WriteString(out.KnownHosts)
					if err := errors.Join(werr, f.Chmod(0o600), f.Close()); err != nil {
						_ = os.Remove(f.Name())
						return fmt.Errorf("write known_hosts: %w", err)
					}
				}
				out.Argv = sshArgv(sb.IP, out.KnownHostsFile, out.JumpHost, identity, cmdAfterDash(cmd, a))
				out.Command = shellJoin(out.Argv)
				if printOnly {
					if g.json {
						return printJSON(cmd.OutOrStdout(), out)
					}
					printf(cmd.OutOrStdout(), "%s\n", out.Command)
					return nil
				}
				if out.KnownHostsFile != "" {
					defer os.Remove(out.KnownHostsFile)
				}
				return runSSH(cmd, out.Argv)
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&printOnly, "print", false, "print the ssh command instead of running it (its known_hosts file is kept)")
	f.BoolVar(&noStart, "no-start", false, "fail instead of starting a STOPPED or SUSPENDED sandbox")
	f.StringVar(&jump, "jump", "", "reach the sandbox through this host (ssh -J USER@HOST; default: AGENTLAB_SSH_JUMP, or the agent's ssh_jump_host over https)")
	f.BoolVar(&noJump, "no-jump", false, "connect directly even when a default jump host is configured")
	f.StringVarP(&identity, "identity", "i", "", "private key for ssh -i, offered alone (env AGENTLAB_SSH_IDENTITY)")
	f.BoolVar(&insecureKey, "insecure-host-key", false, "connect without host key checking when the guest has no host key to pin")
	return cmd
}

// Environment defaults of sandbox ssh's -i and --jump.
const (
	envSSHIdentity = "AGENTLAB_SSH_IDENTITY"
	envSSHJump     = "AGENTLAB_SSH_JUMP"
)

// sshJump picks the jump host: the flag, then AGENTLAB_SSH_JUMP, then the
// agent's ssh_jump_host, but that one only over https: a CLI on the Unix
// socket is on the Proxmox host, which routes to the agent subnet itself.
func sshJump(flag string, none bool, endpoint, agentDefault string) (string, error) {
	switch {
	case none:
		return "", nil
	case flag != "":
		return flag, nil
	}
	if env := os.Getenv(envSSHJump); env != "" {
		if !config.JumpHostRE.MatchString(env) {
			return "", usagef("%s=%q: want USER@HOST or HOST (optionally :PORT), e.g. root@pve1.lan", envSSHJump, env)
		}
		return env, nil
	}
	if strings.HasPrefix(endpoint, "https://") && agentDefault != "" {
		// What an agent answers reaches ssh's argv on this machine: checked
		// like the flag, so that no agent can hand the CLI an ssh option.
		if !config.JumpHostRE.MatchString(agentDefault) {
			return "", fmt.Errorf("the agent's ssh_jump_host %q is not USER@HOST or HOST[:PORT]: refused (give --jump or --no-jump)", agentDefault)
		}
		return agentDefault, nil
	}
	return "", nil
}

// identityWarning says why ssh will probably be refused with this identity:
// its public half is not among the keys the guest user accepts. "" when it is,
// or when that cannot be told (no KEYFILE.pub, no identity given). An agent
// without any key is worth a warning only when ssh is about to run (--print
// is also used for the known_hosts entry alone).
func identityWarning(identity string, info api.SSHInfo, running bool) string {
	if len(info.AuthorizedKeys) == 0 && (running || identity != "") {
		return "the agent has no ssh_public_keys, so the guest user " + info.User + " accepts no key: add yours to ssh_public_keys in the agent's config.yaml (new sandboxes get it)"
	}
	if identity == "" {
		return ""
	}
	pub, err := os.ReadFile(identity + ".pub")
	if err != nil {
		return ""
	}
	fp, err := sandbox.KeyFingerprint(string(pub))
	if err != nil {
		return identity + ".pub: " + err.Error()
	}
	if !slices.Contains(info.AuthorizedKeys, fp) {
		return fmt.Sprintf("%s.pub (%s) is not among the agent's ssh_public_keys (%s): the guest will refuse it", identity, fp, strings.Join(info.AuthorizedKeys, ", "))
	}
	return ""
}

func cmdAfterDash(cmd *cobra.Command, a []string) []string {
	if d := cmd.ArgsLenAtDash(); d >= 0 {
		return a[d:]
	}
	return nil
}

// sshReady returns the sandbox RUNNING with an address, starting it first
// unless noStart.
func (g *options) sshReady(cmd *cobra.Command, c *client.Client, ctx contextT, ref string, noStart bool) (*api.Sandbox, error) {
	sb, err := c.Sandbox(ctx, ref)
	if err != nil {
		return nil, err
	}
	if sb.State.Settling() {
		if sb, err = c.WaitSandbox(ctx, sb.ID, 250*time.Millisecond); err != nil {
			return nil, err
		}
	}
	if sb.State == api.StateStopped || sb.State == api.StateSuspended {
		if noStart {
			return nil, api.Errorf(http.StatusConflict, api.CodeInvalidState,
				"sandbox %s is %s and --no-start was given: start it with agentd sandbox start %s", sb.Name, sb.State, sb.Name)
		}
		start, after := time.Now(), lastEventID(c, ctx, sb.Name)
		if _, err := c.Start(ctx, sb.Name); err != nil {
			return nil, err
		}
		if sb, err = g.waitSandbox(cmd, c, ctx, sb.ID, after, start); err != nil {
			return nil, err
		}
	}
	if sb.State != api.StateRunning {
		msg := fmt.Sprintf("sandbox %s is %s, not RUNNING: cannot ssh to it", sb.Name, sb.State)
		if sb.Error != "" {
			msg += " (" + sb.Error + ")"
		}
		return nil, api.Errorf(http.StatusConflict, api.CodeInvalidState, "%s", msg)
	}
	if sb.IP == "" {
		return nil, fmt.Errorf("sandbox %s is RUNNING but has no address yet", sb.Name)
	}
	// The address the agent answers becomes ssh's destination on this
	// machine: only an IP address, so that no agent can make it a host
	// name elsewhere, a second known_hosts line or anything ssh parses.
	if a, err := netip.ParseAddr(sb.IP); err != nil || a.Zone() != "" || a.String() != sb.IP {
		return nil, fmt.Errorf("the agent answers %q as the address of sandbox %s, which is not an IP address: refused (is the agent at this endpoint the one you meant?)", sb.IP, sb.Name)
	}
	return sb, nil
}

// fileSafe is what a sandbox name may keep in a temporary file's name: the
// file's path goes into ssh's UserKnownHostsFile, which splits on spaces
// and expands %-tokens and ~.
var fileSafe = regexp.MustCompile(`[^A-Za-z0-9._-]`)

// knownHostsLine is the pinned known_hosts entry. Address and key come from
// the agent and go into a file ssh trusts: a key with a line break could add
// an entry for any host, or a @cert-authority line, so the key must be one
// well-formed "TYPE BASE64" public key.
func knownHostsLine(ip, key string) (string, error) {
	f := strings.Fields(key)
	if len(f) != 2 || key != f[0]+" "+f[1] {
		return "", fmt.Errorf("the agent's host key for %s is not one \"TYPE BASE64\" public key: refused", ip)
	}
	if _, err := sandbox.KeyFingerprint(key); err != nil {
		return "", fmt.Errorf("the agent's host key for %s: %w: refused", ip, err)
	}
	return ip + " " + key + "\n", nil
}

// sshArgv is the ssh command line: the pinned known_hosts file (or no
// checking when knownHosts is ""), the identity, the jump host, then -- so that nothing
// after the destination is taken for an option.
func sshArgv(ip, knownHosts, jump, identity string, command []string) []string {
	argv := []string{"ssh"}
	if knownHosts != "" {
		argv = append(argv, "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile="+knownHosts)
	} else {
		argv = append(argv, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null")
	}
	argv = append(argv, "-o", "GlobalKnownHostsFile=/dev/null")
	if identity != "" {
		argv = append(argv, "-i", identity, "-o", "IdentitiesOnly=yes")
	}
	if jump != "" {
		argv = append(argv, "-J", jump)
	}
	argv = append(argv, "--", sandbox.SSHUser+"@"+ip)
	return append(argv, command...)
}

func runSSH(cmd *cobra.Command, argv []string) error {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("ssh: %w (install an OpenSSH client, or use agentd sandbox exec)", err)
	}
	c := exec.Command(path, argv[1:]...)
	c.Stdin, c.Stdout, c.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
	err = c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return exitStatus{ee.ExitCode()}
	}
	return err
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9@%+=:,./_-]+$`)

// shellJoin quotes argv for a POSIX shell.
func shellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, s := range argv {
		if shellSafe.MatchString(s) {
			q[i] = s
		} else {
			q[i] = "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}

func (g *options) sandboxHostKeyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "hostkey NAME|VMID|ID",
		Short: "Show a sandbox's pinned SSH host key (pinned on first use)",
		Long: `Print the SSH host key agentd pinned for the sandbox, in known_hosts form
("ADDRESS ssh-ed25519 AAAA…"), with its fingerprint. The first call on a
RUNNING sandbox reads /etc/ssh/ssh_host_ed25519_key.pub from the guest
through the QEMU guest agent and pins it; later calls answer the pinned key
and, while the sandbox runs, check the guest still has it: a changed key is
refused (host_key_changed). A pin is never replaced.`,
		Example: `  agentd sandbox hostkey demo
  agentd sandbox hostkey demo --json`,
		Args:              args("NAME|VMID|ID"),
		ValidArgsFunction: g.completeSandboxes,
		RunE: func(cmd *cobra.Command, a []string) error {
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				hk, err := c.HostKey(ctx, a[0])
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), hk)
				}
				sb, err := c.Sandbox(ctx, hk.SandboxID)
				if err != nil {
					return err
				}
				checked := "no: answered from the pin (sandbox " + string(sb.State) + ", or its guest agent did not answer)"
				if hk.Verified {
					checked = "yes, the guest has it now"
				}
				return kv(cmd.OutOrStdout(), [][2]string{{"Sandbox", hk.Sandbox}, {"Known hosts", dash(sb.IP) + " " + hk.Key},
					{"Fingerprint", hk.Fingerprint}, {"Pinned", fmtTime(&hk.PinnedAt)}, {"Checked", checked}})
			})
		},
	}
}
