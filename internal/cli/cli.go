package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

type contextT = context.Context

// options is one Run's state: the flags every client command shares. The
// functions that read it are its methods, with the receiver named g (for
// the package-global it replaces), so that two Runs share nothing.
type options struct {
	endpoint string
	token    string
	caCert   string
	insecure bool
	// team is --team: the team a global token (or the socket) acts in.
	team    string
	json    bool
	wide    bool
	timeout time.Duration
	// quiet is --quiet: no progress lines on long waits.
	quiet bool
	// forceProgress prints progress whatever stderr is (tests).
	forceProgress bool
}

func (g *options) addClientFlags(root *cobra.Command) {
	pf := root.PersistentFlags()
	pf.StringVar(&g.endpoint, "endpoint", "", "agentd API: unix:///run/agentd/agentd.sock (default) or https://host:port (env AGENTLAB_ENDPOINT)")
	pf.StringVar(&g.token, "token", "", "bearer token for an https endpoint (env AGENTLAB_TOKEN)")
	pf.StringVar(&g.caCert, "ca-cert", "", "PEM file to trust for an https endpoint (env AGENTLAB_CA_CERT)")
	pf.BoolVar(&g.insecure, "insecure", false, "skip TLS certificate verification (env AGENTLAB_INSECURE)")
	pf.StringVar(&g.team, "team", "", "act in this team (a global token or the socket; env "+client.EnvTeam+")")
	pf.BoolVar(&g.json, "json", false, "print JSON (the API's own objects and field names)")
	pf.BoolVar(&g.wide, "wide", false, "show table columns in full (they are cut at 48 characters otherwise)")
	pf.DurationVar(&g.timeout, "timeout", 2*time.Minute, "give up after this long")
}

func (g *options) newClient() (*client.Client, error) {
	// The HTTP timeout only backs up --timeout, which bounds every command
	// through its context (an exec may legitimately wait for minutes).
	return client.New(client.FromEnv(client.Config{Endpoint: g.endpoint, Token: g.token, CACert: g.caCert, Insecure: g.insecure, Team: g.team,
		Timeout: g.timeout + 30*time.Second, TokenSetting: "--token or " + client.EnvToken}))
}

// actingIn is the team the client acts in: --team, else AGENTLAB_TEAM.
func (g *options) actingIn() string {
	return client.FromEnv(client.Config{Team: g.team}).Team
}

// withClient runs fn with a client and a context bounded by --timeout.
func (g *options) withClient(cmd *cobra.Command, fn func(c *client.Client, ctx contextT) error) error {
	c, err := g.newClient()
	if err != nil {
		return err
	}
	ctx, cancel := g.cmdContext(cmd)
	defer cancel()
	return fn(c, ctx)
}

// cmdContext is cancelled by Ctrl-C and by --timeout.
func (g *options) cmdContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	return ctx, func() { cancel(); stop() }
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func (g *options) printSandboxes(w io.Writer, sbs []api.Sandbox) error {
	if g.json {
		return printJSON(w, api.SandboxList{Sandboxes: sbs})
	}
	rows := make([][]string, 0, len(sbs))
	teams := make([]string, 0, len(sbs))
	for _, s := range sbs {
		teams = append(teams, s.Team)
		vmid := "-"
		if s.VMID != 0 {
			vmid = fmt.Sprint(s.VMID)
		}
		rows = append(rows, []string{s.Name, vmid, string(s.State), dash(s.IP), s.Profile, fmtTime(s.LeaseExpiresAt), dash(s.Error)})
	}
	header, rows := teamColumn("NAME\tVMID\tSTATE\tIP\tPROFILE\tLEASE EXPIRES\tERROR", rows, teams)
	return g.table(w, header, rows)
}

func (g *options) printSandbox(w io.Writer, s *api.Sandbox) error {
	if g.json {
		return printJSON(w, s)
	}
	vmid := "-"
	if s.VMID != 0 {
		vmid = fmt.Sprint(s.VMID)
	}
	lines := [][2]string{{"Name", s.Name}, {"ID", s.ID}, {"State", string(s.State)}, {"Step", dash(s.Step)},
		{"VMID", vmid}, {"Node", dash(s.Node)}, {"IP", dash(s.IP)}, {"Profile", s.Profile}, {"Workspace", dash(s.Workspace)},
		{"Resources", resourcesString(s)}, {"Keepalive", fmt.Sprint(s.Keepalive)}, {"TTL", ttlString(s.TTLSeconds)}, {"Lease expires", fmtTime(s.LeaseExpiresAt)},
		{"Last used", fmtTime(s.LastUsedAt)}, {"Hibernated", fmtTime(s.PausedAt)}, {"Tags", dash(strings.Join(s.Tags, ", "))},
		{"Created", fmtTime(&s.CreatedAt)}, {"Updated", fmtTime(&s.UpdatedAt)}, {"Error", dash(s.Error)}}
	return kv(w, lines)
}

func resourcesString(s *api.Sandbox) string {
	if s.Cores == 0 {
		return "-"
	}
	return fmt.Sprintf("%d cores, %d MiB", s.Cores, s.MemoryMB)
}

func ttlString(secs int64) string {
	if secs == 0 {
		return "none"
	}
	return (time.Duration(secs) * time.Second).String()
}

// exitStatus makes agentd exit with a command's own status, printing nothing.
type exitStatus struct{ code int }

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", e.code) }
