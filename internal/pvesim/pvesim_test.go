package pvesim_test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// raw sends a request and returns the status line and body exactly as on the wire.
func raw(t *testing.T, sim *pvesim.Sim, method, path, body string, auth bool) (string, string) {
	t.Helper()
	host := strings.TrimPrefix(strings.TrimSuffix(sim.URL(), "/api2/json"), "https://")
	conn, err := tls.Dial("tcp", host, &tls.Config{RootCAs: sim.CertPool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if conn.ConnectionState().NegotiatedProtocol == "h2" {
		t.Fatal("simulator negotiated HTTP/2; PVE speaks HTTP/1.1 only")
	}
	id, secret := sim.Token()
	var b strings.Builder
	fmt.Fprintf(&b, "%s /api2/json%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, path, host)
	if auth {
		fmt.Fprintf(&b, "Authorization: PVEAPIToken=%s=%s\r\n", id, secret)
	}
	if body != "" {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n" + body)
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(res.Body)
	return res.Status, string(data)
}

func newSim(t *testing.T) *pvesim.Sim {
	sim, err := pvesim.New(pvesim.Options{Fixtures: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	return sim
}

func TestWireFormat(t *testing.T) {
	sim := newSim(t)
	cases := []struct {
		name, method, path, body string
		auth                     bool
		status, bodyRE           string
	}{
		{"no auth", "GET", "/version", "", false, "401 No ticket", `^$|"data":null`},
		{"unknown path", "GET", "/nodes/pve/bogus", "", true, "501 Method 'GET /nodes/pve/bogus' not implemented", `"data":null`},
		{"body on GET", "GET", "/version", `{"a":1}`, true, "501 Unexpected content for method 'GET'", ``},
		{"missing VM", "GET", "/nodes/pve/qemu/777/config", "", true,
			"500 Configuration file 'nodes/pve/qemu-server/777.conf' does not exist",
			`^\{"data":null,"message":"Configuration file 'nodes/pve/qemu-server/777.conf' does not exist\\n"\}$`},
		{"param errors", "POST", "/nodes/pve/qemu/9000/clone", `{"newid":"abc","foo":1}`, true,
			"400 Parameter verification failed.",
			`"errors":\{"foo":"property is not defined in schema and the schema does not allow additional properties","newid":"type check \('integer'\) failed - got 'abc'"\}`},
		{"missing required", "POST", "/nodes/pve/qemu/9000/clone", `{}`, true,
			"400 Parameter verification failed.", `"newid":"property is missing and it is not optional"`},
		{"enum", "GET", "/cluster/resources?type=bogus", "", true, "400 Parameter verification failed.",
			`"type":"value 'bogus' does not have a value in the enumeration 'vm, storage, node, sdn'`},
		{"nextid is a string", "GET", "/cluster/nextid", "", true, "200 OK", `^\{"data":"100"\}$`},
		{"nextid taken", "GET", "/cluster/nextid?vmid=9000", "", true, "400 Parameter verification failed.", `"vmid":"VM 9000 already exists"`},
		{"template flag", "GET", "/nodes/pve/qemu/9000/status/current", "", true, "200 OK", `"template":1`},
		{"config types", "GET", "/nodes/pve/qemu/9000/config", "", true, "200 OK", `"cores":2,.*"memory":"2048"`},
		{"delete cannot take a body", "DELETE", "/nodes/pve/qemu/9000", `{"purge":1}`, true, "501 Unexpected content for method 'DELETE'", ``},
		{"bad property string", "POST", "/nodes/pve/qemu/9000/config", `{"net0":"virtio,bridge=vmbr1,speed=10"}`, true,
			"400 Parameter verification failed.", `"net0":"invalid format - format error\\nnet0.speed: property is not defined in schema and the schema does not allow additional properties\\n"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := raw(t, sim, c.method, c.path, c.body, c.auth)
			if status != c.status {
				t.Fatalf("status line %q, want %q (body %s)", status, c.status, body)
			}
			if c.bodyRE != "" && !regexp.MustCompile(c.bodyRE).MatchString(body) {
				t.Fatalf("body %s does not match %s", body, c.bodyRE)
			}
		})
	}
}

func TestStatusOmitsTemplateForVMs(t *testing.T) {
	sim := newSim(t)
	if err := sim.AddVM("pve", 150, map[string]string{"name": "plain", "memory": "1024"}, false); err != nil {
		t.Fatal(err)
	}
	_, body := raw(t, sim, "GET", "/nodes/pve/qemu/150/status/current", "", true)
	if strings.Contains(body, `"template"`) {
		t.Fatalf("status of a non-template carries template (go-proxmox reads any value as true): %s", body)
	}
	_, list := raw(t, sim, "GET", "/nodes/pve/qemu", "", true)
	var l struct{ Data []map[string]any }
	if err := json.Unmarshal([]byte(list), &l); err != nil || len(l.Data) != 2 {
		t.Fatalf("list: %s", list)
	}
	for _, vm := range l.Data {
		if _, has := vm["template"]; has != (vm["vmid"] == float64(9000)) {
			t.Fatalf("template key wrong in list entry %v", vm)
		}
	}
}

var upidRE = regexp.MustCompile(`^UPID:pve:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:qmclone:9000:agentd@pve!agentd:$`)

func TestTasks(t *testing.T) {
	sim := newSim(t)
	status, body := raw(t, sim, "POST", "/nodes/pve/qemu/9000/clone", `{"newid":200,"name":"c1"}`, true)
	var r struct{ Data string }
	if status != "200 OK" || json.Unmarshal([]byte(body), &r) != nil || !upidRE.MatchString(r.Data) {
		t.Fatalf("clone answer %s %s", status, body)
	}
	esc := strings.ReplaceAll(r.Data, "!", "%21")
	_, st := raw(t, sim, "GET", "/nodes/pve/tasks/"+esc+"/status", "", true)
	for _, frag := range []string{`"status":"stopped"`, `"exitstatus":"OK"`, `"user":"agentd@pve"`, `"tokenid":"agentd"`, `"type":"qmclone"`} {
		if !strings.Contains(st, frag) {
			t.Fatalf("task status %s lacks %s", st, frag)
		}
	}
	if !regexp.MustCompile(`"pid":\d+,`).MatchString(st) || !regexp.MustCompile(`"starttime":\d+`).MatchString(st) {
		t.Fatalf("pid/starttime must be numbers: %s", st)
	}
	_, lg := raw(t, sim, "GET", "/nodes/pve/tasks/"+esc+"/log?start=0&limit=50", "", true)
	if !strings.Contains(lg, `"t":"create linked clone of drive scsi0 (local-lvm:base-9000-disk-0)"`) ||
		!strings.Contains(lg, `"t":"TASK OK"`) || !strings.Contains(lg, `"total":`) {
		t.Fatalf("task log %s", lg)
	}
	s, _ := raw(t, sim, "GET", "/nodes/pve/tasks/UPID:pve:00000001:00000001:00000001:qmstart:1:x@pve:/status", "", true)
	if s != "400 Parameter verification failed." {
		t.Fatalf("unknown task: %s", s)
	}
	// Clone locks the new VM while the task runs and MACs are regenerated.
	cfg := sim.Dump().VMs[200].Config
	if cfg["net0"] == sim.Dump().VMs[9000].Config["net0"] || !regexp.MustCompile(`^virtio=BC:24:11:[0-9A-F:]{8},bridge=vmbr1$`).MatchString(cfg["net0"]) {
		t.Fatalf("clone net0 = %q", cfg["net0"])
	}
}

func TestHTTPHooks(t *testing.T) {
	sim := newSim(t)
	id, secret := sim.Token()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: sim.CertPool()}}}
	base := strings.TrimSuffix(sim.URL(), "/api2/json")
	req, _ := http.NewRequest("POST", base+"/_sim/lock", strings.NewReader(`{"vmid":9000,"lock":"backup"}`))
	req.Header.Set("Authorization", "PVEAPIToken="+id+"="+secret)
	res, err := client.Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("hook: %v %v", res, err)
	}
	status, _ := raw(t, sim, "POST", "/nodes/pve/qemu/9000/clone", `{"newid":201}`, true)
	if status != "500 VM is locked (backup)" {
		t.Fatalf("clone of locked template: %s", status)
	}
	req, _ = http.NewRequest("POST", base+"/_sim/lock", strings.NewReader(`{"vmid":9000}`))
	res, _ = client.Do(req)
	if res.StatusCode != 401 {
		t.Fatalf("hooks without token: %d", res.StatusCode)
	}
}

func httpClient(sim *pvesim.Sim) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: sim.CertPool()}}}
}
