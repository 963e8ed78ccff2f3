package cli

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
)

// TestSimCommand runs the real binary and talks to it through internal/pve.
func TestSimCommand(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "agentd")
	if out, err := exec.Command("go", "build", "-o", bin, "../../agentd").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	reqLog := filepath.Join(t.TempDir(), "requests.jsonl")
	cmd := exec.Command(bin, "sim", "--addr", "127.0.0.1:0", "--ca-file", ca, "--log-requests", reqLog)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	env := map[string]string{}
	sc := bufio.NewScanner(stdout)
	for len(env) < 6 && sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		env[k] = v
	}
	for _, k := range []string{"PVE_URL", "PVE_TOKEN", "PVE_USER", "PVE_PASSWORD", "PVE_NODE", "PVE_CA_FILE"} {
		if env[k] == "" {
			t.Fatalf("agentd sim did not print %s (got %v)", k, env)
		}
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.LastIndex(env["PVE_TOKEN"], "=")
	c, err := pve.New(pve.Config{URL: env["PVE_URL"], TokenID: env["PVE_TOKEN"][:i], Secret: env["PVE_TOKEN"][i+1:], Node: env["PVE_NODE"], CAPEM: pem})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Clone(ctx, 9000, 100, pve.CloneOptions{Name: "smoke"}); err != nil {
		t.Fatal(err)
	}
	logged, err := os.ReadFile(reqLog)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logged), `"method":"POST","path":"/api2/json/nodes/pve/qemu/9000/clone"`) ||
		strings.Contains(string(logged), env["PVE_TOKEN"][i+1:]) {
		t.Fatalf("--log-requests file lacks the clone or shows the token secret:\n%s", logged)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agentd sim exit after SIGINT: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("agentd sim did not stop on SIGINT")
	}
}
