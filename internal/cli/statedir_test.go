package cli

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

// startEnv starts bin with args and reads n KEY=VALUE lines from its stdout.
func startEnv(t *testing.T, n int, bin string, args ...string) (*exec.Cmd, map[string]string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	env := map[string]string{}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for len(env) < n && sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		env[k] = v
	}
	if len(env) < n {
		t.Fatalf("%s %v printed %v", bin, args, env)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return cmd, env
}

func kill9(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
}

// pveCall sends a request with the simulator's token (also to /_sim hooks).
func pveCall(env map[string]string, method, path, body string) (int, string, error) {
	base := strings.TrimSuffix(env["PVE_URL"], "/api2/json")
	if !strings.HasPrefix(path, "/_sim/") {
		path = "/api2/json" + path
	}
	req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "PVEAPIToken="+env["PVE_TOKEN"])
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	res, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), nil
}

// TestDevStateSurvivesKill9: agentd dev with --state-dir, a running sandbox
// with a workspace holding a file and a stopped sandbox; kill -9; restart:
// after a reconcile both sandboxes are as they were and the file is there.
func TestDevStateSurvivesKill9(t *testing.T) {
	bin := buildAgentd(t)
	dir, err := os.MkdirTemp("", "devst") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	reqLog := dir + "/requests.jsonl"
	args := []string{"dev", "--state-dir", dir, "--speed", "0", "--log-requests", reqLog}
	cmd, env := startEnv(t, 6, bin, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	connect := func(env map[string]string) *client.Client {
		c, err := client.New(client.Config{Endpoint: env["AGENTLAB_ENDPOINT"], Token: env["AGENTLAB_TOKEN"], CACert: env["AGENTLAB_CA_CERT"]})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := connect(env)
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "notes", SizeGB: 1, Storage: "local-zfs"}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []api.CreateSandboxRequest{{Name: "keep", Profile: "yolo-workspace", Workspace: "notes"}, {Name: "parked", Profile: "yolo-ephemeral"}} {
		if _, err := c.CreateSandbox(ctx, r); err != nil {
			t.Fatal(err)
		}
		if sb, err := c.WaitSandbox(ctx, r.Name, 10*time.Millisecond); err != nil || sb.State != api.StateRunning {
			t.Fatalf("%s: %+v %v", r.Name, sb, err)
		}
	}
	if _, err := c.Stop(ctx, "parked"); err != nil {
		t.Fatal(err)
	}
	if sb, err := c.WaitSandbox(ctx, "parked", 10*time.Millisecond); err != nil || sb.State != api.StateStopped {
		t.Fatalf("parked: %+v %v", sb, err)
	}
	ws, err := c.Workspace(ctx, "notes")
	if err != nil || ws.Volume == "" {
		t.Fatalf("workspace: %+v %v", ws, err)
	}
	hook := fmt.Sprintf(`{"volid":%q,"file":"/notes.txt","data":"kept across kill -9"}`, ws.Volume)
	if code, body, err := pveCall(env, "POST", "/_sim/write-file", hook); err != nil || code != 200 {
		t.Fatalf("write-file: %d %s %v", code, body, err)
	}
	kill9(t, cmd)
	if b, err := os.ReadFile(reqLog); err != nil || !strings.Contains(string(b), `"path":"/api2/json/nodes/pve/qemu/9000/clone"`) {
		t.Errorf("agentd dev --log-requests: %v\n%.500s", err, b)
	}

	_, env = startEnv(t, 6, bin, args...)
	c = connect(env)
	rep, err := c.Reconcile(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range rep.Actions {
		t.Errorf("reconcile after restart acted: %+v", a)
	}
	for name, want := range map[string]api.State{"keep": api.StateRunning, "parked": api.StateStopped} {
		if sb, err := c.Sandbox(ctx, name); err != nil || sb.State != want {
			t.Errorf("%s after restart: %+v %v, want %s", name, sb, err, want)
		}
	}
	if ws, err := c.Workspace(ctx, "notes"); err != nil || ws.AttachedSandbox != "keep" {
		t.Errorf("workspace after restart: %+v %v", ws, err)
	}
	code, body, err := pveCall(env, "POST", "/_sim/read-file", fmt.Sprintf(`{"volid":%q,"file":"/notes.txt"}`, ws.Volume))
	if err != nil || code != 200 || !strings.Contains(body, "kept across kill -9") {
		t.Errorf("file after restart: %d %s %v", code, body, err)
	}
}

// TestSimStateKill9DuringWrites kills `agentd sim --state-dir` with SIGKILL at
// random moments while clients write, several times: every restart loads (a
// torn state never does, and a damaged one would fail the start), and every
// write that was answered before the kill is there.
func TestSimStateKill9DuringWrites(t *testing.T) {
	bin := buildAgentd(t)
	dir := t.TempDir()
	rnd := rand.New(rand.NewSource(time.Now().UnixNano()))
	var acked []string
	next := 0
	for round := 0; round < 8; round++ {
		cmd, env := startEnv(t, 5, bin, "sim", "--addr", "127.0.0.1:0", "--state-dir", dir)
		// Everything answered in earlier rounds survived.
		code, body, err := pveCall(env, "GET", "/pools", "")
		if err != nil || code != 200 {
			t.Fatalf("round %d: pools: %d %v", round, code, err)
		}
		var pools struct{ Data []struct{ Poolid string } }
		_ = json.Unmarshal([]byte(body), &pools)
		have := map[string]bool{}
		for _, p := range pools.Data {
			have[p.Poolid] = true
		}
		for _, p := range acked {
			if !have[p] {
				t.Fatalf("round %d: pool %s was acknowledged before the kill and is gone", round, p)
			}
		}
		var stop atomic.Bool
		done := make(chan []string, 2)
		for w := 0; w < 2; w++ {
			w := w
			go func() {
				var mine []string
				for i := 0; !stop.Load(); i++ {
					name := fmt.Sprintf("p%d-%d-%d", round, w, i)
					code, _, err := pveCall(env, "POST", "/pools", fmt.Sprintf(`{"poolid":%q}`, name))
					if err != nil {
						break
					}
					if code == 200 {
						mine = append(mine, name)
					}
					if i%5 == 0 { // bulk: a clone with disks, config and tasks
						_, _, _ = pveCall(env, "POST", "/nodes/pve/qemu/9000/clone", fmt.Sprintf(`{"newid":%d}`, 1000+next+w*100000+i))
					}
				}
				done <- mine
			}()
		}
		time.Sleep(time.Duration(20+rnd.Intn(200)) * time.Millisecond)
		kill9(t, cmd)
		stop.Store(true)
		acked = append(acked, <-done...)
		acked = append(acked, <-done...)
		next += 1000
	}
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged")
	}
	t.Logf("%d acknowledged pools survived 8 kills", len(acked))
}
