package pvesim_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// hook posts a /_sim/ hook and decodes its data.
func hook(t *testing.T, sim *pvesim.Sim, name, body string, out any) {
	t.Helper()
	id, secret := sim.Token()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: sim.CertPool()}}}
	req, _ := http.NewRequest("POST", strings.TrimSuffix(sim.URL(), "/api2/json")+"/_sim/"+name, strings.NewReader(body))
	req.Header.Set("Authorization", "PVEAPIToken="+id+"="+secret)
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("hook %s: %v", name, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		t.Fatalf("hook %s: %s %s", name, res.Status, b)
	}
	if out != nil {
		var env struct{ Data json.RawMessage }
		if err := json.Unmarshal(b, &env); err != nil || json.Unmarshal(env.Data, out) != nil {
			t.Fatalf("hook %s answer %s", name, b)
		}
	}
}

// try sends one API request and returns the status line, or the transport
// error when no answer came.
func try(sim *pvesim.Sim, method, path, body string, timeout time.Duration) (string, error) {
	id, secret := sim.Token()
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: sim.CertPool()}}}
	req, _ := http.NewRequest(method, sim.URL()+path, strings.NewReader(body))
	req.Header.Set("Authorization", "PVEAPIToken="+id+"="+secret)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.Status, nil
}

func TestFaultTimes(t *testing.T) {
	sim := newSim(t)
	hook(t, sim, "fail-endpoint", `{"method":"POST","path":"^/nodes/pve/qemu/9000/clone$","code":500,"message":"boom","times":2}`, nil)
	for i, want := range []string{"500 boom", "500 boom", "200 OK"} {
		st, err := try(sim, "POST", "/nodes/pve/qemu/9000/clone", fmt.Sprintf(`{"newid":%d}`, 300+i), 5*time.Second)
		if err != nil || st != want {
			t.Fatalf("clone %d: %q %v, want %q", i, st, err, want)
		}
	}
	sim.FailTaskTimes("qmclone", "", "clone failed: out of luck", 1)
	upids := []string{}
	for _, id := range []int{310, 311} {
		var r struct{ Data string }
		_, body := raw(t, sim, "POST", "/nodes/pve/qemu/9000/clone", fmt.Sprintf(`{"newid":%d}`, id), true)
		if json.Unmarshal([]byte(body), &r) != nil {
			t.Fatalf("clone answer %s", body)
		}
		upids = append(upids, r.Data)
	}
	st := sim.Dump().Tasks
	exits := map[string]string{}
	for _, x := range st {
		exits[x.UPID] = x.ExitStatus
	}
	if exits[upids[0]] != "clone failed: out of luck" || exits[upids[1]] != "OK" {
		t.Fatalf("task exits %q %q, want the first failed and the second OK", exits[upids[0]], exits[upids[1]])
	}
}

func TestLoseReply(t *testing.T) {
	sim := newSim(t)
	// Closed connection: the clone happens, the client sees no answer.
	hook(t, sim, "lose-reply", `{"method":"POST","path":"/clone$","times":1}`, nil)
	if st, err := try(sim, "POST", "/nodes/pve/qemu/9000/clone", `{"newid":400}`, 5*time.Second); err == nil {
		t.Fatalf("clone with a lost reply answered %s", st)
	}
	if _, ok := sim.Dump().VMs[400]; !ok {
		t.Fatal("the clone whose reply was lost did not happen")
	}
	if st, err := try(sim, "POST", "/nodes/pve/qemu/9000/clone", `{"newid":401}`, 5*time.Second); err != nil || st != "200 OK" {
		t.Fatalf("second clone: %q %v (a times:1 fault must fire once)", st, err)
	}
	// Hanging answer: the config change is applied while the client times out.
	if err := sim.LoseReply("PUT", "/config$", 1, true); err != nil {
		t.Fatal(err)
	}
	_, err := try(sim, "PUT", "/nodes/pve/qemu/400/config", `{"memory":"1024"}`, 300*time.Millisecond)
	var ne interface{ Timeout() bool }
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("hung reply: %v, want a client timeout", err)
	}
	if m := sim.Dump().VMs[400].Config["memory"]; m != "1024" {
		t.Fatalf("memory = %q, want the change applied despite the lost reply", m)
	}
	// A request that fails validation is not "performed": the fault waits.
	hook(t, sim, "lose-reply", `{"method":"DELETE","path":"^/nodes/pve/qemu/401$","times":1}`, nil)
	if _, err := try(sim, "DELETE", "/nodes/pve/qemu/401", "", 5*time.Second); err == nil {
		t.Fatal("destroy with a lost reply answered")
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, ok := sim.Dump().VMs[401]; ok && time.Now().Before(deadline); _, ok = sim.Dump().VMs[401] {
		time.Sleep(10 * time.Millisecond)
	}
	if _, ok := sim.Dump().VMs[401]; ok {
		t.Fatal("the destroy whose reply was lost did not happen")
	}
	// Raw check that the connection carries no status line at all.
	if err := sim.LoseReply("GET", "^/version$", 1, false); err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(strings.TrimSuffix(sim.URL(), "/api2/json"), "https://")
	conn, err := tls.Dial("tcp", host, &tls.Config{RootCAs: sim.CertPool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	id, secret := sim.Token()
	fmt.Fprintf(conn, "GET /api2/json/version HTTP/1.1\r\nHost: %s\r\nAuthorization: PVEAPIToken=%s=%s\r\n\r\n", host, id, secret)
	if _, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil {
		t.Fatal("a lost reply still wrote a response")
	}
}

func TestReleaseHungTasks(t *testing.T) {
	sim := newSim(t)
	sim.HangTaskTimes("qmsnapshot", "", 1)
	var r struct{ Data string }
	raw(t, sim, "POST", "/nodes/pve/qemu/9000/clone", `{"newid":500}`, true)
	_, body := raw(t, sim, "POST", "/nodes/pve/qemu/500/snapshot", `{"snapname":"s1"}`, true)
	if json.Unmarshal([]byte(body), &r) != nil {
		t.Fatalf("snapshot answer %s", body)
	}
	running := func() bool {
		for _, x := range sim.Dump().Tasks {
			if x.UPID == r.Data {
				return x.Running
			}
		}
		return false
	}
	time.Sleep(50 * time.Millisecond)
	if !running() {
		t.Fatal("hung task is not running")
	}
	var n int
	hook(t, sim, "release-hung-tasks", `{}`, &n)
	if n != 1 {
		t.Fatalf("released %d hung tasks, want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for running() && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	for _, x := range sim.Dump().Tasks {
		if x.UPID == r.Data && (x.Running || x.ExitStatus != "received interrupt") {
			t.Fatalf("released task: %+v", x)
		}
	}
	// times:1 — the next snapshot runs normally.
	_, body = raw(t, sim, "POST", "/nodes/pve/qemu/500/snapshot", `{"snapname":"s2"}`, true)
	if json.Unmarshal([]byte(body), &r) != nil || running() {
		t.Fatalf("second snapshot %s still hangs", body)
	}
}

func TestListFiles(t *testing.T) {
	sim := newSim(t)
	if err := sim.AddVM("pve", 600, map[string]string{"scsi0": "local-lvm:1"}, false); err != nil {
		t.Fatal(err)
	}
	vol := strings.SplitN(sim.Dump().VMs[600].Config["scsi0"], ",", 2)[0]
	hook(t, sim, "write-file", fmt.Sprintf(`{"volid":%q,"file":"/work/a","data":"one"}`, vol), nil)
	hook(t, sim, "write-file", fmt.Sprintf(`{"volid":%q,"file":"/work/b","data":"two"}`, vol), nil)
	var files map[string]string
	hook(t, sim, "list-files", fmt.Sprintf(`{"volid":%q}`, vol), &files)
	if len(files) != 2 || files["/work/a"] != "one" || files["/work/b"] != "two" {
		t.Fatalf("files = %v", files)
	}
}

// A task that waited for the config lock behind a destroy fails like PVE's
// ("does not exist") instead of working on the removed VM; the chaos soak
// found the simulator crashing on a resize queued behind a destroy.
func TestTaskBehindDestroy(t *testing.T) {
	sim, err := pvesim.New(pvesim.Options{Fixtures: true, Durations: pvesim.Durations{Default: time.Millisecond, ByType: map[string]time.Duration{"qmdestroy": 300 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	if st, _ := raw(t, sim, "POST", "/nodes/pve/qemu/9000/clone", `{"newid":700,"name":"victim"}`, true); st != "200 OK" {
		t.Fatalf("clone: %s", st)
	}
	waitUnlocked(t, sim, 700) // the clone's worker runs 1 ms, later on a loaded machine
	if st, _ := raw(t, sim, "DELETE", "/nodes/pve/qemu/700", "", true); st != "200 OK" {
		t.Fatalf("destroy: %s", st)
	}
	time.Sleep(50 * time.Millisecond) // the destroy's worker takes the config lock first
	queued := []string{}
	for _, r := range []struct{ method, path, body string }{
		{"PUT", "/nodes/pve/qemu/700/resize", `{"disk":"scsi0","size":"20G"}`},
		{"POST", "/nodes/pve/qemu/700/config", `{"memory":"4096"}`},
		{"POST", "/nodes/pve/qemu/700/snapshot", `{"snapname":"s1"}`},
		{"POST", "/nodes/pve/qemu/700/clone", `{"newid":701}`},
	} {
		st, body := raw(t, sim, r.method, r.path, r.body, true)
		var out struct{ Data string }
		if st != "200 OK" || json.Unmarshal([]byte(body), &out) != nil {
			t.Fatalf("%s %s: %s %s", r.method, r.path, st, body)
		}
		queued = append(queued, out.Data)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		done := 0
		for _, x := range sim.Dump().Tasks {
			for _, u := range queued {
				if x.UPID == u && !x.Running {
					done++
					if x.ExitStatus != "Configuration file 'nodes/pve/qemu-server/700.conf' does not exist" {
						t.Fatalf("%s ended %q", x.Type, x.ExitStatus)
					}
				}
			}
		}
		if done == len(queued) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d queued tasks ended", done, len(queued))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, ok := sim.Dump().VMs[701]; ok {
		t.Fatal("a clone of a destroyed VM appeared")
	}
}
