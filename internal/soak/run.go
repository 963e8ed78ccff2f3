package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// Outcome classes of an operation.
const (
	ClassOK       = "ok"
	Class4xx      = "4xx"
	Class5xx      = "5xx"
	ClassKilled   = "killed"    // no answer because agentd was killed meanwhile
	ClassNoAnswer = "no-answer" // transport error with agentd alive
	ClassTimeout  = "timeout"   // no answer within the op timeout
	ClassSkipped  = "skipped"   // precondition of a harness-side step not met
)

// Classes in table order.
var Classes = []string{ClassOK, Class4xx, Class5xx, ClassKilled, ClassNoAnswer, ClassTimeout, ClassSkipped}

// Record is one executed operation.
type Record struct {
	Op         Op
	Worker     int
	Fault      string // the fault injected right before it, if any
	Class      string
	Status     int
	Code       api.Code
	Message    string
	Start, End time.Time
}

func (r Record) result() Result {
	switch r.Class {
	case ClassOK:
		return Done
	case Class4xx:
		return Refused
	}
	return Unknown
}

// runner executes a plan against an Env.
type runner struct {
	env       *Env
	plan      *Plan
	model     *Model
	inj       *Injector
	opTimeout time.Duration
	log       io.Writer

	gen     atomic.Int64 // bumped at every kill: an op that spans a bump was interrupted
	killing atomic.Bool
	done    atomic.Int64
	upMu    sync.Mutex
	up      chan struct{} // closed while agentd serve is up

	mu      sync.Mutex
	records []Record
	kills   []time.Duration // restart times
	probes  []NodeProbe     // node-offline probes (I10)
	errs    []string        // harness problems (not findings)
}

func (r *runner) waitUp(ctx context.Context) error {
	r.upMu.Lock()
	ch := r.up
	r.upMu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *runner) harnessErr(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, a...))
}

// run drives all workers and the killer to the end of the plan.
func (r *runner) run(ctx context.Context) {
	r.up = make(chan struct{})
	close(r.up)
	var wg sync.WaitGroup
	killCtx, stopKiller := context.WithCancel(ctx)
	killerDone := make(chan struct{})
	go func() { defer close(killerDone); r.killer(killCtx) }()
	for i, steps := range r.plan.Workers {
		wg.Add(1)
		go func() { defer wg.Done(); r.worker(ctx, i, steps) }()
	}
	wg.Wait()
	stopKiller()
	<-killerDone
}

func (r *runner) worker(ctx context.Context, id int, steps []Step) {
	type pending struct{ token, at int }
	var reverts []pending
	for n, st := range steps {
		if ctx.Err() != nil {
			return
		}
		for i := 0; i < len(reverts); i++ {
			if reverts[i].at <= n {
				if err := r.inj.Revert(ctx, reverts[i].token); err != nil {
					r.harnessErr("worker %d: revert fault: %v", id, err)
				}
				reverts = append(reverts[:i], reverts[i+1:]...)
				i--
			}
		}
		time.Sleep(st.Pause)
		if err := r.waitUp(ctx); err != nil {
			return
		}
		fault := ""
		if st.Fault != nil {
			tok, injected, err := r.inj.Inject(ctx, *st.Fault)
			if err != nil {
				r.harnessErr("worker %d: %v", id, err)
			} else if injected {
				fault = st.Fault.String()
			}
			if tok != 0 {
				reverts = append(reverts, pending{tok, n + st.Fault.RevertAfter})
			}
		}
		rec := r.exec(ctx, st.Op)
		rec.Worker, rec.Fault = id, fault
		r.mu.Lock()
		r.records = append(r.records, rec)
		r.mu.Unlock()
		r.done.Add(1)
		if r.log != nil {
			fmt.Fprintf(r.log, "w%d %s → %s %s %s\n", id, st.Op, rec.Class, rec.Code, rec.Message)
		}
	}
	for _, p := range reverts {
		if err := r.inj.Revert(ctx, p.token); err != nil {
			r.harnessErr("worker %d: revert fault: %v", id, err)
		}
	}
}

// killer sends SIGKILL to agentd serve at the planned points and restarts it
// on the same state directory.
func (r *runner) killer(ctx context.Context) {
	for _, k := range r.plan.Kills {
		for r.done.Load() < int64(k.AfterOps) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
		time.Sleep(k.Delay)
		r.upMu.Lock()
		r.up = make(chan struct{})
		r.upMu.Unlock()
		r.killing.Store(true)
		r.gen.Add(1)
		start := time.Now()
		if err := r.env.Kill(); err != nil {
			r.harnessErr("kill -9: %v", err)
		}
		err := r.env.StartServe(context.WithoutCancel(ctx))
		r.killing.Store(false)
		if err != nil {
			r.harnessErr("restart after kill -9: %v", err)
		}
		r.mu.Lock()
		r.kills = append(r.kills, time.Since(start))
		r.mu.Unlock()
		r.upMu.Lock()
		close(r.up)
		r.upMu.Unlock()
	}
}

// classify turns an operation's error into its record fields.
func (r *runner) classify(rec *Record, err error, gen0 int64) {
	rec.End = time.Now()
	interrupted := r.gen.Load() != gen0 || r.killing.Load()
	var ae *api.Error
	switch {
	case err == nil:
		rec.Class = ClassOK
	case errors.As(err, &ae):
		rec.Status, rec.Code, rec.Message = ae.Status, ae.Code, ae.Message
		rec.Class = Class5xx
		if ae.Status >= 400 && ae.Status < 500 {
			rec.Class = Class4xx
		}
	case interrupted:
		rec.Class, rec.Message = ClassKilled, err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		rec.Class, rec.Message = ClassTimeout, err.Error()
	default:
		rec.Class, rec.Message = ClassNoAnswer, err.Error()
	}
}

// CheckI7: every failed operation got an answer naming its cause with a
// typed code, in time. Interrupted operations (agentd killed) are exempt.
func CheckI7(recs []Record, timeout time.Duration) []Violation {
	var out []Violation
	for _, rec := range recs {
		obj := fmt.Sprintf("op %s (worker %d)", rec.Op, rec.Worker)
		if rec.Fault != "" {
			obj += " after fault " + rec.Fault
		}
		switch {
		case rec.Class == ClassTimeout:
			out = append(out, Violation{"I7", obj, fmt.Sprintf("no answer within %s", timeout)})
		case rec.Class == ClassNoAnswer:
			out = append(out, Violation{"I7", obj, "no HTTP answer: " + rec.Message})
		case rec.Class != Class4xx && rec.Class != Class5xx:
		case rec.Code == "" || rec.Message == "":
			out = append(out, Violation{"I7", obj, fmt.Sprintf("%d without code or message (%q %q)", rec.Status, rec.Code, rec.Message)})
		case rec.Code == api.CodeInternal:
			out = append(out, Violation{"I7", obj, fmt.Sprintf("%d %s (untyped): %s", rec.Status, rec.Code, rec.Message)})
		}
	}
	return out
}

func (r *runner) sortedRecords() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]Record(nil), r.records...)
	sort.Slice(out, func(i, j int) bool { return out[i].Op.Seq < out[j].Op.Seq })
	return out
}
