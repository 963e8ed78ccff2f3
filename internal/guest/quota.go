package guest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// quotas enforce artifact bytes per sandbox, per job and per team (its
// quota artifact_bytes) and the artifact count per sandbox across
// concurrent uploads. An owner's usage is read from
// the store when its first upload starts and then kept here, counting every
// byte as it arrives, until its last upload in flight ends: two uploads can
// never both take the last bytes, and retention's deletions are seen by the
// next upload.
type quotas struct {
	store    *store.Store
	perSB    int64 // bytes per sandbox (0: none)
	perJob   int64 // bytes per job (0: none)
	maxCount int64 // artifacts per sandbox (0: none)

	mu    sync.Mutex
	usage map[string]*usage // "sandbox:<id>" / "job:<id>" / "team:<name>"
}

type usage struct {
	bytes, count int64
	inflight     int
}

// reservation is one upload's share of its owners' usage.
type reservation struct {
	q      *quotas
	keys   []quotaKey
	bytes  int64
	ok     bool // the artifact was recorded: keep its bytes and count
	closed bool
}

type quotaKey struct {
	key   string
	limit int64 // bytes
	name  string
	what  string
	// read loads the owner's usage from the store (count, bytes).
	read func(context.Context) (int64, int64, error)
}

func newQuotas(st *store.Store, perSB, perJob int64, maxCount int) *quotas {
	return &quotas{store: st, perSB: perSB, perJob: perJob, maxCount: int64(maxCount), usage: map[string]*usage{}}
}

// begin reserves one artifact of sandboxID (and jobID, of team) or refuses
// with 429 when the sandbox has maxCount already.
func (q *quotas) begin(ctx context.Context, sandboxID, jobID, team string) (*reservation, error) {
	keys := []quotaKey{{key: "sandbox:" + sandboxID, limit: q.perSB, name: "artifact_quota_sandbox_bytes", what: "sandbox",
		read: func(ctx context.Context) (int64, int64, error) { return q.store.ArtifactUsage(ctx, sandboxID, "") }}}
	if jobID != "" {
		keys = append(keys, quotaKey{key: "job:" + jobID, limit: q.perJob, name: "artifact_quota_job_bytes", what: "job",
			read: func(ctx context.Context) (int64, int64, error) { return q.store.ArtifactUsage(ctx, "", jobID) }})
	}
	// The team's limit is read at every upload: an operator's change to
	// the quota holds from the next one.
	if t, err := q.store.Team(ctx, team); err == nil && t.Quota.ArtifactBytes > 0 {
		keys = append(keys, quotaKey{key: "team:" + team, limit: t.Quota.ArtifactBytes, name: "team " + team + " quota artifact_bytes", what: "team",
			read: func(ctx context.Context) (int64, int64, error) {
				u, err := q.store.TeamUsage(ctx, team)
				return 0, u.ArtifactBytes, err
			}})
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("team %s quota: %w", team, err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, k := range keys {
		if q.usage[k.key] != nil {
			continue
		}
		n, size, err := k.read(ctx)
		if err != nil {
			return nil, fmt.Errorf("artifact usage: %w", err)
		}
		q.usage[k.key] = &usage{bytes: size, count: n}
	}
	sb := q.usage[keys[0].key]
	if q.maxCount > 0 && sb.count >= q.maxCount {
		q.dropIdle(keys)
		return nil, api.LimitError(http.StatusTooManyRequests, api.CodeArtifactCount, "artifact_max_count", q.maxCount, sb.count,
			"this sandbox has %d artifacts; artifact_max_count is %d", sb.count, q.maxCount)
	}
	for _, k := range keys {
		u := q.usage[k.key]
		u.inflight++
		if k.key == keys[0].key {
			u.count++
		}
	}
	return &reservation{q: q, keys: keys}, nil
}

// dropIdle forgets owners without an upload in flight; the caller holds mu.
func (q *quotas) dropIdle(keys []quotaKey) {
	for _, k := range keys {
		if u := q.usage[k.key]; u != nil && u.inflight == 0 {
			delete(q.usage, k.key)
		}
	}
}

// add takes n more bytes, or refuses with 413 naming the quota it would
// exceed.
func (r *reservation) add(n int64) error {
	q := r.q
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, k := range r.keys {
		u := q.usage[k.key]
		if k.limit > 0 && u.bytes+n > k.limit {
			return api.LimitError(http.StatusRequestEntityTooLarge, api.CodeArtifactQuota, k.name, k.limit, u.bytes,
				"the artifacts of this %s would exceed %s (%d bytes; %d in use, counting uploads in progress)", k.what, k.name, k.limit, u.bytes)
		}
	}
	for _, k := range r.keys {
		q.usage[k.key].bytes += n
	}
	r.bytes += n
	return nil
}

// end releases the reservation: with the artifact recorded its bytes and
// count stay counted, otherwise they are given back.
func (r *reservation) end() {
	if r.closed {
		return
	}
	r.closed = true
	q := r.q
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, k := range r.keys {
		u := q.usage[k.key]
		u.inflight--
		if !r.ok {
			u.bytes -= r.bytes
			if i == 0 {
				u.count--
			}
		}
	}
	q.dropIdle(r.keys)
}

// quotaReader counts every byte read against the reservation.
type quotaReader struct {
	r   interface{ Read([]byte) (int, error) }
	res *reservation
}

func (qr *quotaReader) Read(p []byte) (int, error) {
	n, err := qr.r.Read(p)
	if n > 0 {
		if qerr := qr.res.add(int64(n)); qerr != nil {
			return 0, qerr
		}
	}
	return n, err
}
