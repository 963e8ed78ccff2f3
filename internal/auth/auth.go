// Package auth is who is asking: the principal every API request carries
// (a team token, a global token, or the trusted Unix socket), what its role
// allows, and the team scope the store applies to every lookup made on its
// behalf.
package auth

import (
	"context"
	"fmt"
	"regexp"
	"time"
)

// DefaultTeam owns every object made before teams existed, and what a
// global principal creates without naming a team.
const DefaultTeam = "default"

// Role is what a token may do inside its scope.
type Role string

// Roles, weakest first.
const (
	Read   Role = "read"   // GET only
	Member Role = "member" // everything on the team's objects
	Admin  Role = "admin"  // and the team's tokens; global admins also the host
	// NodeAgent is the per-node agent of one cluster node (`agentd node
	// run`): it may read that node's duties and report on it, nothing else.
	NodeAgent Role = "node"
)

// ParseRole reads a role name.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case Read, Member, Admin, NodeAgent:
		return r, nil
	}
	return "", fmt.Errorf("role %q: want read, member, admin or node", s)
}

func (r Role) rank() int {
	switch r {
	case Member:
		return 2
	case Admin:
		return 3
	case Read:
		return 1
	}
	return 0
}

// AtLeast reports whether r includes what want allows.
func (r Role) AtLeast(want Role) bool { return r.rank() >= want.rank() && want.rank() > 0 }

// teamRE: a DNS label of at most 32 characters, so that "<team>-<name>"
// stays a valid Proxmox VM name.
var teamRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

// ValidTeam checks a team name.
func ValidTeam(name string) error {
	if !teamRE.MatchString(name) {
		return fmt.Errorf("team name %q: want 1-32 lowercase letters, digits and inner hyphens", name)
	}
	return nil
}

// Principal is the authenticated caller of one request.
type Principal struct {
	// Team is the token's team; "" for a global principal (the socket, the
	// agent's own API token, tokens created without --team), which sees
	// every team.
	Team string
	Role Role
	// Actor names the caller in events: "token:<team>/<name>",
	// "token:<name>" for global tokens, "socket:<uid>".
	Actor string
	// TokenID is the id of the database token ("" for the socket and the
	// agent's own token).
	TokenID string
	// Expires is when the database token expires (nil: never, and for
	// the socket and the agent's own token): a token it issues must not
	// outlive it.
	Expires *time.Time
	// Node is the cluster node a node-agent token speaks for.
	Node string
	// Selected is the team a global principal chose to act in (the
	// Agentlab-Team header); "" acts across teams.
	Selected string
}

// Global reports whether the principal is not bound to a team.
func (p Principal) Global() bool { return p.Team == "" }

// Scope is the team whose objects the principal sees; "" means all.
func (p Principal) Scope() string {
	if p.Team != "" {
		return p.Team
	}
	return p.Selected
}

type ctxKey struct{}

// With returns ctx carrying p.
func With(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// From returns the request's principal; ok is false for agentd's own work
// (loops, workers), which is not scoped.
func From(ctx context.Context) (p Principal, ok bool) {
	p, ok = ctx.Value(ctxKey{}).(Principal)
	return p, ok
}

// Scope is the team filter the store applies for ctx: "" means every team
// (a global principal acting across teams, or agentd itself).
func Scope(ctx context.Context) string {
	p, _ := From(ctx)
	return p.Scope()
}

// Team is the team new objects made for ctx belong to.
func Team(ctx context.Context) string {
	if t := Scope(ctx); t != "" {
		return t
	}
	return DefaultTeam
}

// Actor names who acts for ctx in events; "agentd" for its own work.
func Actor(ctx context.Context) string {
	if p, ok := From(ctx); ok && p.Actor != "" {
		return p.Actor
	}
	return "agentd"
}

// For scopes ctx to team, keeping the actor: agentd acting on one object on
// behalf of the object's team (a session resume, a job's sandbox).
func For(ctx context.Context, team string) context.Context {
	p, ok := From(ctx)
	if !ok {
		p = Principal{Role: Admin, Actor: "agentd"}
	}
	if p.Team == "" {
		p.Selected = team
	}
	return With(ctx, p)
}

// Host drops the team scope for agentd's host-wide work (reconcile, prune,
// orphans, pools), keeping the actor: that work must see every team's
// objects, or another team's VM would look like an orphan. Only host routes
// (global principals) and the loops reach it.
func Host(ctx context.Context) context.Context {
	return With(ctx, Principal{Role: Admin, Actor: Actor(ctx)})
}
