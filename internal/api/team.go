package api

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// TeamQuota bounds what one team may hold; 0 means no limit. As usage the
// same fields say what the team holds now (TTLSeconds unused).
type TeamQuota struct {
	Sandboxes     int64 `json:"sandboxes"`      // live (not destroyed) sandboxes
	Cores         int64 `json:"cores"`          // their cores, summed
	MemoryMB      int64 `json:"memory_mb"`      // their memory, summed
	WorkspaceGB   int64 `json:"workspace_gb"`   // live workspaces' sizes, summed
	TTLSeconds    int64 `json:"ttl_seconds"`    // longest lease a sandbox may ask for
	ArtifactBytes int64 `json:"artifact_bytes"` // stored artifacts of the team's sandboxes
}

// String prints the set limits ("none" without any).
func (q TeamQuota) String() string {
	var parts []string
	for _, f := range []struct {
		k string
		v int64
	}{{"sandboxes", q.Sandboxes}, {"cores", q.Cores}, {"memory_mb", q.MemoryMB}, {"workspace_gb", q.WorkspaceGB},
		{"ttl_seconds", q.TTLSeconds}, {"artifact_bytes", q.ArtifactBytes}} {
		if f.v > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", f.k, f.v))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// Team is a namespace: its objects, tokens and quota.
type Team struct {
	Name        string     `json:"name"`
	Description string     `json:"description,omitempty"`
	Quota       TeamQuota  `json:"quota"`
	Usage       *TeamQuota `json:"usage,omitempty"` // set on GET
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

// TeamList is the list response.
type TeamList struct {
	Teams []Team `json:"teams"`
}

// CreateTeamRequest creates a team (global admins only).
type CreateTeamRequest struct {
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	Quota       TeamQuota `json:"quota"`
}

// UpdateTeamRequest replaces a team's description and whole quota.
type UpdateTeamRequest struct {
	Description string    `json:"description,omitempty"`
	Quota       TeamQuota `json:"quota"`
}

// Token is an API token as listed: never its value.
type Token struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Team       string     `json:"team,omitempty"` // "" for a global token
	Role       string     `json:"role"`
	Node       string     `json:"node,omitempty"` // a node-agent token's node
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	CreatedBy  string     `json:"created_by,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
}

// TokenList is the list response.
type TokenList struct {
	Tokens []Token `json:"tokens"`
}

// CreateTokenRequest issues a token. Team "" makes a global token (global
// admins only); TTL is a Go duration, "" for no expiry.
type CreateTokenRequest struct {
	Name string `json:"name"`
	Team string `json:"team,omitempty"`
	Role string `json:"role"`
	TTL  string `json:"ttl,omitempty"`
	// Node makes a node-agent token (role node, global admins only) for
	// `agentd node run` on that node.
	Node string `json:"node,omitempty"`
}

// RotateTokenRequest gives a token a new value; TTL as in create ("" keeps
// no expiry).
type RotateTokenRequest struct {
	TTL string `json:"ttl,omitempty"`
}

// IssuedToken is the one answer that carries a token's value: create and
// rotate. It is not stored anywhere.
type IssuedToken struct {
	Token
	Value string `json:"value"`
}

// TeamHeader names the team a global token (or the socket) acts in; team
// tokens may only name their own.
const TeamHeader = "Agentlab-Team"

// Team and token error codes.
const (
	CodeTeamNotFound  Code = "team_not_found"
	CodeTokenNotFound Code = "token_not_found"
	CodeTeamInUse     Code = "team_in_use"
	CodeAmbiguous     Code = "ambiguous_reference"
	CodeTokenExpired  Code = "token_expired"
	CodeTokenRevoked  Code = "token_revoked"
	CodeQuotaExceeded Code = "team_quota_exceeded"
)

// QuotaFlags names, per quota key, the flag of `agentd team create|update`
// that sets it, with the kind of value it takes.
var QuotaFlags = map[string]string{
	"sandboxes":      "--max-sandboxes N",
	"cores":          "--max-cores N",
	"memory_mb":      "--max-memory-mb N",
	"workspace_gb":   "--max-workspace-gb N",
	"ttl_seconds":    "--max-ttl DURATION",
	"artifact_bytes": "--max-artifact-bytes SIZE",
}

// QuotaError is a refusal by team's quota key (its limit, what is in use).
func QuotaError(team, key string, limit, used int64, format string, args ...any) *Error {
	flag := QuotaFlags[key]
	if flag == "" {
		flag = "--max-" + strings.ReplaceAll(key, "_", "-") + " N"
	}
	return LimitError(http.StatusTooManyRequests, CodeQuotaExceeded, "team "+team+" quota "+key, limit, used,
		"team %s quota %s is %d and %d is in use: %s; free some first, or ask an operator to raise it (agentd team update %s %s)",
		team, key, limit, used, fmt.Sprintf(format, args...), team, flag)
}

// TeamNotFound is the 404 of a team that does not exist.
func TeamNotFound(team string) *Error {
	return Errorf(http.StatusNotFound, CodeTeamNotFound, "team %q does not exist (agentd team list)", team)
}
