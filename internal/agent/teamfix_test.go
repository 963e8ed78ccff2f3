package agent_test

import (
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// TestRollbackKeepsTeamQuota: a snapshot restore or a revert replaces the
// VM's config with the snapshot's, so a sandbox shrunk since it was taken
// would grow back past its team's quota. Both are refused with the quota's
// 429 while the team has no room (the VM untouched), and once there is room
// the row counts the restored cores at once.
func TestRollbackKeepsTeamQuota(t *testing.T) {
	e := startTeams(t, agent.DevOptions{}, map[string]api.TeamQuota{"a": {Cores: 8}})
	ctx := tctx(t)
	c := e.aMemberC
	x := create(t, c, "x") // 4 cores, the clean snapshot too
	if _, err := c.CreateSandboxSnapshot(ctx, "x", api.CreateSandboxSnapshotRequest{Name: "big"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Resize(ctx, "x", api.ResizeRequest{Cores: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "y", Profile: "yolo-ephemeral", Cores: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitSandbox(ctx, "y", 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	cores := func() any { return vms(e.d)[x.VMID].Config["cores"] }
	before := cores()
	// 2 + 5 in use of 8: bringing x back to 4 needs 2 more than there is.
	for name, try := range map[string]func() error{
		"restore": func() error { _, err := c.RestoreSandboxSnapshot(ctx, "x", "big"); return err },
		"revert":  func() error { _, err := c.Revert(ctx, "x", api.RevertRequest{}); return err },
	} {
		err := try()
		wantCode(t, err, 429, api.CodeQuotaExceeded)
		ae := err.(*api.Error)
		if ae.Limit == nil || ae.Limit.Key != "team a quota cores" || ae.Limit.Value != 8 || ae.Limit.Used != 7 {
			t.Fatalf("%s: refusal's limit %+v", name, ae.Limit)
		}
		if got := cores(); got != before {
			t.Fatalf("%s refused, but the VM's cores went %v → %v", name, before, got)
		}
	}
	tm, err := c.Team(ctx, "a")
	if err != nil || tm.Usage.Cores != 7 {
		t.Fatalf("usage after the refusals: %+v %v", tm, err)
	}
	// With room again, the rollback happens and is counted at once.
	if _, err := c.Resize(ctx, "y", api.ResizeRequest{Cores: 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RestoreSandboxSnapshot(ctx, "x", "big"); err != nil {
		t.Fatalf("restore within the quota: %v", err)
	}
	if tm, err = c.Team(ctx, "a"); err != nil || tm.Usage.Cores != 8 {
		t.Fatalf("usage after the restore: %+v %v", tm.Usage, err)
	}
	// Now full: y may not grow, and a create is refused.
	_, err = c.Resize(ctx, "y", api.ResizeRequest{Cores: 5})
	wantCode(t, err, 429, api.CodeQuotaExceeded)
	if _, err := c.Resize(ctx, "x", api.ResizeRequest{Cores: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Revert(ctx, "x", api.RevertRequest{}); err != nil {
		t.Fatalf("revert within the quota: %v", err)
	}
	if tm, err = c.Team(ctx, "a"); err != nil || tm.Usage.Cores != 8 {
		t.Fatalf("usage after the revert: %+v %v", tm.Usage, err)
	}
}
