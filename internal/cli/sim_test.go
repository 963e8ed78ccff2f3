package cli

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
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

// TestSimCommandCluster: --nodes builds pve1..pveN, --template-per-node a
// template on each, --offline starts a node unreachable.
func TestSimCommandCluster(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "agentd")
	if out, err := exec.Command("go", "build", "-o", bin, "../../agentd").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	cmd := exec.Command(bin, "sim", "--addr", "127.0.0.1:0", "--ca-file", ca, "--nodes", "3", "--template-per-node", "--offline", "pve3")
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
	if env["PVE_NODE"] != "pve1" {
		t.Fatalf("PVE_NODE %q", env["PVE_NODE"])
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(path string) (string, string) {
		req, _ := http.NewRequest("GET", env["PVE_URL"]+path, nil)
		req.Header.Set("Authorization", "PVEAPIToken="+env["PVE_TOKEN"])
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.Status, string(b)
	}
	status, body := get("/cluster/status")
	if status != "200 OK" || !strings.Contains(body, `"nodes":3`) || !strings.Contains(body, `"name":"pve3","nodeid":3,"online":0`) {
		t.Fatalf("cluster status: %s %s", status, body)
	}
	if status, _ := get("/nodes/pve2/qemu/9001/status/current"); status != "200 OK" {
		t.Errorf("template on pve2: %s", status)
	}
	if status, _ := get("/nodes/pve3/status"); status != "595 No route to host" {
		t.Errorf("offline pve3: %s", status)
	}
	if out, err := exec.Command(bin, "sim", "--nodes", "2", "--node", "a").CombinedOutput(); err == nil {
		t.Errorf("--nodes with --node accepted: %s", out)
	}
}
