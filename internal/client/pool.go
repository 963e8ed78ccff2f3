package client

import (
	"context"
	"net/url"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// Pools lists every profile's warm pool.
func (c *Client) Pools(ctx context.Context) ([]api.Pool, error) {
	var l api.PoolList
	if err := c.Do(ctx, "GET", "/v1/pools", nil, &l); err != nil {
		return nil, err
	}
	return l.Pools, nil
}

// Pool reads one profile's warm pool.
func (c *Client) Pool(ctx context.Context, profile string) (*api.Pool, error) {
	var p api.Pool
	return &p, c.Do(ctx, "GET", "/v1/pools/"+url.PathEscape(profile), nil, &p)
}

// SetPool overrides (or, with Clear, restores) a profile's pool size.
func (c *Client) SetPool(ctx context.Context, profile string, req api.SetPoolRequest) (*api.Pool, error) {
	var p api.Pool
	return &p, c.Do(ctx, "PUT", "/v1/pools/"+url.PathEscape(profile), req, &p)
}
