package client

import (
	"context"
	"net/http"
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
