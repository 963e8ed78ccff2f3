package guest

import (
	"fmt"
	"sync"
	"time"
)

// maxRefusalKeys bounds the limiter's memory: the agent subnet can hold tens
// of thousands of addresses, and a flood must not grow agentd either.
const maxRefusalKeys = 4096

// refusals coalesces refused guest requests: per subject (a sandbox id, or
// the source address when no sandbox is known) at most one event per
// interval, which also says how many refusals the previous interval did not
// record; and a source refused more than burst times in an interval is
// answered 429 without a database lookup until the interval ends.
type refusals struct {
	interval time.Duration
	burst    int
	now      func() time.Time

	mu      sync.Mutex
	events  map[string]*refusalWindow // by subject: what was recorded
	sources map[string]*refusalWindow // by source address: for throttling
}

type refusalWindow struct {
	start      time.Time
	count      int // refusals in this window
	suppressed int // of them, not recorded as an event
}

func newRefusals(interval time.Duration, burst int, now func() time.Time) *refusals {
	return &refusals{interval: interval, burst: burst, now: now, events: map[string]*refusalWindow{}, sources: map[string]*refusalWindow{}}
}

// hit counts one refusal in key's window, opening a new window when the last
// has ended. It returns the window (nil when the table is full of live
// windows), whether it is new, and the previous window's suppressed count.
// The caller holds mu.
func (l *refusals) hit(keys map[string]*refusalWindow, key string, now time.Time) (w *refusalWindow, fresh bool, carried int) {
	w = keys[key]
	if w != nil && now.Sub(w.start) < l.interval {
		w.count++
		return w, false, 0
	}
	if w != nil {
		carried = w.suppressed
	} else if len(keys) >= maxRefusalKeys {
		for k, o := range keys {
			if now.Sub(o.start) >= l.interval {
				delete(keys, k)
			}
		}
		if len(keys) >= maxRefusalKeys {
			return nil, false, 0
		}
	}
	w = &refusalWindow{start: now, count: 1}
	keys[key] = w
	return w, true, carried
}

// refused counts a refusal of subject's request from source and reports
// whether to record an event for it, with a note on what the previous
// window left unrecorded.
func (l *refusals) refused(subject, source string) (emit bool, note string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.hit(l.sources, source, now)
	w, fresh, carried := l.hit(l.events, subject, now)
	switch {
	case w == nil:
		return false, ""
	case !fresh:
		w.suppressed++
		return false, ""
	case carried > 0:
		note = fmt.Sprintf(" (and %d similar refusal(s) in the %s before, not recorded one by one)", carried, l.interval)
	}
	return true, note
}

// throttled reports whether source has been refused more than burst times in
// its current window, and when that window ends; a throttled request counts
// as one more unrecorded refusal of the source.
func (l *refusals) throttled(source string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.sources[source]
	if w == nil {
		return false, 0
	}
	left := l.interval - l.now().Sub(w.start)
	if left <= 0 || w.count <= l.burst {
		return false, 0
	}
	w.count++
	if ev := l.events["src:"+source]; ev != nil {
		ev.suppressed++
	}
	return true, left
}
