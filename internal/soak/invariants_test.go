package soak

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
)

// TestInvariantsCatchPlantedViolations proves the checkers can fail: on a
// real agentd and simulator it first checks that a clean state passes, then
// plants one violation per invariant (through the simulator's hooks and the
// Proxmox API, as a misbehaving agentd or operator would leave it) and shows
// that exactly that invariant reports it.
func TestInvariantsCatchPlantedViolations(t *testing.T) {
	bin := agentdBin(t)
	dir, err := os.MkdirTemp("", "inv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("kept %s", dir)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env, err := StartEnv(ctx, dir, EnvOptions{Bin: bin, ProvisioningTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	// The API answers before startup resume has run, and that resume races
	// requests (a finding of the soak); this test needs a quiet start.
	if err := env.WaitServing(ctx); err != nil {
		t.Fatal(err)
	}
	foreign, err := Plant(ctx, env.Sim)
	if err != nil {
		t.Fatal(err)
	}
	c := env.Client
	model := NewModel()
	ws, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "wa", Size: "1G"})
	if err != nil {
		t.Fatal(err)
	}
	model.Created(ws.ID, ws.Name)
	for _, name := range []string{"ok1", "ok2"} {
		if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: "yolo-ephemeral"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"ok1", "ok2"} {
		if sb, err := c.WaitSandbox(ctx, name, 50*time.Millisecond); err != nil || sb.State != api.StateRunning {
			t.Fatalf("%s: %+v %v", name, sb, err)
		}
	}
	if _, err := c.AttachWorkspace(ctx, "wa", "ok2"); err != nil {
		t.Fatal(err)
	}
	st, err := env.Sim.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	vol := holderVolume(st, ws.HolderVMID)
	write := func(file, data string, record bool) {
		t.Helper()
		if err := env.Sim.Do(ctx, "write-file", Hook{Volid: vol, File: file, Data: data}, nil); err != nil {
			t.Fatal(err)
		}
		if record {
			model.Wrote(ws.ID, ws.Name, file, data)
		}
	}
	write("/work/f0", "acknowledged", true)
	ok1, _ := c.Sandbox(ctx, "ok1")
	ok2, _ := c.Sandbox(ctx, "ok2")

	check := func(t *testing.T) []Violation {
		t.Helper()
		w, err := Gather(ctx, env, foreign)
		if err != nil {
			t.Fatal(err)
		}
		w.QuietSince = w.Now.Add(-time.Hour)
		return Check(w, model)
	}
	expect := func(t *testing.T, inv, fragment string) {
		t.Helper()
		vs := check(t)
		for _, v := range vs {
			if v.Inv == inv && strings.Contains(v.String(), fragment) {
				return
			}
		}
		t.Fatalf("%s did not report %q; got %v", inv, fragment, vs)
	}
	pc := env.PVE

	t.Run("clean state passes", func(t *testing.T) {
		if vs := check(t); len(vs) != 0 {
			t.Fatalf("violations on a clean state: %v", vs)
		}
	})
	t.Run("I1 untagged VM with our marker", func(t *testing.T) {
		if err := env.Sim.Do(ctx, "add-vm", Hook{VMID: 7001, Config: map[string]string{"name": "leak", "memory": "512",
			"description": "agentlab-sandbox-id: sbx-000000000000\n"}}, nil); err != nil {
			t.Fatal(err)
		}
		expect(t, "I1", "VM 7001 (leak) [untagged]: names sandbox sbx-000000000000, which has no row")
	})
	t.Run("I2 phantom row", func(t *testing.T) {
		w, err := Gather(ctx, env, foreign)
		if err != nil {
			t.Fatal(err)
		}
		// Planted in the copy: agentd's reconcile would race a real deletion.
		delete(w.Sim.VMs, ok1.VMID)
		w.Sessions = append(w.Sessions, api.Session{Name: "ghost", Sandbox: "gone-1", Workspace: "wa"})
		got := fmt.Sprint(CheckI2(w))
		for _, frag := range []string{"sandbox ok1", "its VM does not exist", "session ghost: points at sandbox gone-1"} {
			if !strings.Contains(got, frag) {
				t.Fatalf("I2 = %s, want %q", got, frag)
			}
		}
	})
	t.Run("I3 stuck provisioning", func(t *testing.T) {
		if err := env.Sim.Do(ctx, "hang-task", Hook{Type: "qmclone", Times: 1}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "stuck", Profile: "yolo-ephemeral"}); err != nil {
			t.Fatal(err)
		}
		for sb, _ := c.Sandbox(ctx, "stuck"); sb == nil || sb.Step != "clone"; sb, _ = c.Sandbox(ctx, "stuck") {
			time.Sleep(20 * time.Millisecond)
		}
		expect(t, "I3", "sandbox stuck")
	})
	t.Run("I4 write lost behind the model", func(t *testing.T) {
		write("/work/f0", "overwritten", false)
		expect(t, "I4", "holds overwritten, acknowledged history allows {acknowledged}")
	})
	t.Run("I5 volume referenced twice", func(t *testing.T) {
		if err := pc.AttachVolume(ctx, ok1.VMID, "scsi1", vol); err != nil {
			t.Fatal(err)
		}
		expect(t, "I5", fmt.Sprintf("referenced by VMs [%d %d]", ok1.VMID, ok2.VMID))
		expect(t, "I5", fmt.Sprintf("VM %d (ok1) references its volume", ok1.VMID))
	})
	t.Run("I6 foreign VM touched", func(t *testing.T) {
		if err := pc.Configure(ctx, 8001, pve.Option{Name: "memory", Value: "512"}); err != nil {
			t.Fatal(err)
		}
		expect(t, "I6", `VM 8001 (someone-elses) [untagged]: config changed: memory "1024" → "512"`)
	})
	t.Run("I7 untyped and missing answers", func(t *testing.T) {
		recs := []Record{
			{Op: Op{Seq: 1, Kind: OpSesDelete}, Class: Class5xx, Status: 500, Code: api.CodeInternal, Message: "state changed concurrently"},
			{Op: Op{Seq: 2, Kind: OpSandboxStop}, Class: ClassTimeout},
			{Op: Op{Seq: 3, Kind: OpSandboxStart}, Class: ClassNoAnswer, Message: "EOF"},
			{Op: Op{Seq: 4, Kind: OpSandboxStart}, Class: Class4xx, Status: 409, Code: api.CodeInvalidState, Message: "is RUNNING"},
			{Op: Op{Seq: 5, Kind: OpSandboxStart}, Class: ClassKilled, Message: "EOF"},
		}
		vs := CheckI7(recs, time.Second)
		if len(vs) != 3 || !strings.Contains(vs[0].Object, "#1") || !strings.Contains(vs[1].Object, "#2") || !strings.Contains(vs[2].Object, "#3") {
			t.Fatalf("I7 = %v, want ops #1, #2 and #3", vs)
		}
	})
	t.Run("I8 tag removed", func(t *testing.T) {
		if err := pc.Configure(ctx, ok1.VMID, pve.Option{Name: "delete", Value: "tags"}); err != nil {
			t.Fatal(err)
		}
		expect(t, "I8", `sandbox ok1`)
		expect(t, "I8", `VM lacks tag agentlab (tags "")`)
	})
	_ = env.Sim.Do(ctx, "release-hung-tasks", Hook{}, nil)
}
