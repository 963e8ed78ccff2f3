package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// authorize adds the token and the team a request acts in.
func (c *Client) authorize(req *http.Request) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.team != "" {
		req.Header.Set(api.TeamHeader, c.team)
	}
}

// Teams lists the teams the caller sees (a team token: its own).
func (c *Client) Teams(ctx context.Context) ([]api.Team, error) {
	var out api.TeamList
	err := c.Do(ctx, http.MethodGet, "/v1/teams", nil, &out)
	return out.Teams, err
}

// Team returns a team with its usage.
func (c *Client) Team(ctx context.Context, name string) (*api.Team, error) {
	var out api.Team
	err := c.Do(ctx, http.MethodGet, "/v1/teams/"+url.PathEscape(name), nil, &out)
	return &out, err
}

// CreateTeam creates a team (global admins).
func (c *Client) CreateTeam(ctx context.Context, req api.CreateTeamRequest) (*api.Team, error) {
	var out api.Team
	err := c.Do(ctx, http.MethodPost, "/v1/teams", req, &out)
	return &out, err
}

// UpdateTeam replaces a team's description and quota (global admins).
func (c *Client) UpdateTeam(ctx context.Context, name string, req api.UpdateTeamRequest) (*api.Team, error) {
	var out api.Team
	err := c.Do(ctx, http.MethodPut, "/v1/teams/"+url.PathEscape(name), req, &out)
	return &out, err
}

// DeleteTeam deletes a team that owns nothing live (global admins).
func (c *Client) DeleteTeam(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/teams/"+url.PathEscape(name), nil, nil)
}

// Tokens lists API tokens (never their values); all includes revoked ones.
func (c *Client) Tokens(ctx context.Context, all bool) ([]api.Token, error) {
	path := "/v1/tokens"
	if all {
		path += "?all=true"
	}
	var out api.TokenList
	err := c.Do(ctx, http.MethodGet, path, nil, &out)
	return out.Tokens, err
}

// CreateToken issues a token; the answer is the only place its value
// appears.
func (c *Client) CreateToken(ctx context.Context, req api.CreateTokenRequest) (*api.IssuedToken, error) {
	var out api.IssuedToken
	err := c.Do(ctx, http.MethodPost, "/v1/tokens", req, &out)
	return &out, err
}

// RevokeToken revokes a token by id or name.
func (c *Client) RevokeToken(ctx context.Context, ref string) (*api.Token, error) {
	var out api.Token
	err := c.Do(ctx, http.MethodPost, "/v1/tokens/"+url.PathEscape(ref)+"/revoke", nil, &out)
	return &out, err
}

// RotateToken gives a token a new value (the old one stops working).
func (c *Client) RotateToken(ctx context.Context, ref string, req api.RotateTokenRequest) (*api.IssuedToken, error) {
	var out api.IssuedToken
	err := c.Do(ctx, http.MethodPost, "/v1/tokens/"+url.PathEscape(ref)+"/rotate", req, &out)
	return &out, err
}
