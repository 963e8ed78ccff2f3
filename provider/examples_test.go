package provider_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// importIDs reads the ids an import.sh example uses ("terraform import ADDR ID").
func importIDs(t *testing.T, dir string) (addr string, ids []string) {
	for _, line := range strings.Split(readFile(t, filepath.Join(dir, "import.sh")), "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && f[0] == "terraform" && f[1] == "import" {
			addr = f[2]
			ids = append(ids, f[3])
		}
	}
	if len(ids) == 0 {
		t.Fatalf("%s/import.sh has no terraform import line", dir)
	}
	return addr, ids
}

// TestAccExamples applies and destroys every resource and data-source example,
// and runs each import.sh line against the applied state.
func TestAccExamples(t *testing.T) {
	dirs, _ := filepath.Glob("../examples/resources/*")
	for _, dir := range dirs {
		dir := strings.TrimPrefix(dir, "../")
		t.Run(filepath.Base(dir), func(t *testing.T) {
			d, c := startAgent(t)
			cfg := hcl(readFile(t, filepath.Join(dir, "resource.tf")))
			// Protection is the advice for real use; the test must clean up.
			cfg = strings.Replace(cfg, "prevent_destroy = true", "prevent_destroy = false", 1)
			cfg = strings.ReplaceAll(cfg, "deletion_protection = true", "deletion_protection = false")
			addr, ids := importIDs(t, dir)
			steps := []resource.TestStep{{Config: cfg}}
			for _, id := range ids {
				id := id
				if strings.HasPrefix(id, "tok-") { // a token id: random, use the real one
					steps = append(steps, resource.TestStep{Config: cfg, ResourceName: addr, ImportState: true, ImportStateVerify: true,
						ImportStateVerifyIgnore: []string{"value", "ttl"}, ImportStateIdFunc: func(s *terraform.State) (string, error) {
							return s.RootModule().Resources[addr].Primary.Attributes["id"], nil
						}})
					continue
				}
				if regexp.MustCompile(`^\d+$`).MatchString(id) { // a VMID: use the real one
					steps = append(steps, resource.TestStep{Config: cfg, ResourceName: addr, ImportState: true, ImportStateVerify: true,
						ImportStateVerifyIgnore: []string{"timeouts", "ttl"}, ImportStateIdFunc: func(s *terraform.State) (string, error) {
							return s.RootModule().Resources[addr].Primary.Attributes["vmid"], nil
						}})
					continue
				}
				steps = append(steps, resource.TestStep{Config: cfg, ResourceName: addr, ImportState: true, ImportStateId: id,
					ImportStateVerify: true, ImportStateVerifyIgnore: []string{"timeouts", "attached_sandbox", "deletion_protection", "ttl", "ready", "building", "claimed"}})
			}
			_ = c
			resource.Test(t, resource.TestCase{ProtoV6ProviderFactories: factories, CheckDestroy: noVMsLeft(d), Steps: steps})
		})
	}
	t.Run("data-sources", func(t *testing.T) {
		d, c := startAgent(t)
		ctx := context.Background()
		// The objects the data-source examples look up, made with the API as an operator would.
		_, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "build-runner", Profile: "yolo-ephemeral"})
		must(t, err)
		_, err = c.WaitSandbox(ctx, "build-runner", 0)
		must(t, err)
		_, err = c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "shared-cache", Size: "5G"})
		must(t, err)
		files, _ := filepath.Glob("../examples/data-sources/*/data-source.tf")
		var cfg strings.Builder
		cfg.WriteString(providerBlock)
		for _, f := range files {
			cfg.WriteString(readFile(t, strings.TrimPrefix(f, "../")) + "\n")
		}
		resource.Test(t, resource.TestCase{ProtoV6ProviderFactories: factories, Steps: []resource.TestStep{{
			Config: cfg.String(),
			Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckOutput("proxmox_version", "9.1.2"),
				resource.TestCheckOutput("roomiest_node", "pve"),
				resource.TestCheckOutput("dev_cores", "6"),
				resource.TestCheckOutput("default_sandboxes", "1 sandboxes (limit 0, 0 = none)"),
				resource.TestMatchOutput("build_ip", regexp.MustCompile(`^10\.77\.`)),
				resource.TestMatchOutput("shared_volume", regexp.MustCompile(`^local-lvm:vm-\d+-disk-0$`)),
			),
		}}})
		_, err = c.Destroy(ctx, "build-runner", false)
		must(t, err)
		_, err = c.DeleteWorkspace(ctx, "shared-cache")
		must(t, err)
		must(t, noVMsLeft(d)(nil))
	})
}

// TestAccQuickstartAndTeamModule runs the real CLI the way a user does, with a
// built provider binary under dev_overrides (no registry), against agentd on
// the simulator: examples/quickstart, then a root module calling
// examples/modules/team-sandbox for two members, then examples/teams (the
// module in two teams, one aliased provider per team token: each provider
// configuration is its own provider process here, which the in-process
// harness cannot give). Each is applied, re-planned (must be empty) and
// destroyed.
func TestAccQuickstartAndTeamModule(t *testing.T) {
	tfBin := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if os.Getenv("TF_ACC") == "" || tfBin == "" {
		t.Skip("acceptance test: set TF_ACC=1 and TF_ACC_TERRAFORM_PATH (make test does)")
	}
	d, c := startAgent(t)
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "terraform-provider-agentlab"), "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build provider: %v\n%s", err, out)
	}
	host := "registry.terraform.io"
	if h := os.Getenv("TF_ACC_PROVIDER_HOST"); h != "" {
		host = h
	}
	rc := filepath.Join(bin, "cli.tfrc")
	must(t, os.WriteFile(rc, []byte(fmt.Sprintf("provider_installation {\n  dev_overrides {\n    %q = %q\n  }\n  direct {}\n}\n", host+"/agentlab/agentlab", bin)), 0o644))
	run := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command(tfBin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc, "TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", filepath.Base(tfBin), args, err, out)
		}
		return string(out)
	}
	outputs := func(dir string) map[string]string {
		var raw map[string]struct{ Value any }
		must(t, json.Unmarshal([]byte(run(dir, "output", "-json")), &raw))
		out := map[string]string{}
		for k, v := range raw {
			out[k] = fmt.Sprint(v.Value)
		}
		return out
	}
	abs, err := filepath.Abs("../examples")
	must(t, err)
	quick := t.TempDir()
	must(t, os.WriteFile(filepath.Join(quick, "main.tf"), []byte(readFile(t, "examples/quickstart/main.tf")), 0o644))
	team := t.TempDir()
	must(t, os.WriteFile(filepath.Join(team, "main.tf"), []byte(hcl(fmt.Sprintf(`
module "alice" {
  source              = %q
  member              = "alice"
  deletion_protection = false
}
module "bob" {
  source              = %q
  member              = "bob"
  workspace_size_gb   = 10
  running             = false
  deletion_protection = false
}
output "alice_ip" { value = module.alice.ip }
output "bob_sandbox" { value = module.bob.sandbox }
output "bob_workspace" { value = module.bob.workspace }
`, abs+"/modules/team-sandbox", abs+"/modules/team-sandbox"))), 0o644))

	run(quick, "apply", "-auto-approve", "-input=false")
	o := outputs(quick)
	if o["proxmox"] != "Proxmox VE 9.1.2 on node pve" ||
		!regexp.MustCompile(`^quickstart-scratch: VM \d+, 10\.77\.\d+\.\d+, lease until 20`).MatchString(o["scratch"]) ||
		!regexp.MustCompile(`^quickstart: sandbox quickstart-1 at 10\.77\.\d+\.\d+, workspace quickstart-work \(20 GiB\)$`).MatchString(o["session"]) {
		t.Fatalf("quickstart outputs %v", o)
	}
	if out := run(quick, "plan", "-detailed-exitcode", "-input=false"); !strings.Contains(out, "No changes") {
		t.Fatalf("plan after apply is not empty:\n%s", out)
	}

	run(team, "get")
	run(team, "apply", "-auto-approve", "-input=false")
	o = outputs(team)
	if !strings.HasPrefix(o["alice_ip"], "10.77.") || o["bob_sandbox"] != "" || o["bob_workspace"] != "bob-work" {
		t.Fatalf("team outputs %v", o)
	}
	if out := run(team, "plan", "-detailed-exitcode", "-input=false"); !strings.Contains(out, "No changes") {
		t.Fatalf("plan after apply is not empty:\n%s", out)
	}
	run(team, "destroy", "-auto-approve", "-input=false")
	run(quick, "destroy", "-auto-approve", "-input=false")
	must(t, noVMsLeft(d)(nil))

	// The teams and their tokens are an operator's (agentd team create,
	// agentd token create); the configuration gets the tokens as variables.
	ctx := context.Background()
	for _, name := range []string{"ml", "web"} {
		_, err := c.CreateTeam(ctx, api.CreateTeamRequest{Name: name})
		must(t, err)
		tok, err := c.CreateToken(ctx, api.CreateTokenRequest{Name: "tf", Team: name, Role: "member"})
		must(t, err)
		t.Setenv("TF_VAR_"+name+"_token", tok.Value)
	}
	t.Setenv("TF_VAR_endpoint", d.Info.Endpoint)
	t.Setenv("TF_VAR_ca_cert", d.Info.CACert)
	t.Setenv("TF_VAR_deletion_protection", "false")
	teams := t.TempDir()
	must(t, os.WriteFile(filepath.Join(teams, "main.tf"),
		[]byte(strings.ReplaceAll(readFile(t, "examples/teams/main.tf"), `"../modules/team-sandbox"`, fmt.Sprintf("%q", abs+"/modules/team-sandbox"))), 0o644))
	run(teams, "get")
	run(teams, "apply", "-auto-approve", "-input=false")
	o = outputs(teams)
	if !strings.HasPrefix(o["ml_alice_ip"], "10.77.") || !strings.HasPrefix(o["web_alice_ip"], "10.77.") || o["ml_usage"] != "team ml: 1 sandboxes, 40 GiB of workspaces" {
		t.Fatalf("teams outputs %v", o)
	}
	for _, name := range []string{"ml", "web"} {
		tm, err := c.Team(ctx, name)
		must(t, err)
		if tm.Usage.Sandboxes != 1 {
			t.Fatalf("team %s holds %d sandboxes, want its alice's 1", name, tm.Usage.Sandboxes)
		}
	}
	if out := run(teams, "plan", "-detailed-exitcode", "-input=false"); !strings.Contains(out, "No changes") {
		t.Fatalf("plan after apply is not empty:\n%s", out)
	}
	run(teams, "destroy", "-auto-approve", "-input=false")
	must(t, noVMsLeft(d)(nil))
}
