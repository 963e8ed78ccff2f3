package agent_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func startDev(t testing.TB, o agent.DevOptions) (*agent.Dev, *client.Client) {
	t.Helper()
	if o.StateDir == "" {
		o.StateDir = t.TempDir()
	}
	if o.ProvisioningTimeout == 0 {
		o.ProvisioningTimeout = 20 * time.Second
	}
	if o.Log == nil {
		o.Log = quiet
	}
	d, err := agent.StartDev(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d, tcpClient(t, d, d.Info.Token)
}

func tcpClient(t testing.TB, d *agent.Dev, token string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Endpoint: d.Info.Endpoint, Token: token, CACert: d.Info.CACert})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func socketClient(t testing.TB, d *agent.Dev) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Endpoint: "unix://" + d.Info.Socket})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func tctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func create(t testing.TB, c *client.Client, name string) *api.Sandbox {
	t.Helper()
	ctx := tctx(t)
	sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: "yolo-ephemeral"})
	if err != nil {
		t.Fatal(err)
	}
	sb, err = c.WaitSandbox(ctx, sb.Name, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return sb
}

// vms lists the simulator's VMs other than the template.
func vms(d *agent.Dev) map[int]pvesim.VMState {
	out := map[int]pvesim.VMState{}
	for id, v := range d.Sim.Dump().VMs {
		if id != pvesim.FixtureTemplateID {
			out[id] = v
		}
	}
	return out
}

func kinds(t testing.TB, c *client.Client, ref string) []string {
	t.Helper()
	l, err := c.Events(tctx(t), ref, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range l.Events {
		if e.From != "" {
			out = append(out, string(e.From)+">"+string(e.To))
		}
	}
	return out
}

func wantCode(t testing.TB, err error, status int, code api.Code) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != status || ae.Code != code {
		t.Fatalf("got %v (%#v), want %d %s", err, ae, status, code)
	}
}

// TestSandboxLifecycle walks every transition reachable through the API and
// checks Proxmox after each step.
func TestSandboxLifecycle(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "life", Profile: "yolo-ephemeral", TTL: "2h", Tags: []string{"team-a"}})
	if err != nil {
		t.Fatal(err)
	}
	if sb.State != api.StateRequested || sb.ID == "" || sb.TTLSeconds != 7200 {
		t.Fatalf("create answers at once in REQUESTED: %+v", sb)
	}
	sb, err = c.WaitSandbox(ctx, "life", 10*time.Millisecond)
	if err != nil || sb.State != api.StateRunning || sb.IP == "" || sb.VMID == 0 || sb.LeaseExpiresAt == nil {
		t.Fatalf("%+v %v", sb, err)
	}
	if left := time.Until(*sb.LeaseExpiresAt); left < 119*time.Minute || left > 2*time.Hour {
		t.Fatalf("lease %v", left)
	}
	v := vms(d)[sb.VMID]
	if !v.Running || v.Config["tags"] != "agentlab;team-a" || !strings.Contains(v.Config["description"], "agentlab-sandbox-id: "+sb.ID) ||
		v.Config["cores"] != "4" || v.Config["memory"] != "6144" || !strings.Contains(v.Config["scsi0"], "size=40G") ||
		!strings.Contains(v.Config["net0"], "bridge=vmbr1") || v.Config["cicustom"] != "user=local:snippets/agentlab-"+sb.ID+".yaml" {
		t.Fatalf("VM %d = %+v", sb.VMID, v)
	}
	snippet, err := os.ReadFile(filepath.Join(d.Config.SnippetsDir, "agentlab-"+sb.ID+".yaml"))
	if err != nil || !strings.HasPrefix(string(snippet), "#cloud-config\n") || !strings.Contains(string(snippet), "hostname: life") {
		t.Fatalf("snippet: %s %v", snippet, err)
	}
	// By VMID and by id too.
	for _, ref := range []string{strconv.Itoa(sb.VMID), sb.ID} {
		if got, err := c.Sandbox(ctx, ref); err != nil || got.Name != "life" {
			t.Fatalf("lookup %s: %+v %v", ref, got, err)
		}
	}
	if sb, err = c.Stop(ctx, "life"); err != nil || sb.State != api.StateStopped || sb.IP != "" || vms(d)[sb.VMID].Running {
		t.Fatalf("stop: %+v %v", sb, err)
	}
	if sb, err = c.Stop(ctx, "life"); err != nil || sb.State != api.StateStopped {
		t.Fatalf("stop is idempotent: %+v %v", sb, err)
	}
	if sb, err = c.Start(ctx, "life"); err != nil || sb.State != api.StateBooting {
		t.Fatalf("start answers BOOTING: %+v %v", sb, err)
	}
	if sb, err = c.WaitSandbox(ctx, "life", 10*time.Millisecond); err != nil || sb.State != api.StateRunning || !vms(d)[sb.VMID].Running {
		t.Fatalf("restart: %+v %v", sb, err)
	}
	if sb, err = c.Touch(ctx, "life"); err != nil || sb.LastUsedAt == nil {
		t.Fatalf("touch: %+v %v", sb, err)
	}
	if sb, err = c.Destroy(ctx, "life", false); err != nil || sb.State != api.StateDestroyed {
		t.Fatalf("destroy: %+v %v", sb, err)
	}
	if len(vms(d)) != 0 {
		t.Fatalf("VMs left: %v", vms(d))
	}
	if _, err := os.Stat(filepath.Join(d.Config.SnippetsDir, "agentlab-"+sb.ID+".yaml")); !os.IsNotExist(err) {
		t.Fatalf("snippet left behind: %v", err)
	}
	// A destroyed sandbox answers to its id only: its name (and VMID) may
	// already belong to another.
	if sb, err = c.Destroy(ctx, sb.ID, false); err != nil || sb.State != api.StateDestroyed {
		t.Fatalf("destroy is idempotent: %+v %v", sb, err)
	}
	_, err = c.Destroy(ctx, "life", false)
	wantCode(t, err, http.StatusNotFound, api.CodeSandboxNotFound)
	want := "REQUESTED>PROVISIONING PROVISIONING>BOOTING BOOTING>READY READY>RUNNING RUNNING>STOPPED STOPPED>BOOTING BOOTING>READY READY>RUNNING RUNNING>DESTROYING DESTROYING>DESTROYED"
	if got := strings.Join(kinds(t, c, sb.ID), " "); got != want {
		t.Fatalf("transitions:\n got %s\nwant %s", got, want)
	}
	// The name is free again; the destroyed row stays visible with --all.
	create(t, c, "life")
	all, _ := c.Sandboxes(ctx, url.Values{"all": {"true"}, "name": {"life"}})
	if len(all) != 2 || all[0].State != api.StateRunning || all[1].State != api.StateDestroyed {
		t.Fatalf("all: %+v", all)
	}
}

func TestCreateIsIdempotentAndConflictsAre409(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	req := api.CreateSandboxRequest{Name: "idem", Profile: "yolo-ephemeral", Tags: []string{"b", "a"}}
	first, err := c.CreateSandbox(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	// Parallel retries of the same request all get the same sandbox.
	var wg sync.WaitGroup
	ids := make(chan string, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := req
			r.Tags = []string{"a", "b", "a"}
			sb, err := c.CreateSandbox(ctx, r)
			if err != nil {
				t.Error(err)
				return
			}
			ids <- sb.ID
		}()
	}
	wg.Wait()
	close(ids)
	for id := range ids {
		if id != first.ID {
			t.Fatalf("retry created another sandbox %s (first %s)", id, first.ID)
		}
	}
	_, err = c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "idem", Profile: "interactive-dev"})
	wantCode(t, err, http.StatusConflict, api.CodeConflict)
	if !strings.Contains(err.Error(), "profile yolo-ephemeral, not interactive-dev") {
		t.Fatalf("conflict should say what differs: %v", err)
	}
	if sb, _ := c.WaitSandbox(ctx, "idem", 10*time.Millisecond); sb.State != api.StateRunning {
		t.Fatalf("%+v", sb)
	}
	if n := len(vms(d)); n != 1 {
		t.Fatalf("%d VMs for one idempotent sandbox", n)
	}
}

func TestValidationErrorsNameTheField(t *testing.T) {
	_, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	cases := []struct {
		req   api.CreateSandboxRequest
		code  api.Code
		field string
		msg   string
	}{
		{api.CreateSandboxRequest{Profile: "yolo-ephemeral"}, api.CodeInvalidField, "name", "name: is required"},
		{api.CreateSandboxRequest{Name: "Bad_Name", Profile: "yolo-ephemeral"}, api.CodeInvalidField, "name", "lowercase"},
		{api.CreateSandboxRequest{Name: "a"}, api.CodeInvalidField, "profile", "one of: interactive-dev, yolo-ephemeral, yolo-workspace"},
		{api.CreateSandboxRequest{Name: "a", Profile: "nope"}, api.CodeProfileNotFound, "profile", `profile "nope" does not exist`},
		{api.CreateSandboxRequest{Name: "a", Profile: "yolo-ephemeral", TTL: "soon"}, api.CodeInvalidField, "ttl", "not a duration"},
		{api.CreateSandboxRequest{Name: "a", Profile: "yolo-ephemeral", TTL: "10s"}, api.CodeInvalidField, "ttl", "at least 1m"},
		{api.CreateSandboxRequest{Name: "a", Profile: "yolo-ephemeral", Tags: []string{"agentlab"}}, api.CodeInvalidField, "tags", "reserved"},
		{api.CreateSandboxRequest{Name: "a", Profile: "yolo-ephemeral", Tags: []string{"Has Space"}}, api.CodeInvalidField, "tags", "not a valid Proxmox tag"},
		{api.CreateSandboxRequest{Name: "a", Profile: "yolo-workspace"}, api.CodeInvalidField, "workspace", "requires a workspace"},
	}
	for _, tc := range cases {
		_, err := c.CreateSandbox(ctx, tc.req)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != tc.code || ae.Field != tc.field || !strings.Contains(ae.Message, tc.msg) {
			t.Errorf("%+v: got %#v", tc.req, ae)
		}
	}
	if sbs, _ := c.Sandboxes(ctx, url.Values{"all": {"1"}}); len(sbs) != 0 {
		t.Fatalf("rejected requests left rows: %+v", sbs)
	}
}

// raw sends a request and returns status and body, for wire-level checks.
func raw(t testing.TB, d *agent.Dev, method, path, token, body string) (int, string, http.Header) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	req, _ := http.NewRequest(method, d.Info.Endpoint+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestWireErrorsAndStrictDecoding(t *testing.T) {
	d, _ := startDev(t, agent.DevOptions{})
	tok := d.Info.Token
	cases := []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"POST", "/v1/sandboxes", `{"name":"a","profile":"yolo-ephemeral","colour":"red"}`, 400, `"field": "colour"`},
		{"POST", "/v1/sandboxes", `{"name":"a","profile":"yolo-ephemeral"}{"x":1}`, 400, "data after the object"},
		{"POST", "/v1/sandboxes", `{"name":5}`, 400, `"field": "name"`},
		{"POST", "/v1/sandboxes", ``, 400, "request body is empty"},
		{"POST", "/v1/sandboxes", `{"name":"` + strings.Repeat("a", 70000) + `"}`, 413, "body_too_large"},
		{"GET", "/v1/sandboxes/ghost", ``, 404, "sandbox_not_found"},
		{"GET", "/v1/sandboxes?state=SLEEPING", ``, 400, "not a sandbox state"},
		{"GET", "/v1/sandboxes?colour=red", ``, 400, "unknown filter"},
		{"GET", "/v1/events?tail=0", ``, 400, `"field": "tail"`},
		{"GET", "/v1/profiles/ghost", ``, 404, "profile_not_found"},
		{"GET", "/v1/nothing", ``, 404, `"code": "not_found"`},
		{"DELETE", "/v1/sandboxes", ``, 405, "method_not_allowed"},
		{"POST", "/v1/sandboxes/ghost/lease/renew", `{}`, 400, "ttl: is required"},
		{"POST", "/v1/sandboxes/ghost/stop", `{"now":true}`, 400, "unknown field"},
	}
	for _, tc := range cases {
		st, body, hdr := raw(t, d, tc.method, tc.path, tok, tc.body)
		if st != tc.status || !strings.Contains(body, tc.code) || hdr.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %s", tc.method, tc.path, st, body)
		}
	}
	st, _, hdr := raw(t, d, "PUT", "/v1/sandboxes/x/stop", tok, "")
	if st != 405 || hdr.Get("Allow") == "" {
		t.Fatalf("405 without Allow: %d %v", st, hdr)
	}
}

func TestAuthSocketVersusTCP(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	// TCP: no token and a wrong token get 401 on every endpoint, the right one works.
	for _, p := range []string{"/v1/status", "/v1/sandboxes", "/v1/profiles", "/v1/events", "/v1/nothing"} {
		for _, tok := range []string{"", "wrong", d.Info.Token + "x"} {
			st, body, hdr := raw(t, d, "GET", p, tok, "")
			if st != 401 || !strings.Contains(body, "unauthorized") || hdr.Get("WWW-Authenticate") == "" {
				t.Fatalf("GET %s with token %q: %d %s", p, tok, st, body)
			}
		}
	}
	if st, _, _ := raw(t, d, "POST", "/v1/sandboxes", "", `{"name":"x","profile":"yolo-ephemeral"}`); st != 401 {
		t.Fatalf("unauthenticated create: %d", st)
	}
	if _, err := tcpClient(t, d, "wrong").Status(ctx); !api.IsCode(err, api.CodeUnauthorized) {
		t.Fatalf("wrong token: %v", err)
	}
	if st, err := c.Status(ctx); err != nil || !st.Proxmox.Reachable || st.Proxmox.Version != "9.1.2" {
		t.Fatalf("right token: %+v %v", st, err)
	}
	// Plain HTTP to the TLS port does not reach the API.
	if resp, err := http.Get(strings.Replace(d.Info.Endpoint, "https", "http", 1) + "/v1/status"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatalf("plain HTTP answered: %s", b)
		}
	}
	// The socket is trusted (no token) and only owner/group may connect.
	if _, err := socketClient(t, d).Status(ctx); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(d.Info.Socket)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v %v", fi.Mode(), err)
	}
	tf, err := os.Stat(d.Config.TokenFile)
	if err != nil || tf.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v %v", tf.Mode(), err)
	}
}

func TestEndpointsProfilesStatusEventsPrune(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	ps, err := c.Profiles(ctx)
	if err != nil || len(ps) != 3 || ps[0].Name != "interactive-dev" || ps[0].Cores != 6 {
		t.Fatalf("profiles %+v %v", ps, err)
	}
	if p, err := c.Profile(ctx, "yolo-workspace"); err != nil || !p.WorkspaceRequired || p.TTLDefault != "8h0m0s" {
		t.Fatalf("profile %+v %v", p, err)
	}
	a := create(t, c, "a")
	create(t, c, "b")
	d.Sim.FailTask("qmclone", "", "clone exploded")
	bad, _ := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "bad", Profile: "interactive-dev"})
	bad, _ = c.WaitSandbox(ctx, bad.Name, 10*time.Millisecond)
	d.Sim.ClearFaults()
	if bad.State != api.StateFailed {
		t.Fatalf("%+v", bad)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Sandboxes[api.StateRunning] != 2 || st.Sandboxes[api.StateFailed] != 1 || len(st.Profiles) != 3 {
		t.Fatalf("status %+v %v", st, err)
	}
	for q, want := range map[string]string{"state=RUNNING": "b,a", "state=failed": "bad", "profile=interactive-dev": "bad",
		"name=a": "a", "state=RUNNING,FAILED&profile=yolo-ephemeral": "b,a"} {
		v, _ := url.ParseQuery(q)
		sbs, err := c.Sandboxes(ctx, v)
		var names []string
		for _, s := range sbs {
			names = append(names, s.Name)
		}
		if err != nil || strings.Join(names, ",") != want {
			t.Errorf("filter %s: %v %v, want %s", q, names, err, want)
		}
	}
	if _, err := c.Renew(ctx, "a", "3h"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Renew(ctx, "bad", "3h")
	wantCode(t, err, http.StatusConflict, api.CodeInvalidState)
	if !strings.Contains(err.Error(), "in state FAILED (allowed in: RUNNING)") {
		t.Fatal(err)
	}
	res, err := c.Prune(ctx)
	if err != nil || len(res.Destroyed) != 1 || res.Destroyed[0].Name != "bad" || len(res.Skipped) != 0 {
		t.Fatalf("prune %+v %v", res, err)
	}
	evs, err := c.Events(ctx, "a", 0, 0)
	if err != nil || evs.Events[0].Kind != "sandbox.requested" || evs.Events[len(evs.Events)-1].Kind != "sandbox.lease_renewed" {
		t.Fatalf("events %+v %v", evs, err)
	}
	tail, _ := c.Events(ctx, "", 0, 3)
	if len(tail.Events) != 3 || tail.Last != tail.Events[2].ID {
		t.Fatalf("tail %+v", tail)
	}
	next, _ := c.Events(ctx, "", tail.Last, 0)
	if len(next.Events) != 0 {
		t.Fatalf("after last: %+v", next)
	}
	if _, err := c.Destroy(ctx, a.Name, false); err != nil {
		t.Fatal(err)
	}
}

// TestProvisioningFailuresLeaveNothing injects a fault at each step: every
// create ends FAILED with the step and Proxmox's message, and no VM is left.
func TestProvisioningFailuresLeaveNothing(t *testing.T) {
	cases := []struct {
		name   string
		inject func(s *pvesim.Sim)
		want   string
	}{
		{"clone task fails", func(s *pvesim.Sim) { s.FailTask("qmclone", "", "storage migration exploded") }, "clone: clone VM 9000 to 100: task UPID:"},
		{"config rejected", func(s *pvesim.Sim) {
			_ = s.FailEndpoint("PUT", `/qemu/\d+/config$`, 500, "unable to parse value of 'net0'")
		}, "configure: configure VM 100: 500 unable to parse value of 'net0'"},
		{"resize fails", func(s *pvesim.Sim) { s.FailTask("resize", "", "lvresize failed") }, "resize_disk: resize scsi0 of VM 100"},
		{"start fails", func(s *pvesim.Sim) { s.FailTask("qmstart", "", "kvm: failed to allocate memory") }, "start: start VM 100: task UPID:"},
		{"guest agent never answers", func(s *pvesim.Sim) {
			_ = s.FailEndpoint("GET", `/agent/network-get-interfaces$`, 500, "QEMU guest agent is not running")
		}, "wait_for_ip: the guest agent of VM 100 reported no IPv4 address"},
		{"proxmox down", func(s *pvesim.Sim) { s.Unavailable() }, "allocate_vmid: get next VMID: Get \"https://"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, c := startDev(t, agent.DevOptions{ProvisioningTimeout: 2 * time.Second})
			tc.inject(d.Sim)
			ctx := tctx(t)
			_, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "f", Profile: "yolo-ephemeral"})
			if err != nil {
				t.Fatal(err)
			}
			sb, err := c.WaitSandbox(ctx, "f", 10*time.Millisecond)
			if err != nil || sb.State != api.StateFailed || !strings.Contains(sb.Error, tc.want) {
				t.Fatalf("got %s %q, want FAILED with %q (%v)", sb.State, sb.Error, tc.want, err)
			}
			d.Sim.ClearFaults()
			if left := vms(d); len(left) != 0 {
				t.Fatalf("VMs left behind: %v", left)
			}
			snips, _ := os.ReadDir(d.Config.SnippetsDir)
			if len(snips) != 0 {
				t.Fatalf("snippets left behind: %v", snips)
			}
			got := strings.Join(kinds(t, c, "f"), " ")
			if !strings.HasSuffix(got, ">FAILED") {
				t.Fatalf("transitions %s", got)
			}
			// The failed row is destroyable; the name is reusable afterwards.
			if sb, err := c.Destroy(ctx, "f", false); err != nil || sb.State != api.StateDestroyed {
				t.Fatalf("%+v %v", sb, err)
			}
			if sb := create(t, c, "f"); sb.State != api.StateRunning {
				t.Fatalf("after clearing the fault: %+v", sb)
			}
		})
	}
}

// TestLinkedCloneUnsupportedSaysWhatToDo: a profile whose template VM is not a
// template cannot be linked-cloned; the error says how to fix it, and a
// full-clone profile of the same VM works.
func TestLinkedCloneUnsupportedSaysWhatToDo(t *testing.T) {
	d, _ := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	err := d.Sim.AddVM("pve", 9100, map[string]string{"name": "raw-tpl", "scsi0": "local-lvm:10", "ide2": "local-lvm:cloudinit,media=cdrom",
		"agent": "1", "net0": "virtio,bridge=vmbr1", "memory": "2048", "boot": "order=scsi0"}, false)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(d.Config.ProfilesDir, "raw.yaml"), []byte("name: raw-linked\ntemplate_vmid: 9100\n---\nname: raw-full\ntemplate_vmid: 9100\nstorage:\n  clone: full\n  storage: local-zfs\n  root_size_gb: 20\n"), 0o644)
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	c := tcpClient(t, d, d.Info.Token)
	sb, _ := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "linked", Profile: "raw-linked"})
	sb, _ = c.WaitSandbox(ctx, sb.Name, 10*time.Millisecond)
	if sb.State != api.StateFailed || !strings.Contains(sb.Error, "Linked clone feature is not supported") || !strings.Contains(sb.Error, "qm template 9100") || !strings.Contains(sb.Error, "set storage.clone: full in profile raw-linked") {
		t.Fatalf("%s %q", sb.State, sb.Error)
	}
	if len(vms(d)) != 1 {
		t.Fatalf("VMs: %v", vms(d))
	}
	full, _ := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "full", Profile: "raw-full"})
	full, _ = c.WaitSandbox(ctx, full.Name, 10*time.Millisecond)
	if full.State != api.StateRunning || !strings.HasPrefix(vms(d)[full.VMID].Config["scsi0"], "local-zfs:vm-") {
		t.Fatalf("full clone: %+v %v", full, vms(d)[full.VMID])
	}
}

func TestNextIDRaceTakesAnotherVMID(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	racer := d.Sim.RaceNextID()
	sb := create(t, c, "racy")
	if sb.State != api.StateRunning || sb.VMID == racer {
		t.Fatalf("%+v (racer took %d)", sb, racer)
	}
	if v, ok := vms(d)[racer]; !ok || v.Config["name"] != "racer" {
		t.Fatalf("the other client's VM %d was touched: %+v", racer, v)
	}
	l, _ := c.Events(tctx(t), "racy", 0, 0)
	found := false
	for _, e := range l.Events {
		found = found || e.Kind == "sandbox.vmid_taken"
	}
	if !found {
		t.Fatal("no vmid_taken event")
	}
}

// TestConcurrentCreatesGetDistinctVMIDs: nextid answers the same id to
// parallel callers; agentd must not hand one VMID to two sandboxes.
func TestConcurrentCreatesGetDistinctVMIDs(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	const n = 12
	for i := 0; i < n; i++ {
		if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: fmt.Sprintf("p%d", i), Profile: "yolo-ephemeral"}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[int]string{}
	for i := 0; i < n; i++ {
		sb, err := c.WaitSandbox(ctx, fmt.Sprintf("p%d", i), 10*time.Millisecond)
		if err != nil || sb.State != api.StateRunning {
			t.Fatalf("%+v %v", sb, err)
		}
		if prev, dup := seen[sb.VMID]; dup {
			t.Fatalf("VMID %d given to %s and %s", sb.VMID, prev, sb.Name)
		}
		seen[sb.VMID] = sb.Name
	}
	if len(vms(d)) != n {
		t.Fatalf("%d VMs", len(vms(d)))
	}
}

// TestBurstVMIDsSkipForeignVMs: a burst of creates picks VMIDs after the
// last one handed out, asking Proxmox about each; foreign VMs in the range
// (made after nextid answered) are skipped and never touched, and no id
// goes to two sandboxes.
func TestBurstVMIDsSkipForeignVMs(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	foreign := []int{103, 104, 110}
	for _, id := range foreign {
		if err := d.Sim.AddVM("pve", id, map[string]string{"name": fmt.Sprintf("theirs-%d", id), "memory": "512"}, false); err != nil {
			t.Fatal(err)
		}
	}
	const n = 30
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: fmt.Sprintf("b%d", i), Profile: "yolo-ephemeral"}); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	seen := map[int]string{}
	for i := 0; i < n; i++ {
		sb, err := c.WaitSandbox(ctx, fmt.Sprintf("b%d", i), 10*time.Millisecond)
		if err != nil || sb.State != api.StateRunning {
			t.Fatalf("%+v %v", sb, err)
		}
		if prev, dup := seen[sb.VMID]; dup {
			t.Fatalf("VMID %d given to %s and %s", sb.VMID, prev, sb.Name)
		}
		seen[sb.VMID] = sb.Name
	}
	for _, id := range foreign {
		if v, ok := vms(d)[id]; !ok || v.Config["name"] != fmt.Sprintf("theirs-%d", id) || v.Config["tags"] != "" {
			t.Fatalf("foreign VM %d: %+v", id, v)
		}
		if name, ok := seen[id]; ok {
			t.Fatalf("foreign VM %d's id went to %s", id, name)
		}
	}
}

// TestNeverTouchesForeignVMs: without the tag, or without a row, agentd does
// not stop or destroy a VM.
func TestNeverTouchesForeignVMs(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	sb := create(t, c, "mine")
	id, secret := d.Sim.Token()
	pc, err := pve.New(pve.Config{URL: d.Sim.URL(), TokenID: id, Secret: secret, Node: "pve", CAPEM: d.Sim.CAPEM()})
	if err != nil {
		t.Fatal(err)
	}
	// Someone removes the tag: agentd no longer treats the VM as its own.
	if err := pc.Configure(ctx, sb.VMID, pve.Option{Name: "tags", Value: "prod"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Stop(ctx, "mine")
	wantCode(t, err, http.StatusConflict, api.CodeNotOwned)
	_, err = c.Destroy(ctx, "mine", false)
	wantCode(t, err, http.StatusConflict, api.CodeNotOwned)
	if !strings.Contains(err.Error(), `lacks the "agentlab" tag`) {
		t.Fatal(err)
	}
	if v := vms(d)[sb.VMID]; !v.Running {
		t.Fatalf("foreign VM was stopped: %+v", v)
	}
	// Force retires the row but still leaves the VM alone.
	got, err := c.Destroy(ctx, "mine", true)
	if err != nil || got.State != api.StateDestroyed {
		t.Fatalf("%+v %v", got, err)
	}
	if v, ok := vms(d)[sb.VMID]; !ok || !v.Running {
		t.Fatalf("force destroyed a foreign VM: %+v", v)
	}
	// A tagged VM with no row (another agentd's, or restored from backup): no
	// command reaches it.
	if err := d.Sim.AddVM("pve", 555, map[string]string{"name": "stray", "tags": "agentlab", "memory": "512"}, false); err != nil {
		t.Fatal(err)
	}
	_, err = c.Destroy(ctx, "555", true)
	wantCode(t, err, http.StatusNotFound, api.CodeSandboxNotFound)
	_, err = c.Stop(ctx, "555")
	wantCode(t, err, http.StatusNotFound, api.CodeSandboxNotFound)
	if _, ok := vms(d)[555]; !ok {
		t.Fatal("VM 555 vanished")
	}
	// A row whose VMID was reused by a VM with the tag but another sandbox id.
	other := create(t, c, "other")
	if err := pc.Configure(ctx, other.VMID, pve.Option{Name: "description", Value: "agentlab-sandbox-id: sbx-someoneelse"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Destroy(ctx, "other", false)
	wantCode(t, err, http.StatusConflict, api.CodeNotOwned)
}

func TestDestroyWhileProvisioning(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	d.Sim.HangTask("qmstart", "")
	sb, _ := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "stuck", Profile: "yolo-ephemeral"})
	for sb.State != api.StateBooting {
		time.Sleep(10 * time.Millisecond)
		sb, _ = c.Sandbox(ctx, "stuck")
	}
	_, err := c.Destroy(ctx, "stuck", false)
	wantCode(t, err, http.StatusConflict, api.CodeInvalidState)
	d.Sim.ClearFaults()
	got, err := c.Destroy(ctx, "stuck", true)
	if err != nil || got.State != api.StateDestroying {
		t.Fatalf("destroy --force of a provisioning sandbox answers DESTROYING at once: %+v %v", got, err)
	}
	if got, err = c.WaitSandbox(ctx, got.ID, 10*time.Millisecond); err != nil || got.State != api.StateDestroyed {
		t.Fatalf("%+v %v", got, err)
	}
	if left := vms(d); len(left) != 0 {
		t.Fatalf("VMs left: %v", left)
	}
}

// TestRestartKeepsStateAndResumesProvisioning: a restart in the middle of
// provisioning resumes at the persisted step without a second clone.
func TestRestartKeepsStateAndResumesProvisioning(t *testing.T) {
	d, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	kept := create(t, c, "kept")
	d.Sim.HangTask("qmstart", "")
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "midway", Profile: "yolo-ephemeral"}); err != nil {
		t.Fatal(err)
	}
	// BOOTING is saved before the start request: wait for the (hung) task
	// itself, or the start may be sent after the faults are cleared.
	for started := false; !started; time.Sleep(10 * time.Millisecond) {
		for _, task := range d.Sim.Dump().Tasks {
			started = started || task.Type == "qmstart" && task.Running
		}
	}
	d.Sim.ClearFaults()
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	c = tcpClient(t, d, d.Info.Token)
	got, err := c.Sandbox(ctx, "kept")
	if err != nil || got.State != api.StateRunning || got.VMID != kept.VMID || got.IP != kept.IP {
		t.Fatalf("after restart: %+v %v", got, err)
	}
	mid, err := c.WaitSandbox(ctx, "midway", 10*time.Millisecond)
	if err != nil || mid.State != api.StateRunning {
		t.Fatalf("resume: %+v %v", mid, err)
	}
	if n := len(vms(d)); n != 2 {
		t.Fatalf("%d VMs after resume, want 2", n)
	}
	l, _ := c.Events(ctx, "midway", 0, 0)
	var ks []string
	for _, e := range l.Events {
		ks = append(ks, e.Kind)
	}
	if !strings.Contains(strings.Join(ks, " "), "sandbox.resumed") {
		t.Fatalf("no resumed event: %v", ks)
	}
}

// TestAgentConfigRejectsBadFiles runs agentd's config check path end to end.
func TestStartFailsOnSecondAgentForSameSocket(t *testing.T) {
	d, _ := startDev(t, agent.DevOptions{})
	cfg := *d.Config
	cfg.Listen = ""
	_, err := agent.Start(context.Background(), &cfg, nil, quiet)
	if err == nil || !strings.Contains(err.Error(), "another agentd is already serving") {
		t.Fatalf("got %v", err)
	}
}
