package soak

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// SimClient drives the simulator's /_sim/ hooks from another process: the
// fault injection and the ground truth the invariants are checked against.
type SimClient struct {
	base, auth string
	hc         *http.Client
}

func newSimClient(pveURL, tokenID, secret string, caPEM []byte) (*SimClient, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("simulator certificate: no PEM certificate")
	}
	return &SimClient{
		base: strings.TrimSuffix(pveURL, "/api2/json") + "/_sim/",
		auth: "PVEAPIToken=" + tokenID + "=" + secret,
		hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}},
	}, nil
}

// Hook is the body of a POST /_sim/<name>; only the fields a hook reads are set.
type Hook struct {
	Method   string            `json:"method,omitempty"`
	Path     string            `json:"path,omitempty"`
	Code     int               `json:"code,omitempty"`
	Message  string            `json:"message,omitempty"`
	Type     string            `json:"type,omitempty"`
	ID       string            `json:"id,omitempty"`
	VMID     int               `json:"vmid,omitempty"`
	Lock     string            `json:"lock,omitempty"`
	State    string            `json:"state,omitempty"`
	Node     string            `json:"node,omitempty"`
	Storage  string            `json:"storage,omitempty"`
	On       bool              `json:"on,omitempty"`
	Volid    string            `json:"volid,omitempty"`
	File     string            `json:"file,omitempty"`
	Data     string            `json:"data,omitempty"`
	Config   map[string]string `json:"config,omitempty"`
	Template bool              `json:"template,omitempty"`
	Times    int               `json:"times,omitempty"`
	Hang     bool              `json:"hang,omitempty"`
}

// Do calls one hook and decodes its data into out (if not nil).
func (c *SimClient) Do(ctx context.Context, name string, h Hook, out any) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, name, bytes.NewReader(b), out)
}

func (c *SimClient) do(ctx context.Context, method, name string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+name, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", c.auth)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("sim hook %s: %w", name, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("sim hook %s: read: %w", name, err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("sim hook %s: %s", name, res.Status)
	}
	if out == nil {
		return nil
	}
	var env struct{ Data json.RawMessage }
	if err := json.Unmarshal(data, &env); err != nil {
		return fmt.Errorf("sim hook %s: decode: %w", name, err)
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		return fmt.Errorf("sim hook %s: decode data: %w", name, err)
	}
	return nil
}

// State is GET /_sim/state: every VM, volume and task of the simulator.
func (c *SimClient) State(ctx context.Context) (*pvesim.State, error) {
	var st pvesim.State
	if err := c.do(ctx, http.MethodGet, "state", nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Files lists the test content of a volume.
func (c *SimClient) Files(ctx context.Context, volid string) (map[string]string, error) {
	var files map[string]string
	if err := c.Do(ctx, "list-files", Hook{Volid: volid}, &files); err != nil {
		return nil, err
	}
	return files, nil
}
