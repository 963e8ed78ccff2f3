package client

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// Nodes lists the cluster nodes agentd uses, with what each holds.
func (c *Client) Nodes(ctx context.Context) ([]api.Node, error) {
	var out api.NodeList
	err := c.Do(ctx, http.MethodGet, "/v1/nodes", nil, &out)
	return out.Nodes, err
}

// DrainNode takes a node out of placement (drained) or puts it back.
func (c *Client) DrainNode(ctx context.Context, node string, drained bool) (*api.Node, error) {
	op := "undrain"
	if drained {
		op = "drain"
	}
	var out api.Node
	err := c.Do(ctx, http.MethodPost, "/v1/nodes/"+url.PathEscape(node)+"/"+op, nil, &out)
	return &out, err
}

// MoveWorkspace migrates a detached workspace to node (and storage).
func (c *Client) MoveWorkspace(ctx context.Context, ref string, req api.MoveWorkspaceRequest) (*api.Workspace, error) {
	var out api.Workspace
	err := c.Do(ctx, http.MethodPost, "/v1/workspaces/"+url.PathEscape(ref)+"/move", req, &out)
	return &out, err
}

// NodeDuties fetches what node's agent applies (node-agent token).
func (c *Client) NodeDuties(ctx context.Context, node string) (*api.NodeDuties, error) {
	var out api.NodeDuties
	err := c.Do(ctx, http.MethodGet, "/v1/nodes/"+url.PathEscape(node)+"/duties", nil, &out)
	return &out, err
}

// ReportNode sends a node agent's report.
func (c *Client) ReportNode(ctx context.Context, node string, rep api.NodeReport) error {
	return c.Do(ctx, http.MethodPost, "/v1/nodes/"+url.PathEscape(node)+"/report", rep, nil)
}

// GuestRelay is the node agent's guest relay: every request a guest sends
// to it goes on to agentd's relay route for node, with the guest's address
// and bearer token in their headers and the client's own token (the node
// agent's) as the credential.
func (c *Client) GuestRelay(node string) http.Handler {
	target, _ := url.Parse(c.base + "/v1/nodes/" + url.PathEscape(node) + "/guest")
	return &httputil.ReverseProxy{
		Transport: c.hc.Transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			host, _, err := net.SplitHostPort(pr.In.RemoteAddr)
			if err != nil {
				host = pr.In.RemoteAddr
			}
			pr.Out.Header.Set(api.GuestAddrHeader, host)
			pr.Out.Header.Del(api.GuestAuthHeader)
			if v := pr.In.Header.Get("Authorization"); v != "" {
				pr.Out.Header.Set(api.GuestAuthHeader, v)
			}
			pr.Out.Header.Del("Authorization")
			pr.Out.Header.Del(api.TeamHeader) // the guest's, not the relay's
			c.authorize(pr.Out)
		},
	}
}
