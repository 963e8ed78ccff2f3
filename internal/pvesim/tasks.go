package pvesim

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Durations sets how long each task type runs (keys are PVE task types such as
// qmclone, qmstart); Default applies to types not listed.
type Durations struct {
	Default time.Duration
	ByType  map[string]time.Duration
	// StorageLock is how long one disk allocation, linked clone or free
	// holds its storage lock (storagelock.go); it counts towards the
	// duration of the task doing it.
	StorageLock time.Duration
}

// RealisticDurations approximates a small PVE host (pveapi.md §6.5), for demos and benchmarks.
func RealisticDurations() Durations {
	// A linked clone's two storage commands (the thin snapshot of the base
	// disk, the cloud-init volume) take up its whole qmclone time.
	return Durations{Default: 200 * time.Millisecond, StorageLock: time.Second, ByType: map[string]time.Duration{
		"qmclone": 2 * time.Second, "qmstart": 2 * time.Second, "qmstop": time.Second,
		"qmshutdown": 5 * time.Second, "qmdestroy": 2 * time.Second, "qmsnapshot": time.Second,
		"qmrollback": 2 * time.Second, "qmdelsnapshot": time.Second, "resize": 500 * time.Millisecond,
		"qmmove": 500 * time.Millisecond, "qmconfig": 200 * time.Millisecond, "imgdel": 500 * time.Millisecond,
		// Writing and reading a few GiB of RAM state.
		"qmsuspend": 4 * time.Second, "qmresume": 3 * time.Second,
		// An offline migration copying an 8 GiB disk over 10 GbE.
		"qmigrate": 10 * time.Second,
	}}
}

func (d Durations) of(typ string) time.Duration {
	if v, ok := d.ByType[typ]; ok {
		return v
	}
	return d.Default
}

type task struct {
	upid       string
	node       string
	typ        string
	id         string
	user       string
	tokenID    string
	pid        int
	pstart     int64
	start      time.Time
	end        time.Time
	running    bool
	exitstatus string
	log        []string
	warnings   int
	abort      chan struct{}
	vmids      []int // flocks held
	hung       bool  // held by a hang fault (ReleaseHungTasks ends it)
}

// errAborted is what a worker sees when DELETE /tasks/{upid} stops it.
var errAborted = errors.New("received interrupt")

// worker gives task code the ability to wait for its simulated duration.
type worker struct {
	s    *Sim
	t    *task
	dur  time.Duration
	held time.Duration // spent holding storage locks (part of dur)
}

// wait releases the state lock for what is left of the task's duration
// (the time it held storage locks is spent already), like a worker doing I/O.
func (w *worker) wait() error {
	d := w.dur - w.held
	if d <= 0 {
		return nil
	}
	w.s.mu.Unlock()
	defer w.s.mu.Lock()
	select {
	case <-time.After(d):
	case <-w.t.abort:
		return errAborted
	case <-w.s.closing:
		return errAborted
	}
	return w.whileOffline()
}

// whileOffline holds a worker (state lock released) while its node is
// offline: the node's processes are out of reach, nothing it does is seen
// until it is back, and then the task goes on where it was. Called with
// s.mu released; returns with it released.
func (w *worker) whileOffline() error {
	for {
		w.s.mu.Lock()
		n := w.s.nodes[w.t.node]
		if n == nil || !n.offline {
			w.s.mu.Unlock()
			return nil
		}
		back := n.back
		w.s.mu.Unlock()
		select {
		case <-back:
		case <-w.t.abort:
			return errAborted
		case <-w.s.closing:
			return errAborted
		}
	}
}

func (w *worker) logf(format string, a ...any) { w.t.log = append(w.t.log, fmt.Sprintf(format, a...)) }

func (w *worker) warn(format string, a ...any) {
	w.t.warnings++
	w.logf("WARN: "+format, a...)
}

// Config flock timeouts: lock_config's default (PVE::AbstractConfig::lock_config,
// 10 s) and the 1 s clone_vm uses for its source and target
// (PVE::API2::Qemu clone_vm, lock_config_full($vmid, 1, …)).
const (
	configLockTimeout = 10 * time.Second
	cloneLockTimeout  = time.Second
)

// unlock releases a flock before the task ends, as a worker leaving a
// lock_config block does (snapshot_create between prepare and commit).
func (w *worker) unlock(vmid int) {
	if v := w.s.vms[vmid]; v != nil {
		if v.flock == w.t {
			v.flock = nil
		}
		delete(v.shared, w.t)
	}
}

// flock emulates the per-VM config flock with PVE's timeout message.
func (w *worker) flock(vmid int, timeout time.Duration) error {
	return w.takeFlock(vmid, timeout, false)
}

// lockVM takes v's config flock and then checks that v still exists: a task
// that waited for the lock behind a destroy must fail the way PVE's does
// (the config file is gone), not work on a VM that no longer exists.
func (w *worker) lockVM(v *vm, timeout time.Duration) error {
	if err := w.flock(v.id, timeout); err != nil {
		return err
	}
	if w.s.vms[v.id] != v {
		return fmt.Errorf("Configuration file '%s' does not exist", v.confPath())
	}
	return nil
}

// flockShared takes the config flock in shared mode, as lock_config_shared does
// for the source of a clone that is not running: clones of one template run in
// parallel, while an exclusive holder (config change, destroy) waits.
func (w *worker) flockShared(vmid int, timeout time.Duration) error {
	return w.takeFlock(vmid, timeout, true)
}

func (w *worker) takeFlock(vmid int, timeout time.Duration, shared bool) error {
	deadline := time.Now().Add(timeout)
	for {
		v := w.s.vms[vmid]
		if v == nil {
			return nil
		}
		// Shared holders exclude only an exclusive one; an exclusive holder
		// excludes everyone else.
		if (v.flock == nil || v.flock == w.t) && (shared || !v.sharedByOthers(w.t)) {
			if shared {
				if v.shared == nil {
					v.shared = map[*task]bool{}
				}
				v.shared[w.t] = true
			} else {
				v.flock = w.t
			}
			w.t.vmids = append(w.t.vmids, vmid)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("can't lock file '/var/lock/qemu-server/lock-%d.conf' - got timeout", vmid)
		}
		w.s.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		w.s.mu.Lock()
	}
}

// startTask creates a task and runs fn as its worker; called with s.mu held.
// A zero-duration task completes before the UPID is returned, which keeps fast
// tests deterministic; otherwise the worker runs in the background.
func (s *Sim) startTask(req *request, nodeName, typ, id string, fn func(w *worker) error) string {
	s.nextPID += 1 + s.rnd.Intn(40)
	now := s.now()
	n := s.nodes[nodeName]
	pstart := int64(now.Sub(n.started).Seconds()*100) + 0x100000
	t := &task{
		node: nodeName, typ: typ, id: id, user: req.user, tokenID: req.tokenID,
		pid: s.nextPID, pstart: pstart, start: now, running: true, abort: make(chan struct{}),
	}
	t.upid = fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%s:%s:%s:", nodeName, t.pid, t.pstart, now.Unix(), typ, id, req.owner())
	s.tasks[t.upid] = t
	s.taskList = append(s.taskList, t)
	f := s.faults.taskFault(typ, id)
	t.hung = f != nil && f.hang
	dur := s.opts.Durations.of(typ)
	w := &worker{s: s, t: t, dur: dur}
	run := func() {
		var err error
		switch {
		case f != nil && f.hang:
			w.dur = 100 * 365 * 24 * time.Hour
			err = w.wait()
		case f != nil && f.delay > 0:
			w.dur = f.delay
			err = fn(w)
		case f != nil && f.msg != "":
			err = w.wait()
			if err == nil {
				err = errors.New(f.msg)
			}
		default:
			err = fn(w)
		}
		if f != nil && f.warnings > 0 && err == nil {
			for i := 0; i < f.warnings; i++ {
				w.warn("injected warning %d", i+1)
			}
		}
		s.finishTask(t, err)
	}
	// A storage lock hold takes time even in a task of no duration: such
	// tasks run in the background too.
	if dur <= 0 && s.opts.Durations.StorageLock <= 0 && (f == nil || !f.hang && f.delay <= 0) {
		run()
		return t.upid
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.mu.Lock()
		defer s.mu.Unlock()
		run()
	}()
	return t.upid
}

func (s *Sim) finishTask(t *task, err error) {
	t.running = false
	t.end = s.now()
	for _, id := range t.vmids {
		if v := s.vms[id]; v != nil {
			if v.flock == t {
				v.flock = nil
			}
			delete(v.shared, t)
		}
	}
	switch {
	case err != nil:
		text := err.Error()
		// A plain die (errf, code 500) is its message alone in the task log;
		// only PVE::Exception objects with a code stringify as "<code> <msg>".
		var pe *Error
		if errors.As(err, &pe) && pe.Code == 500 && len(pe.Errors) == 0 {
			text = pe.Msg
		}
		msg := strings.ReplaceAll(strings.TrimRight(text, "\n"), "\n", " ")
		t.log = append(t.log, "TASK ERROR: "+msg)
		t.exitstatus = msg
	case t.warnings > 0:
		t.exitstatus = fmt.Sprintf("WARNINGS: %d", t.warnings)
		t.log = append(t.log, "TASK "+t.exitstatus)
	default:
		t.exitstatus = "OK"
		t.log = append(t.log, "TASK OK")
	}
}

func (t *task) status() map[string]any {
	m := map[string]any{
		"upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
		"starttime": t.start.Unix(), "type": t.typ, "id": t.id, "user": t.user,
		"status": "running",
	}
	if t.tokenID != "" {
		m["tokenid"] = t.tokenID
	}
	if !t.running {
		m["status"] = "stopped"
		m["exitstatus"] = t.exitstatus
	}
	return m
}

type taskLog struct {
	lines []map[string]any
	total int
}

func (s *Sim) taskByUPID(req *request) (*task, error) {
	t, ok := s.tasks[req.vars["upid"]]
	if !ok || t.node != req.vars["node"] {
		if !upidRE.MatchString(req.vars["upid"]) {
			return nil, paramErr(map[string]string{"upid": "unable to parse worker upid"})
		}
		return nil, paramErr(map[string]string{"upid": "no such task"})
	}
	return t, nil
}

func (s *Sim) getTaskStatus(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.taskByUPID(req)
	if err != nil {
		return nil, err
	}
	return t.status(), nil
}

func (s *Sim) getTaskLog(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.taskByUPID(req)
	if err != nil {
		return nil, err
	}
	start, limit := req.intv("start"), 50
	if req.has("limit") {
		limit = req.intv("limit")
	}
	lines := []map[string]any{}
	for i := start; i < len(t.log) && len(lines) < limit; i++ {
		lines = append(lines, map[string]any{"n": i + 1, "t": t.log[i]})
	}
	if len(t.log) == 0 {
		lines = append(lines, map[string]any{"n": 1, "t": "no content"})
	}
	return taskLog{lines: lines, total: len(t.log)}, nil
}

func (s *Sim) stopTask(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.taskByUPID(req)
	if err != nil {
		return nil, err
	}
	if t.running {
		select {
		case <-t.abort:
		default:
			close(t.abort)
		}
	}
	return nil, nil
}

func (s *Sim) listTasks(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	vmid := req.str("vmid")
	typ := req.str("typefilter")
	source := req.str("source")
	limit := 50
	if req.has("limit") {
		limit = req.intv("limit")
	}
	for i := len(s.taskList) - 1; i >= 0 && len(out) < limit; i-- {
		t := s.taskList[i]
		if t.node != req.vars["node"] || (vmid != "" && t.id != vmid) || (typ != "" && t.typ != typ) {
			continue
		}
		if (source == "active" && !t.running) || ((source == "" || source == "archive") && t.running) {
			continue
		}
		m := map[string]any{"upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
			"starttime": t.start.Unix(), "type": t.typ, "id": t.id, "user": t.owner()}
		if t.running {
			m["status"] = "RUNNING"
		} else {
			m["status"] = t.exitstatus
			m["endtime"] = t.end.Unix()
		}
		out = append(out, m)
	}
	return out, nil
}

func (t *task) owner() string {
	if t.tokenID != "" {
		return t.user + "!" + t.tokenID
	}
	return t.user
}
