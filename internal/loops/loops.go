// Package loops runs agentd's periodic work (lease GC, idle stop, reconcile,
// provisioning timeouts, state pruning) and records each loop's last run,
// duration and errors for `agentd status`.
package loops

import (
	"context"
	"sync"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// Loop is one periodic job.
type Loop struct {
	Name  string
	Every time.Duration
	Run   func(ctx context.Context) error
}

// Runner schedules loops.
type Runner struct {
	// Observe, when set, is told about every run (metrics).
	Observe func(name string, d time.Duration, err error)
	now     func() time.Time
	mu      sync.Mutex
	stats   map[string]*api.LoopStatus
	loops   map[string]Loop
	runMu   map[string]*sync.Mutex
	wg      sync.WaitGroup
}

// New builds a runner; now is the injected clock for the recorded times.
func New(now func() time.Time) *Runner {
	if now == nil {
		now = time.Now
	}
	return &Runner{now: now, stats: map[string]*api.LoopStatus{}, loops: map[string]Loop{}, runMu: map[string]*sync.Mutex{}}
}

// Add registers a loop (before Start).
func (r *Runner) Add(l Loop) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loops[l.Name] = l
	r.stats[l.Name] = &api.LoopStatus{Every: l.Every.String()}
	r.runMu[l.Name] = &sync.Mutex{}
}

// RunNow runs one loop once, serialised with its scheduled runs.
func (r *Runner) RunNow(ctx context.Context, name string) error {
	r.mu.Lock()
	l, ok := r.loops[name]
	mu := r.runMu[name]
	r.mu.Unlock()
	if !ok {
		return nil
	}
	mu.Lock()
	defer mu.Unlock()
	start := time.Now()
	err := l.Run(ctx)
	if r.Observe != nil {
		r.Observe(name, time.Since(start), err)
	}
	at := r.now().UTC()
	r.mu.Lock()
	st := r.stats[name]
	st.Runs++
	st.LastRun = &at
	st.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	if err != nil && ctx.Err() == nil {
		st.Errors++
		st.LastError = err.Error()
	} else if err == nil {
		st.LastError = ""
	}
	r.mu.Unlock()
	return err
}

// Start runs every loop once now and then at its interval, until ctx ends.
func (r *Runner) Start(ctx context.Context) {
	r.mu.Lock()
	loops := make([]Loop, 0, len(r.loops))
	for _, l := range r.loops {
		loops = append(loops, l)
	}
	r.mu.Unlock()
	for _, l := range loops {
		r.wg.Add(1)
		go func(l Loop) {
			defer r.wg.Done()
			t := time.NewTicker(l.Every)
			defer t.Stop()
			for {
				_ = r.RunNow(ctx, l.Name)
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}(l)
	}
}

// Wait blocks until every loop goroutine has returned (after ctx ended).
func (r *Runner) Wait() { r.wg.Wait() }

// Status returns a copy of every loop's stats.
func (r *Runner) Status() map[string]api.LoopStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]api.LoopStatus{}
	for k, v := range r.stats {
		out[k] = *v
	}
	return out
}
