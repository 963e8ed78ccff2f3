package soak

import (
	"fmt"
	"sort"
	"strings"
	"sync"
)

// The content model behind I4: for each workspace (by id) and each file the
// harness wrote, the set of contents the file may hold now. An acknowledged
// write pins a file to one value; an operation whose outcome is unknown (an
// error, a lost answer, a kill) widens the set to "before or after". A file
// the model has no set for is unconstrained.

// absent stands for "the file does not exist" in a set of allowed contents.
const absent = "\x00absent"

type valueSet map[string]bool

func (v valueSet) String() string {
	var xs []string
	for x := range v {
		if x == absent {
			x = "(absent)"
		}
		xs = append(xs, x)
	}
	sort.Strings(xs)
	return "{" + strings.Join(xs, ", ") + "}"
}

// content is what a volume (or a snapshot of it) may contain. With birth set
// the model has followed the volume since it was created, so a file without a
// set must be absent.
type content struct {
	files map[string]valueSet
	birth bool
}

func newContent(birth bool) content { return content{files: map[string]valueSet{}, birth: birth} }

// allowed is nil when anything goes.
func (c content) allowed(path string) valueSet {
	if v, ok := c.files[path]; ok {
		return v
	}
	if c.birth {
		return valueSet{absent: true}
	}
	return nil
}

func (c content) clone() content {
	out := newContent(c.birth)
	for p, v := range c.files {
		nv := valueSet{}
		for x := range v {
			nv[x] = true
		}
		out.files[p] = nv
	}
	return out
}

// union is "either a or b": the state after an operation that may or may not have happened.
func union(a, b content) content {
	out := newContent(a.birth && b.birth)
	for _, p := range pathsOf(a, b) {
		va, vb := a.allowed(p), b.allowed(p)
		if va == nil || vb == nil {
			continue
		}
		nv := valueSet{}
		for x := range va {
			nv[x] = true
		}
		for x := range vb {
			nv[x] = true
		}
		out.files[p] = nv
	}
	return out
}

func pathsOf(cs ...content) []string {
	seen := map[string]bool{}
	for _, c := range cs {
		for p := range c.files {
			seen[p] = true
		}
		if c.birth {
			for _, p := range fileNames {
				seen[p] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

type wsModel struct {
	id, name     string
	now          content
	snaps        map[string]content
	deleted      bool // an acknowledged delete: nothing to check
	maybeDeleted bool // a delete whose outcome is unknown
	writes       int  // acknowledged writes
}

// Model tracks every workspace the harness knows, plus per-name locks that
// order writes against the operations that copy or replace content.
type Model struct {
	mu    sync.Mutex
	byID  map[string]*wsModel
	locks map[string]*sync.Mutex
}

// NewModel returns an empty model.
func NewModel() *Model { return &Model{byID: map[string]*wsModel{}, locks: map[string]*sync.Mutex{}} }

// Lock takes the content locks of the named workspaces in a fixed order.
func (m *Model) Lock(names ...string) func() {
	names = append([]string(nil), names...)
	sort.Strings(names)
	var held []*sync.Mutex
	for i, n := range names {
		if n == "" || (i > 0 && names[i-1] == n) {
			continue
		}
		m.mu.Lock()
		l := m.locks[n]
		if l == nil {
			l = &sync.Mutex{}
			m.locks[n] = l
		}
		m.mu.Unlock()
		l.Lock()
		held = append(held, l)
	}
	return func() {
		for i := len(held) - 1; i >= 0; i-- {
			held[i].Unlock()
		}
	}
}

func (m *Model) get(id, name string) *wsModel {
	w := m.byID[id]
	if w == nil {
		w = &wsModel{id: id, name: name, now: newContent(false), snaps: map[string]content{}}
		m.byID[id] = w
	}
	return w
}

// Created records a workspace this harness saw being born empty.
func (m *Model) Created(id, name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byID[id] = &wsModel{id: id, name: name, now: newContent(true), snaps: map[string]content{}}
}

// Wrote records an acknowledged write.
func (m *Model) Wrote(id, name, path, data string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.get(id, name)
	w.now.files[path] = valueSet{data: true}
	w.writes++
}

// Snapshotted records a snapshot create: done (acknowledged), refused (a 4xx:
// nothing happened) or unknown.
func (m *Model) Snapshotted(id, name, snap string, res Result) {
	if res == Refused {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.get(id, name)
	old, had := w.snaps[snap]
	switch {
	case res == Done || !had:
		w.snaps[snap] = w.now.clone()
	default:
		w.snaps[snap] = union(old, w.now)
	}
}

// Restored records a rollback to snap.
func (m *Model) Restored(id, name, snap string, res Result) {
	if res == Refused {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.get(id, name)
	to, ok := w.snaps[snap]
	if !ok {
		to = newContent(false) // a snapshot the model never saw: anything goes
	}
	if res == Done {
		w.now = to.clone()
	} else {
		w.now = union(w.now, to)
	}
}

// Forked records an acknowledged fork of src (at snap, if set) into a new workspace.
func (m *Model) Forked(srcID, srcName, snap, newID, newName string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	src := m.get(srcID, srcName)
	c := src.now
	if snap != "" {
		var ok bool
		if c, ok = src.snaps[snap]; !ok {
			c = newContent(false)
		}
	}
	m.byID[newID] = &wsModel{id: newID, name: newName, now: c.clone(), snaps: map[string]content{}}
}

// Deleted records a workspace delete.
func (m *Model) Deleted(id, name string, res Result) {
	if res == Refused {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.get(id, name)
	if res == Done {
		w.deleted = true
	} else {
		w.maybeDeleted = true
	}
}

// Result is what an operation's answer tells about its effect.
type Result int

// Results.
const (
	Done    Result = iota // acknowledged (2xx)
	Refused               // 4xx: rejected before it did anything
	Unknown               // 5xx, no answer, timeout, agentd killed
)

// WorkspaceFiles is what the checker needs of one live workspace.
type WorkspaceFiles struct {
	ID, Name string
	Files    map[string]string // nil when the volume could not be read
	Err      string
}

// Check compares the model with the live workspaces (by id) and returns the
// I4 violations.
func (m *Model) Check(live map[string]WorkspaceFiles) []Violation {
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := make([]string, 0, len(m.byID))
	for id := range m.byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var out []Violation
	for _, id := range ids {
		w := m.byID[id]
		if w.deleted {
			continue
		}
		got, ok := live[id]
		if !ok {
			if !w.maybeDeleted {
				out = append(out, Violation{Inv: "I4", Object: "workspace " + w.name + " (" + id + ")",
					Detail: fmt.Sprintf("gone (with %d acknowledged writes), and no delete of it was ever attempted", w.writes)})
			}
			continue
		}
		if got.Files == nil {
			if w.writes > 0 {
				out = append(out, Violation{Inv: "I4", Object: "workspace " + w.name + " (" + id + ")",
					Detail: "volume unreadable: " + got.Err})
			}
			continue
		}
		for _, p := range pathsOf(w.now) {
			allow := w.now.allowed(p)
			if allow == nil {
				continue
			}
			have, exists := got.Files[p]
			if !exists {
				have = absent
			}
			if !allow[have] {
				shown := have
				if have == absent {
					shown = "(absent)"
				}
				out = append(out, Violation{Inv: "I4", Object: "workspace " + w.name + " (" + id + ") " + p,
					Detail: fmt.Sprintf("holds %s, acknowledged history allows %s", shown, allow)})
			}
		}
	}
	return out
}
