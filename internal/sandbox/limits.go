package sandbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// Limits bound what clients may ask for (config keys max_ttl,
// max_sandboxes, max_sandboxes_per_profile; a profile's behavior.max_ttl
// and behavior.max_sandboxes replace the per-profile ones). Zero means none.
type Limits struct {
	MaxTTL                 time.Duration
	MaxSandboxes           int
	MaxSandboxesPerProfile int
}

// admissionKey is the manager-wide lock every create takes: sandbox ids
// start with "sbx-", so it cannot collide with one.
const admissionKey = "admission"

// admit checks a create against the limits. It is written for one line at
// the top of CreateFor, right after canonicalize:
//
//	defer m.admit(ctx, c, &err)()
//
// When *errp is already set (canonicalize failed) it does nothing. Otherwise
// it takes the admission lock, which the deferred call releases after the
// row is inserted, so that two concurrent creates cannot both take the last
// slot; a refusal is stored in *errp (and the lock released at once), for
// the caller's own `if err != nil` to return.
func (m *Manager) admit(ctx context.Context, c canonical, errp *error) (release func()) {
	if *errp != nil {
		return func() {}
	}
	unlock := m.locks.Lock(admissionKey)
	if err := m.checkLimits(ctx, c, m.replacing[replacementKey{auth.Team(ctx), c.Name}].old); err != nil {
		unlock()
		*errp = err
		return func() {}
	}
	return unlock
}

// checkLimits checks a create of c, which replaces sandbox old ("" for
// none): old's slot and resources are the replacement's to take.
func (m *Manager) checkLimits(ctx context.Context, c canonical, old string) error {
	team := auth.Team(ctx)
	if err := m.checkTTL(ctx, c.Profile, team, time.Duration(c.TTLSeconds)*time.Second); err != nil {
		return err
	}
	// A retry of a create that succeeded takes no new slot: let it reach the
	// idempotent path (or its 409). The row being replaced is not one.
	if ex, err := m.store.Sandboxes(ctx, store.Filter{Name: c.Name}); err != nil {
		return err
	} else if len(ex) > 0 && ex[0].ID != old {
		return nil
	}
	adj, err := m.replacingAdjust(ctx, replacementKey{team, c.Name})
	if err != nil {
		return err
	}
	l := m.opts.Limits
	if l.MaxSandboxes > 0 {
		n, err := m.store.LiveSandboxes(ctx, "")
		if err != nil {
			return err
		}
		n += adj.all
		if n >= l.MaxSandboxes {
			return api.LimitError(http.StatusTooManyRequests, api.CodeSandboxLimit, "max_sandboxes", int64(l.MaxSandboxes), int64(n),
				"%d sandboxes exist (not destroyed) and max_sandboxes is %d: destroy one first", n, l.MaxSandboxes)
		}
	}
	key, max := "max_sandboxes_per_profile", l.MaxSandboxesPerProfile
	if p := m.profiles[c.Profile]; p != nil && p.Behavior.MaxSandboxes > 0 {
		key, max = "profile "+c.Profile+" behavior.max_sandboxes", p.Behavior.MaxSandboxes
	}
	if max > 0 {
		n, err := m.store.LiveSandboxes(ctx, c.Profile)
		if err != nil {
			return err
		}
		n += adj.profile[c.Profile]
		if n >= max {
			return api.LimitError(http.StatusTooManyRequests, api.CodeProfileSandboxLimit, key, int64(max), int64(n),
				"profile %s has %d sandboxes (not destroyed) and %s is %d: destroy one first", c.Profile, n, key, max)
		}
	}
	return m.checkTeamQuota(ctx, team, c, adj.team[team])
}

// checkTeamQuota refuses a sandbox its team's quota has no room for. It
// runs under the admission lock, which serializes every create, so two
// concurrent creates cannot both take the team's last slot.
func (m *Manager) checkTeamQuota(ctx context.Context, team string, c canonical, adj api.TeamQuota) error {
	t, err := m.store.Team(ctx, team)
	if err != nil {
		return teamErr(team, err)
	}
	q := t.Quota
	if q.Sandboxes == 0 && q.Cores == 0 && q.MemoryMB == 0 {
		return nil
	}
	use, err := m.store.TeamUsage(ctx, team)
	if err != nil {
		return err
	}
	use.Sandboxes, use.Cores, use.MemoryMB = use.Sandboxes+adj.Sandboxes, use.Cores+adj.Cores, use.MemoryMB+adj.MemoryMB
	p := m.profiles[c.Profile]
	cores, mem := int64(cmp.Or(c.Cores, p.Resources.Cores)), int64(cmp.Or(c.MemoryMB, p.Resources.MemoryMB))
	for _, l := range []struct {
		key              string
		limit, used, ask int64
		unit             string
	}{{"sandboxes", q.Sandboxes, use.Sandboxes, 1, "sandboxes"}, {"cores", q.Cores, use.Cores, cores, "cores"},
		{"memory_mb", q.MemoryMB, use.MemoryMB, mem, "MiB of memory"}} {
		if l.limit > 0 && l.used+l.ask > l.limit {
			return api.QuotaError(team, l.key, l.limit, l.used, "this sandbox needs %d more %s", l.ask, l.unit)
		}
	}
	return nil
}

// A replacement is a create admitted before the sandbox it replaces is
// destroyed (session resume) or renamed (a node-lost recreate), so that a
// refusal leaves that sandbox as it was. Until the replacement's create
// runs, it holds the slot the old sandbox frees: a concurrent create cannot
// take it in between. While the old sandbox is still live (not DESTROYED) it
// is not counted a second time for its replacement.
type replacement struct {
	old             string // id of the sandbox replaced ("" for none)
	team, profile   string
	cores, memoryMB int
}

// replacementKey names a replacement: names are unique per team only, so
// team b's create of a name team a is replacing is not a's.
type replacementKey struct{ team, name string }

// Replace admits a create of req (for the caller's team) that replaces
// sandbox old ("" for none) with every check a create makes, before
// anything is destroyed or renamed. The replacement's create (same name,
// before release) is then admitted against the same room; release forgets
// the reservation and may be called more than once.
func (m *Manager) Replace(ctx context.Context, req api.CreateSandboxRequest, old string) (release func(), err error) {
	team := auth.Team(ctx)
	ctx = auth.For(ctx, team)
	var c canonical
	var p *profile.Profile
	if err = m.MayUseProfile(ctx, req.Profile, team); err == nil {
		c, p, err = m.canonicalize(req, "", team)
	}
	if err != nil {
		return nil, err
	}
	unlock := m.locks.Lock(admissionKey)
	defer unlock()
	k := replacementKey{team, c.Name}
	if _, dup := m.replacing[k]; dup {
		return nil, api.Errorf(http.StatusConflict, api.CodeConflict, "sandbox %q is already being replaced; retry", c.Name)
	}
	if m.replacing == nil {
		m.replacing = map[replacementKey]replacement{}
	}
	// Recorded first: the check counts it as the create's own.
	m.replacing[k] = replacement{old: old, team: team, profile: c.Profile,
		cores: cmp.Or(c.Cores, p.Resources.Cores), memoryMB: cmp.Or(c.MemoryMB, p.Resources.MemoryMB)}
	if err := m.checkLimits(ctx, c, old); err != nil {
		delete(m.replacing, k)
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			defer m.locks.Lock(admissionKey)()
			delete(m.replacing, k)
		})
	}, nil
}

// usageAdjust is what the admitted replacements change in the store's
// counts: the global count, per profile and per team.
type usageAdjust struct {
	all     int
	profile map[string]int
	team    map[string]api.TeamQuota
}

// replacingAdjust is the adjustment for the create own (under the
// admission lock): every replaced sandbox still live is taken out of the
// counts (its replacement stands for it), every other replacement is added
// in; own's replacement is what the create asks for.
func (m *Manager) replacingAdjust(ctx context.Context, own replacementKey) (usageAdjust, error) {
	// Replacements of every team count in the host-wide limits.
	ctx = auth.Host(ctx)
	a := usageAdjust{profile: map[string]int{}, team: map[string]api.TeamQuota{}}
	add := func(n int, team, profile string, cores, mem int) {
		a.all += n
		a.profile[profile] += n
		t := a.team[team]
		t.Sandboxes, t.Cores, t.MemoryMB = t.Sandboxes+int64(n), t.Cores+int64(n*cores), t.MemoryMB+int64(n*mem)
		a.team[team] = t
	}
	for k, r := range m.replacing {
		if k != own {
			add(1, r.team, r.profile, r.cores, r.memoryMB)
		}
		if r.old == "" {
			continue
		}
		sb, err := m.store.Sandbox(ctx, r.old)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return a, err
		}
		if !store.Counts(sb) {
			continue
		}
		add(-1, sb.Team, sb.Profile, sb.Cores, sb.MemoryMB) // what the store sums
	}
	return a, nil
}

// teamErr turns a missing team into its 404.
func teamErr(team string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return api.TeamNotFound(team)
	}
	return err
}

// checkTTL refuses a lease longer than the profile's maximum or the team's
// quota ttl_seconds, whichever is shorter (0 is no lease, which no maximum
// allows).
func (m *Manager) checkTTL(ctx context.Context, profileName, team string, ttl time.Duration) error {
	key, max := "max_ttl", m.opts.Limits.MaxTTL
	if p := m.profiles[profileName]; p != nil && p.Behavior.MaxTTL > 0 {
		key, max = "profile "+profileName+" behavior.max_ttl", p.Behavior.MaxTTL
	}
	t, err := m.store.Team(ctx, team)
	if err != nil {
		return teamErr(team, err)
	}
	if q := time.Duration(t.Quota.TTLSeconds) * time.Second; q > 0 && (max <= 0 || q < max) {
		key, max = "team "+team+" quota ttl_seconds", q
	}
	if max <= 0 || ttl > 0 && ttl <= max {
		return nil
	}
	asked := ttl.String()
	if ttl == 0 {
		asked = "no lease (ttl 0)"
	}
	e := api.LimitError(http.StatusBadRequest, api.CodeTTLTooLong, key, int64(max/time.Second), int64(ttl/time.Second),
		"ttl: %s exceeds %s %s", asked, key, fmt.Sprint(max))
	e.Field = "ttl"
	return e
}

// admitResize takes the admission lock for a resize of cores or memory when
// the sandbox's team has a quota on them: growing a sandbox takes the same
// room a create does, so the check and the write must not interleave with
// a create's (or another resize's). The lock is taken before the
// sandbox's own, in the order a create takes them.
func (m *Manager) admitResize(ctx context.Context, ref string) (release func(), err error) {
	sb, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	t, err := m.store.Team(ctx, sb.Team)
	if err != nil {
		return nil, teamErr(sb.Team, err)
	}
	if t.Quota.Cores == 0 && t.Quota.MemoryMB == 0 {
		return func() {}, nil
	}
	return m.locks.Lock(admissionKey), nil
}

// checkTeamResize refuses growing sb to cores and memory (0: unchanged)
// beyond its team's quota; shrinking is always allowed.
func (m *Manager) checkTeamResize(ctx context.Context, sb *store.Sandbox, cores, memoryMB int) error {
	return m.checkTeamGrowth(ctx, sb, cores, memoryMB, func(want, grow int64, unit string) string {
		return fmt.Sprintf("growing %s to %d %s needs %d more", sb.Name, want, unit, grow)
	})
}

// checkRollback refuses a rollback (snapshot restore, revert) to snapshot
// snap whose recorded config has more cores or memory than the sandbox has
// now, when the team's quota has no room for the difference: PVE's
// snapshot_rollback replaces the VM's config with the snapshot's, so a
// sandbox shrunk since would grow back behind the quota's back. The caller
// holds the admission lock (admitResize) and the sandbox's lock.
func (m *Manager) checkRollback(ctx context.Context, sb *store.Sandbox, snap string, want resources) error {
	return m.checkTeamGrowth(ctx, sb, want.Cores, want.MemoryMB, func(want, grow int64, unit string) string {
		return fmt.Sprintf("snapshot %s of %s has %d %s, %d more than the sandbox has now", snap, sb.Name, want, unit, grow)
	})
}

// checkTeamGrowth is the quota check of a sandbox going to cores and
// memory (0: unchanged); why words the refusal's detail.
func (m *Manager) checkTeamGrowth(ctx context.Context, sb *store.Sandbox, cores, memoryMB int, why func(want, grow int64, unit string) string) error {
	t, err := m.store.Team(ctx, sb.Team)
	if err != nil {
		return teamErr(sb.Team, err)
	}
	q := t.Quota
	if q.Cores == 0 && q.MemoryMB == 0 {
		return nil
	}
	use, err := m.store.TeamUsage(ctx, sb.Team)
	if err != nil {
		return err
	}
	have := resources{Cores: sb.Cores, MemoryMB: sb.MemoryMB}
	if p := m.profiles[sb.Profile]; p != nil {
		// 0 is "not read yet" (rows from before cores were recorded).
		have.Cores, have.MemoryMB = cmp.Or(have.Cores, p.Resources.Cores), cmp.Or(have.MemoryMB, p.Resources.MemoryMB)
	}
	for _, l := range []struct {
		key         string
		limit, used int64
		have, want  int
		unit        string
	}{{"cores", q.Cores, use.Cores, have.Cores, cores, "cores"}, {"memory_mb", q.MemoryMB, use.MemoryMB, have.MemoryMB, memoryMB, "MiB of memory"}} {
		grow := int64(l.want - l.have)
		if l.want == 0 || grow <= 0 || l.limit == 0 {
			continue
		}
		if l.used+grow > l.limit {
			return api.QuotaError(sb.Team, l.key, l.limit, l.used, "%s", why(int64(l.want), grow, l.unit))
		}
	}
	return nil
}

// MayUseProfile refuses a create in team with profile name: one 404 for a
// profile that does not exist and, to a team token, for one limited to
// other teams (profile key teams), as GET /v1/profiles/{name} and the list
// tell it, so that other teams' profiles (and the teams) do not leak; it runs
// before any other check of the request could tell the two apart. A global
// admin acting for a team is told why.
func (m *Manager) MayUseProfile(ctx context.Context, name, team string) error {
	p, ok := m.profiles[name]
	if !ok {
		return m.profileNotFound(name, team)
	}
	if p.Allows(team) {
		return nil
	}
	if pr, _ := auth.From(ctx); pr.Team != "" {
		return m.profileNotFound(name, team)
	}
	return api.Errorf(http.StatusForbidden, api.CodeForbidden, "profile %s is limited to teams %s; team %s may not use it",
		name, strings.Join(p.Teams, ", "), team)
}

func (m *Manager) profileNotFound(name, team string) error {
	return &api.Error{Status: http.StatusNotFound, Code: api.CodeProfileNotFound, Field: "profile",
		Message: fmt.Sprintf("profile %q does not exist (available: %s)", name, strings.Join(m.ProfileNames(team), ", "))}
}
