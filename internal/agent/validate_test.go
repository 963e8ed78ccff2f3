package agent_test

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

// TestBadValuesNeverReachProxmox: every value the client chooses is checked
// before any Proxmox call, as a 400 naming the field. The simulator's whole
// state, its request counter included, is the same before and after.
func TestBadValuesNeverReachProxmox(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	if _, err := c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: "data", Size: "5G"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSession(ctx, api.CreateSessionRequest{Name: "fix", Profile: "yolo-workspace", Workspace: "data"}); err != nil {
		t.Fatal(err)
	}
	type call func(c *client.Client) error
	sandbox := func(r api.CreateSandboxRequest) call {
		if r.Profile == "" {
			r.Profile = "yolo-ephemeral"
		}
		return func(c *client.Client) error { _, err := c.CreateSandbox(ctx, r); return err }
	}
	workspace := func(r api.CreateWorkspaceRequest) call {
		return func(c *client.Client) error { _, err := c.CreateWorkspace(ctx, r); return err }
	}
	session := func(r api.CreateSessionRequest) call {
		r.Profile = "yolo-workspace"
		return func(c *client.Client) error { _, err := c.CreateSession(ctx, r); return err }
	}
	fork := func(r api.ForkRequest) call {
		return func(c *client.Client) error { _, err := c.ForkWorkspace(ctx, "data", r); return err }
	}
	for _, tc := range []struct {
		name, field, want string
		do                call
	}{
		{"all-digit sandbox name", "name", "all digits", sandbox(api.CreateSandboxRequest{Name: "100"})},
		{"sandbox name with an id prefix", "name", `starts with "sbx-"`, sandbox(api.CreateSandboxRequest{Name: "sbx-x"})},
		{"sandbox name like a job's", "name", `starts with "job-"`, sandbox(api.CreateSandboxRequest{Name: "job-0123456789"})},
		{"bad sandbox name", "name", "lowercase", sandbox(api.CreateSandboxRequest{Name: "Bad_Name!"})},
		{"70-character sandbox name", "name", "1-63", sandbox(api.CreateSandboxRequest{Name: strings.Repeat("a", 70)})},
		{"reserved tag", "tags", "reserved", sandbox(api.CreateSandboxRequest{Name: "t", Tags: []string{"agentlab"}})},
		{"bad tag", "tags", "not a valid Proxmox tag", sandbox(api.CreateSandboxRequest{Name: "t", Tags: []string{"a;b"}})},
		{"ttl in words", "ttl", "not a duration", sandbox(api.CreateSandboxRequest{Name: "t", TTL: "2 hours"})},
		{"negative ttl", "ttl", "at least 1m", sandbox(api.CreateSandboxRequest{Name: "t", TTL: "-1h"})},
		{"all-digit workspace name", "name", "all digits", workspace(api.CreateWorkspaceRequest{Name: "123", Size: "5G"})},
		{"workspace name with an id prefix", "name", `starts with "ws-"`, workspace(api.CreateWorkspaceRequest{Name: "ws-x", Size: "5G"})},
		{"storage with options", "storage", "not a Proxmox storage id",
			workspace(api.CreateWorkspaceRequest{Name: "w", Size: "5G", Storage: "local-lvm,foo=bar"})},
		{"storage agentd may not use", "storage", "not one agentd may use",
			workspace(api.CreateWorkspaceRequest{Name: "w", Size: "5G", Storage: "nope"})},
		{"zero size", "size", "at least 1G", workspace(api.CreateWorkspaceRequest{Name: "w", Size: "0"})},
		{"huge size_gb", "size_gb", "between 1 and 65536", workspace(api.CreateWorkspaceRequest{Name: "w", SizeGB: 10000000})},
		{"negative size_gb", "size_gb", "between 1 and 65536", workspace(api.CreateWorkspaceRequest{Name: "w", SizeGB: -5})},
		{"fork to an all-digit name", "name", "all digits", fork(api.ForkRequest{Name: "42"})},
		{"fork onto a bad storage", "storage", "not a Proxmox storage id", fork(api.ForkRequest{Name: "copy", Storage: "local-lvm,foo=bar"})},
		{"fork from a bad snapshot name", "from_snapshot", "starting with a letter", fork(api.ForkRequest{Name: "copy", FromSnapshot: "9bad"})},
		{"bad snapshot name", "name", "starting with a letter", func(c *client.Client) error {
			_, err := c.CreateSnapshot(ctx, "data", api.CreateSnapshotRequest{Name: "9bad"})
			return err
		}},
		{"snapshot name Proxmox reserves", "name", "reserved by Proxmox", func(c *client.Client) error {
			_, err := c.CreateSnapshot(ctx, "data", api.CreateSnapshotRequest{Name: "current"})
			return err
		}},
		{"session name with an id prefix", "name", `starts with "ses-"`, session(api.CreateSessionRequest{Name: "ses-x", Workspace: "data"})},
		{"all-digit session name", "name", "all digits", session(api.CreateSessionRequest{Name: "7", Workspace: "data"})},
		{"session's new all-digit workspace", "workspace", "all digits",
			session(api.CreateSessionRequest{Name: "s2", Workspace: "new:123", WorkspaceSize: "5G"})},
		{"session's new workspace size", "workspace_size", "not a size",
			session(api.CreateSessionRequest{Name: "s2", Workspace: "new:w2", WorkspaceSize: "lots"})},
		{"session's new workspace storage", "workspace_storage", "not a Proxmox storage id",
			session(api.CreateSessionRequest{Name: "s2", Workspace: "new:w2", WorkspaceSize: "5G", WorkspaceStorage: "local-lvm,foo=bar"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := d.Sim.Dump()
			err := tc.do(c)
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Code != api.CodeInvalidField || ae.Field != tc.field ||
				!strings.Contains(ae.Message, tc.want) {
				t.Fatalf("got %v (%#v), want a 400 on field %s saying %q", err, ae, tc.field, tc.want)
			}
			if after := d.Sim.Dump(); !reflect.DeepEqual(before, after) {
				t.Fatalf("the simulator changed (requests %d → %d)", before.Requests, after.Requests)
			}
		})
	}
	if ws, err := c.Workspaces(ctx); err != nil || len(ws) != 1 {
		t.Fatalf("workspaces %+v %v", ws, err)
	}
	if sbs, err := c.Sandboxes(ctx, nil); err != nil || len(sbs) != 0 {
		t.Fatalf("sandboxes %+v %v", sbs, err)
	}
}

// TestDestroyByVMIDNeverHitsAnAllDigitName rebuilds issue 14's ambiguity: a
// legacy sandbox named "100" (which no request can create any more) next to
// the sandbox at VMID 100. The reference "100" is always the VMID.
func TestDestroyByVMIDNeverHitsAnAllDigitName(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{Hooks: agent.Hooks{NoLoops: true}})
	ctx := tctx(t)
	a, b := create(t, c, "a"), create(t, c, "b")
	if a.VMID != 100 || b.VMID == 100 {
		t.Fatalf("want a at VMID 100: a %d, b %d", a.VMID, b.VMID)
	}
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "100", Profile: "yolo-ephemeral"}); !api.IsCode(err, api.CodeInvalidField) {
		t.Fatalf("an all-digit name must be refused: %v", err)
	}
	// What an older agentd allowed, written behind its back; updated last, as
	// the old lookup preferred.
	if _, err := d.Agent.Store.DB().ExecContext(ctx, `UPDATE sandboxes SET name = '100', updated_at = updated_at + 100000 WHERE id = ?`, b.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Sandbox(ctx, "100"); err != nil || got.ID != a.ID {
		t.Fatalf("100 resolved to %+v, %v; want %s (VMID 100)", got, err, a.ID)
	}
	got, err := c.Destroy(ctx, "100", false)
	if err != nil || got.ID != a.ID || got.State != api.StateDestroyed {
		t.Fatalf("destroy 100: %+v %v", got, err)
	}
	left := vms(d)
	if _, ok := left[100]; ok {
		t.Fatal("VM 100 still exists")
	}
	if v, ok := left[b.VMID]; !ok || !v.Running {
		t.Fatalf("the sandbox named 100 was touched: %+v", v)
	}
	// A retried destroy finds nothing: never the sandbox named "100".
	before := d.Sim.Dump()
	_, err = c.Destroy(ctx, "100", true)
	wantCode(t, err, http.StatusNotFound, api.CodeSandboxNotFound)
	if after := d.Sim.Dump(); !reflect.DeepEqual(before.VMs, after.VMs) {
		t.Fatal("a retried destroy 100 changed Proxmox")
	}
	// The legacy row stays reachable, by its id only.
	if got, err := c.Sandbox(ctx, b.ID); err != nil || got.Name != "100" || got.State != api.StateRunning {
		t.Fatalf("legacy sandbox by id: %+v %v", got, err)
	}
	// Name and VMID reach live sandboxes only; the id reaches a destroyed one.
	if got, err := c.Sandbox(ctx, a.ID); err != nil || got.State != api.StateDestroyed {
		t.Fatalf("destroyed sandbox by id: %+v %v", got, err)
	}
	_, err = c.Sandbox(ctx, "a")
	wantCode(t, err, http.StatusNotFound, api.CodeSandboxNotFound)
	if !strings.Contains(err.Error(), "id") {
		t.Fatalf("a not-found name should point at ids: %v", err)
	}
}
