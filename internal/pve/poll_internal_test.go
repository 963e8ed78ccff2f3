package pve

import (
	"testing"
	"time"
)

// A task is seen done soon after it ends whatever its length (at most a
// quarter late, or one minimum pause), while a long task is not polled more
// than about once per maximum pause.
func TestPollIntervalSeesTasksSoon(t *testing.T) {
	const lo, hi = 20 * time.Millisecond, time.Second
	for _, d := range []time.Duration{10 * time.Millisecond, 50 * time.Millisecond, 200 * time.Millisecond, 700 * time.Millisecond, 3 * time.Second, 10 * time.Minute} {
		var at time.Duration // polls at 0, then after each pause
		polls := 1
		for at < d {
			at += pollInterval(at, lo, hi)
			polls++
		}
		if late := at - d; late > lo && float64(late) > 0.25*float64(d) {
			t.Errorf("a %v task is seen done %v late", d, late)
		}
		if limit := 40 + int(d/hi); polls > limit {
			t.Errorf("a %v task takes %d polls, want at most %d", d, polls, limit)
		}
	}
}
