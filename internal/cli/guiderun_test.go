package cli

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
)

// guideShellLines returns the lines of a guide's ```sh blocks, in order.
func guideShellLines(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	in := false
	for _, l := range strings.Split(string(b), "\n") {
		switch trim := strings.TrimSpace(l); {
		case strings.HasPrefix(trim, "```"):
			in = !in && trim == "```sh"
		case in && trim != "":
			out = append(out, trim)
		}
	}
	return out
}

// TestGuidesRunAgainstDev executes the quickstart, runbook and troubleshooting
// guides: every `agentd …` line of their sh blocks runs, in order, in process
// against one agentd dev instance, with only the variables its env file
// exports (AGENTD_CONFIG included: the local-file commands read its
// config.yaml). The objects the guides name are created first; NAME and the
// backup/doctor paths are the only substitutions. `systemctl stop|start
// agentd` stops and starts the dev agent. Each command must exit 0 unless
// listed in refused with the exit code and text it is documented to show.
func TestGuidesRunAgainstDev(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	d, err := agent.StartDev(ctx, agent.DevOptions{StateDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); d.Close() })
	exportDev := func() {
		t.Helper()
		path, err := writeDevConfig(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range append(d.Env(), EnvConfig+"="+path) {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
	}
	exportDev()
	tmp := t.TempDir()

	must := func(args ...string) {
		t.Helper()
		if code, out := cli(args...); code != 0 {
			t.Fatalf("setup: agentd %s: exit %d: %s", strings.Join(args, " "), code, out)
		}
	}
	// What the guides name: a sandbox fix-123, a detached workspace team-a,
	// a stopped session alice, and NAME (troubleshooting) as sandbox ts-1.
	must("sandbox", "create", "--name", "fix-123", "--profile", "yolo-ephemeral", "--ttl", "2h")
	must("sandbox", "create", "--name", "ts-1", "--profile", "yolo-ephemeral", "--ttl", "2h")
	must("workspace", "create", "--name", "team-a", "--size", "10G")
	must("session", "create", "--name", "alice", "--profile", "yolo-workspace", "--workspace", "new:alice", "--workspace-size", "10G")
	must("session", "stop", "alice")

	// Set up right before a line: the runbook destroys fix-123 twice, the
	// second time with --force.
	before := map[string][][]string{
		"agentd sandbox destroy --force fix-123": {{"sandbox", "create", "--name", "fix-123", "--profile", "yolo-ephemeral", "--ttl", "2h"}},
	}
	// Lines documented to refuse or report a failure against a dev
	// instance: exit code and text.
	type refusal struct {
		code int
		want string
	}
	refused := map[string]refusal{
		// Dev has no nftables ruleset loaded, no conntrack, no bridge: the
		// check reports it (and exits 1), it does not fail to run.
		"agentd host check": {exitError, "nftables"},
	}
	// Lines that change the host: against the dev config they must not.
	hostSafe := map[string]string{
		"agentd host network apply": "nftables: not loaded: " + d.StateDir + " belongs to agentd dev",
	}
	// Not run: the dev instance itself (the quickstart starts it).
	skipped := map[string]bool{"agentd dev --speed 10 --env-file /tmp/agentlab.env": true}

	subst := strings.NewReplacer(" NAME", " ts-1", " /root/", " "+tmp+"/", " /tmp/", " "+tmp+"/")
	ran := map[string]bool{}
	for _, guide := range []string{"quickstart", "runbook", "troubleshooting"} {
		file := "../../templates/guides/" + guide + ".md.tmpl"
		n := 0
		for _, line := range guideShellLines(t, file) {
			switch line {
			case "systemctl stop agentd":
				d.Stop()
				continue
			case "systemctl start agentd":
				if err := d.Restart(ctx); err != nil {
					t.Fatalf("%s: restart: %v", guide, err)
				}
				exportDev()
				continue
			}
			cmds := extractAgentd(line)
			if len(cmds) == 0 {
				continue
			}
			cmdline := strings.TrimSpace(cmds[0])
			ran[cmdline] = true
			if skipped[cmdline] {
				continue
			}
			n++
			for _, args := range before[cmdline] {
				must(args...)
			}
			args := shellFields(subst.Replace(cmdline))[1:]
			code, out := cli(args...)
			t.Logf("%s: agentd %s: exit %d", guide, strings.Join(args, " "), code)
			if r, ok := refused[cmdline]; ok {
				if code != r.code || !strings.Contains(out, r.want) {
					t.Errorf("%s: %s: exit %d, want %d with %q: %s", guide, cmdline, code, r.code, r.want, out)
				}
				continue
			}
			if code != 0 {
				t.Errorf("%s: %s: exit %d: %s", guide, cmdline, code, out)
			}
			if want, ok := hostSafe[cmdline]; ok && !strings.Contains(out, want) {
				t.Errorf("%s: %s on a dev config: %q, want %q", guide, cmdline, out, want)
			}
		}
		if n == 0 {
			t.Errorf("%s: no agentd command in its sh blocks", guide)
		}
	}
	for c := range refused {
		if !ran[c] {
			t.Errorf("refused lists %q, which no guide runs any more", c)
		}
	}
	for c := range hostSafe {
		if !ran[c] {
			t.Errorf("hostSafe lists %q, which no guide runs any more", c)
		}
	}
	for c := range skipped {
		if !ran[c] {
			t.Errorf("skipped lists %q, which no guide has any more", c)
		}
	}
	for c := range before {
		if !ran[c] {
			t.Errorf("before lists %q, which no guide runs any more", c)
		}
	}
}
