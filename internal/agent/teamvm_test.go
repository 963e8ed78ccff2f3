package agent_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

// TestTeamVMsNamedForTheirTeam: in the Proxmox UI an operator tells teams
// apart by the VM name and description; the same sandbox name in two teams
// makes two distinct VMs, while default-team VMs keep the names they had
// before teams.
func TestTeamVMsNamedForTheirTeam(t *testing.T) {
	d, admin := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	if _, err := admin.CreateTeam(ctx, api.CreateTeamRequest{Name: "alpha"}); err != nil {
		t.Fatal(err)
	}
	inAlpha, err := client.New(client.Config{Endpoint: d.Info.Endpoint, Token: d.Info.Token, CACert: d.Info.CACert, Team: "alpha"})
	if err != nil {
		t.Fatal(err)
	}
	a := create(t, inAlpha, "dev")
	// The default team's "dev": same name, another sandbox. Waited for by
	// id: the agent's token acts across teams, where "dev" is ambiguous now.
	b, err := admin.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "dev", Profile: "yolo-ephemeral"})
	if err != nil {
		t.Fatal(err)
	}
	if b, err = admin.WaitSandbox(ctx, b.ID, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if a.ID == b.ID || a.VMID == b.VMID || a.Team != "alpha" || b.Team != "default" {
		t.Fatalf("alpha %+v, default %+v", a, b)
	}
	vms := d.Sim.Dump().VMs
	if got := vms[a.VMID].Config["name"]; got != "alpha-dev" {
		t.Errorf("alpha's VM name %q, want alpha-dev", got)
	}
	desc, _ := url.QueryUnescape(vms[a.VMID].Config["description"])
	if !strings.Contains(desc, "agentlab-team: alpha") || !strings.Contains(desc, "agentlab-sandbox-id: "+a.ID) {
		t.Errorf("alpha's VM description lacks its team or id:\n%s", desc)
	}
	if got := vms[b.VMID].Config["name"]; got != "dev" {
		t.Errorf("default team's VM name %q, want dev (as before teams)", got)
	}
	if desc := vms[b.VMID].Config["description"]; strings.Contains(desc, "agentlab-team") {
		t.Errorf("default team's VM description names a team:\n%s", desc)
	}
	// A global caller acting across teams must say which "dev" it means.
	inDefault, err := client.New(client.Config{Endpoint: "unix://" + d.Info.Socket, Team: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if sb, err := inDefault.Sandbox(ctx, "dev"); err != nil || sb.ID != b.ID {
		t.Fatalf("dev in team default: %v %v", sb, err)
	}
	across, err := client.New(client.Config{Endpoint: "unix://" + d.Info.Socket})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := across.Destroy(ctx, "dev", false); !api.IsCode(err, api.CodeAmbiguous) {
		t.Fatalf("destroy dev across teams: %v, want ambiguous_reference", err)
	}
	evs, err := across.Events(ctx, a.ID, 0, 50)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Events) == 0 || evs.Events[0].Team != "alpha" || evs.Events[0].Actor != "token:agent" {
		t.Fatalf("alpha's first event %+v, want team alpha, actor token:agent", evs.Events)
	}
}
