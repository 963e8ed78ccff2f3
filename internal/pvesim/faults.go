package pvesim

import (
	"fmt"
	"net/http"
	"regexp"
	"time"
)

// Fault bookkeeping. A fault with left > 0 fires that many times and then
// removes itself, so that a chaos run can aim one failure at "the next clone"
// without having to clear it again (and without clearing everyone else's).

type endpointFault struct {
	method string
	re     *regexp.Regexp
	code   int
	msg    string
	hang   bool
	left   int // remaining matches; 0 means until cleared
}

type taskFault struct {
	typ, id  string
	msg      string
	hang     bool
	delay    time.Duration // the task does its work, but takes this long
	warnings int
	left     int
}

// replyFault performs the request and then loses the answer, as when pveproxy
// or the network dies after pvedaemon did the work: the client cannot tell
// whether its request happened.
type replyFault struct {
	method string
	re     *regexp.Regexp
	hang   bool // keep the connection open without answering, instead of closing it
	left   int
}

// beforeHook runs fn just before the next request matching method and re is
// served (before its faults are looked up), outside the simulator's lock, so
// fn may itself call the API or aim a fault at that request: a test lands a
// change exactly between two of a client's requests.
type beforeHook struct {
	method string
	re     *regexp.Regexp
	fn     func()
	left   int
}

type faults struct {
	before    []beforeHook
	endpoints []endpointFault
	tasks     []taskFault
	replies   []replyFault
	nextIDs   []int
}

// take returns a copy of the first element matching ok and uses up one of its
// matches, dropping it when none are left.
func take[F any](list *[]F, ok func(*F) bool, left func(*F) *int) (F, bool) {
	for i := range *list {
		f := &(*list)[i]
		if !ok(f) {
			continue
		}
		out := *f
		if n := left(f); *n > 0 {
			*n--
			if *n == 0 {
				*list = append((*list)[:i], (*list)[i+1:]...)
			}
		}
		return out, true
	}
	var zero F
	return zero, false
}

func (f *faults) endpointFault(method, path string) *endpointFault {
	e, ok := take(&f.endpoints, func(e *endpointFault) bool {
		return (e.method == "" || e.method == method) && e.re.MatchString(path)
	}, func(e *endpointFault) *int { return &e.left })
	if !ok {
		return nil
	}
	return &e
}

func (f *faults) taskFault(typ, id string) *taskFault {
	t, ok := take(&f.tasks, func(t *taskFault) bool {
		return t.typ == typ && (t.id == "" || t.id == id)
	}, func(t *taskFault) *int { return &t.left })
	if !ok {
		return nil
	}
	return &t
}

func (f *faults) replyFault(method, path string) *replyFault {
	r, ok := take(&f.replies, func(r *replyFault) bool {
		return (r.method == "" || r.method == method) && r.re.MatchString(path)
	}, func(r *replyFault) *int { return &r.left })
	if !ok {
		return nil
	}
	return &r
}

func (f *faults) popNextID() (int, bool) {
	if len(f.nextIDs) == 0 {
		return 0, false
	}
	id := f.nextIDs[0]
	f.nextIDs = f.nextIDs[1:]
	return id, true
}

func (s *Sim) addEndpointFault(method, pathRE string, f endpointFault) error {
	re, err := regexp.Compile(pathRE)
	if err != nil {
		return fmt.Errorf("pvesim: fault path: %w", err)
	}
	f.method, f.re = method, re
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.endpoints = append(s.faults.endpoints, f)
	return nil
}

func (s *Sim) addTaskFault(f taskFault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.tasks = append(s.faults.tasks, f)
}

// FailEndpointTimes is FailEndpoint for the next n matching requests only.
func (s *Sim) FailEndpointTimes(method, pathRE string, code int, msg string, n int) error {
	return s.addEndpointFault(method, pathRE, endpointFault{code: code, msg: msg, left: n})
}

// FailTaskTimes is FailTask for the next n matching tasks only.
func (s *Sim) FailTaskTimes(typ, id, msg string, n int) {
	s.addTaskFault(taskFault{typ: typ, id: id, msg: msg, left: n})
}

// HangTaskTimes is HangTask for the next n matching tasks only.
func (s *Sim) HangTaskTimes(typ, id string, n int) {
	s.addTaskFault(taskFault{typ: typ, id: id, hang: true, left: n})
}

// SlowTask makes the next task of typ (id "" for any) do its work taking d,
// whatever the configured durations: a crash can then land while it runs.
func (s *Sim) SlowTask(typ, id string, d time.Duration) {
	s.addTaskFault(taskFault{typ: typ, id: id, delay: d, left: 1})
}

// BeforeRequest runs fn once, just before the next request matching method
// and pathRE is served; fn runs outside the simulator's lock (it may use the
// API, or add a fault that then applies to this request) and the request
// waits for it. Go-only: there is no HTTP hook, since a
// function cannot travel over one.
func (s *Sim) BeforeRequest(method, pathRE string, fn func()) error {
	re, err := regexp.Compile(pathRE)
	if err != nil {
		return fmt.Errorf("pvesim: before-request path: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.before = append(s.faults.before, beforeHook{method: method, re: re, fn: fn, left: 1})
	return nil
}

func (f *faults) beforeHook(method, path string) func() {
	h, ok := take(&f.before, func(h *beforeHook) bool {
		return (h.method == "" || h.method == method) && h.re.MatchString(path)
	}, func(h *beforeHook) *int { return &h.left })
	if !ok {
		return nil
	}
	return h.fn
}

// LoseReply makes the next n requests matching method and pathRE (n = 0: all
// until cleared) take effect while their answer never reaches the client: the
// connection is closed without a response, or with hang left open until the
// client gives up. Tasks such a request starts run normally.
func (s *Sim) LoseReply(method, pathRE string, n int, hang bool) error {
	re, err := regexp.Compile(pathRE)
	if err != nil {
		return fmt.Errorf("pvesim: lose-reply path: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.replies = append(s.faults.replies, replyFault{method: method, re: re, hang: hang, left: n})
	return nil
}

// loseReply swallows the answer of a request that was performed.
func (s *Sim) loseReply(w http.ResponseWriter, r *http.Request, f *replyFault) {
	if f.hang {
		select {
		case <-r.Context().Done():
		case <-s.closing:
		}
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler) // net/http drops the connection without a response
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	_ = conn.Close()
}

// ReleaseHungTasks aborts every task a hang fault holds (as an operator's
// "stop task" would) and reports how many there were. ClearFaults alone does
// not end them: a hung PVE task stays hung when nobody intervenes.
func (s *Sim) ReleaseHungTasks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, t := range s.taskList {
		if !t.hung || !t.running {
			continue
		}
		select {
		case <-t.abort:
		default:
			close(t.abort)
			n++
		}
	}
	return n
}

// Files returns the test content of a volume (what WriteFile put there, as
// snapshots, rollbacks and clones carried it along).
func (s *Sim) Files(volid string) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	vol, err := s.volumeByID(volid)
	if err != nil {
		return nil, err
	}
	return copyFiles(vol.files), nil
}
