package provider_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// BenchmarkTerraformApply50 measures the wall time of `terraform apply` of 50
// sandboxes (-parallelism=10) through the provider and agentd, at realistic
// task and boot times divided by 4: cold, against the agent's own makespan
// for the same 50 creates sent at once through the API; and with a warm pool
// of 50 ready members (filled before the timer starts).
func BenchmarkTerraformApply50(b *testing.B) {
	b.Run("cold", func(b *testing.B) { benchApply50(b, false) })
	b.Run("pool-50", func(b *testing.B) { benchApply50(b, true) })
}

func benchApply50(b *testing.B, pooled bool) {
	tfBin := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if tfBin == "" {
		b.Skip("set TF_ACC_TERRAFORM_PATH (make bench does)")
	}
	const n = 50
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		d, err := agent.StartDev(context.Background(), agent.DevOptions{StateDir: b.TempDir(), Speed: 4, ProvisioningTimeout: 10 * time.Minute,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		bin := b.TempDir()
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "terraform-provider-agentlab"), "..").CombinedOutput(); err != nil {
			b.Fatalf("build: %v\n%s", err, out)
		}
		rc := filepath.Join(bin, "cli.tfrc")
		os.WriteFile(rc, []byte(fmt.Sprintf("provider_installation {\n  dev_overrides {\n    \"registry.terraform.io/agentlab/agentlab\" = %q\n  }\n  direct {}\n}\n", bin)), 0o644)
		dir := b.TempDir()
		os.WriteFile(filepath.Join(dir, "main.tf"), []byte(providerBlock+fmt.Sprintf(`
resource "agentlab_sandbox" "s" {
  count   = %d
  name    = "tf-${count.index}"
  profile = "yolo-ephemeral"
}`, n)), 0o644)
		tf := func(args ...string) {
			cmd := exec.Command(tfBin, args...)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc, "AGENTLAB_ENDPOINT="+d.Info.Endpoint,
				"AGENTLAB_TOKEN="+d.Info.Token, "AGENTLAB_CA_CERT="+d.Info.CACert, "CHECKPOINT_DISABLE=1")
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("terraform %v: %v\n%s", args, err, out)
			}
		}
		c := tcpClientFor(b, d)
		ctx := context.Background()
		if pooled {
			size := n
			if _, err := c.SetPool(ctx, "yolo-ephemeral", api.SetPoolRequest{MinReady: &size, Max: &size}); err != nil {
				b.Fatal(err)
			}
			for {
				p, err := c.Pool(ctx, "yolo-ephemeral")
				if err != nil {
					b.Fatal(err)
				}
				if p.Ready >= n {
					break
				}
				time.Sleep(500 * time.Millisecond)
			}
		}
		b.StartTimer()
		start := time.Now()
		tf("apply", "-auto-approve", "-input=false", "-parallelism=10")
		applyWall := time.Since(start)
		b.StopTimer()
		tf("destroy", "-auto-approve", "-input=false", "-parallelism=10")
		b.ReportMetric(applyWall.Seconds(), "apply-s")
		if pooled {
			d.Close()
			b.StartTimer()
			continue
		}

		start = time.Now()
		var wg sync.WaitGroup
		for j := 0; j < n; j++ {
			wg.Add(1)
			go func(j int) {
				defer wg.Done()
				name := fmt.Sprintf("api-%d", j)
				if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: "yolo-ephemeral"}); err != nil {
					b.Error(err)
					return
				}
				if sb, err := c.WaitSandbox(ctx, name, 50*time.Millisecond); err != nil || sb.State != api.StateRunning {
					b.Errorf("%s: %v %v", name, sb, err)
				}
			}(j)
		}
		wg.Wait()
		agentMakespan := time.Since(start)
		d.Close()
		b.ReportMetric(agentMakespan.Seconds(), "agent-makespan-s")
		b.ReportMetric(applyWall.Seconds()/agentMakespan.Seconds(), "x-agent")
		b.StartTimer()
	}
}
