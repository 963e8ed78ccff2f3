package pvesim

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// agent/exec and agent/exec-status follow qemu-server (PVE/API2/Qemu/Agent.pm,
// QemuServer/Agent.pm qemu_exec/qemu_exec_status) over qemu-guest-agent's
// guest-exec/guest-exec-status (qga/commands.c):
//
//   - exec takes "command" as an array (program + arguments; a single string
//     is one program without arguments) and optional "input-data" (at most
//     64 KiB, PVE base64-encodes it for the agent: the process's stdin). It
//     answers {"pid": N} at once; a program that cannot be spawned fails the
//     request ("Agent error: Failed to execute child process …").
//   - exec-status answers {"exited": 0} while the process runs. Once it has
//     exited it answers exited 1 with exitcode (or signal), out-data and
//     err-data (decoded by PVE; absent when empty) and out-truncated /
//     err-truncated when the output passed the agent's capture limit (16 MiB
//     each). The agent sends output only after the exit: nothing streams.
//   - qga forgets a process once it reported it exited, so asking again is
//     "Invalid parameter 'pid'". A VM stop kills every process and the agent
//     restarts with an empty table.
//
// The simulated guest never runs host programs. It has a small built-in
// command set (devGuestCommands), enough to script and test the paths agentd
// uses; anything else fails as a missing program does in a real guest. Files
// written with agent/file-write are visible to cat and ls.

// GuestCommands lists the programs the simulated guest has, for docs and
// error messages.
func GuestCommands() []string {
	out := make([]string, 0, len(devGuestCommands))
	for k := range devGuestCommands {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// DefaultExecOutputLimit is qga's capture limit per stream (GUEST_EXEC_MAX_OUTPUT).
const DefaultExecOutputLimit = 16 << 20

type guestProc struct {
	pid       int
	boot      time.Time // v.started when it was spawned: a restart kills it
	doneAt    time.Time
	exitcode  int
	out, errs []byte
}

var guestExecs = struct {
	sync.Mutex
	procs map[*vm]map[int]*guestProc
	next  map[*vm]int
}{procs: map[*vm]map[int]*guestProc{}, next: map[*vm]int{}}

func init() {
	const q = "/nodes/{node}/qemu/{vmid}"
	handle("POST", q+"/agent/exec", (*Sim).agentExec)
	handle("GET", q+"/agent/exec-status", (*Sim).agentExecStatus)
}

func (s *Sim) agentExec(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.agentCheck(req)
	if err != nil {
		return nil, err
	}
	var argv []string
	switch c := req.params["command"].(type) {
	case []any:
		for _, a := range c {
			str, ok := a.(string)
			if !ok {
				return nil, paramErr(map[string]string{"command": "type check ('string') failed - got HASH"})
			}
			argv = append(argv, str)
		}
	default:
		if str := req.str("command"); str != "" {
			argv = []string{str}
		}
	}
	if len(argv) == 0 {
		return nil, errf("Agent error: Invalid parameter 'path'")
	}
	g := &devGuest{s: s, v: v, stdin: req.str("input-data")}
	run, ok := devGuestCommands[argv[0]]
	if !ok && strings.Contains(argv[0], "/") {
		run, ok = devGuestCommands[filepath.Base(argv[0])]
	}
	if !ok {
		return nil, errf("Agent error: Failed to execute child process “%s” (No such file or directory)", argv[0])
	}
	p := &guestProc{boot: v.started, doneAt: s.now()}
	p.exitcode = run(g, argv[1:])
	p.doneAt = p.doneAt.Add(g.sleep)
	p.out, p.errs = g.out.Bytes(), g.errb.Bytes()
	guestExecs.Lock()
	defer guestExecs.Unlock()
	if guestExecs.procs[v] == nil {
		guestExecs.procs[v] = map[int]*guestProc{}
		guestExecs.next[v] = 1000 + v.id%1000
	}
	guestExecs.next[v] += 3
	p.pid = guestExecs.next[v]
	guestExecs.procs[v][p.pid] = p
	return map[string]any{"pid": p.pid}, nil
}

func (s *Sim) agentExecStatus(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.agentCheck(req)
	if err != nil {
		return nil, err
	}
	pid := req.intv("pid")
	guestExecs.Lock()
	defer guestExecs.Unlock()
	p := guestExecs.procs[v][pid]
	if p == nil || !p.boot.Equal(v.started) {
		return nil, errf("Agent error: Invalid parameter 'pid'")
	}
	if s.now().Before(p.doneAt) {
		return map[string]any{"exited": 0}, nil
	}
	delete(guestExecs.procs[v], pid)
	limit := s.opts.ExecOutputLimit
	if limit <= 0 {
		limit = DefaultExecOutputLimit
	}
	out := map[string]any{"exited": 1, "exitcode": p.exitcode}
	for _, st := range []struct {
		key  string
		data []byte
	}{{"out", p.out}, {"err", p.errs}} {
		data := st.data
		if len(data) > limit {
			data = data[:limit]
			out[st.key+"-truncated"] = 1
		}
		if len(data) > 0 {
			out[st.key+"-data"] = string(data)
		}
	}
	return out, nil
}

// devGuest is one process of the simulated guest.
type devGuest struct {
	s     *Sim
	v     *vm
	stdin string
	out   bytes.Buffer
	errb  bytes.Buffer
	sleep time.Duration
}

// file reads a guest file; agentExec holds s.mu, which guards vm.guestFiles.
func (g *devGuest) file(path string) ([]byte, bool) {
	b, ok := g.v.guestFiles[filepath.Clean(path)]
	return b, ok
}

// devGuestCommands are the simulated guest's programs: each writes to the
// process's buffers and returns its exit code.
var devGuestCommands map[string]func(g *devGuest, args []string) int

func init() {
	devGuestCommands = map[string]func(g *devGuest, args []string) int{
		"true":  func(*devGuest, []string) int { return 0 },
		"false": func(*devGuest, []string) int { return 1 },
		"echo": func(g *devGuest, args []string) int {
			g.out.WriteString(strings.Join(args, " ") + "\n")
			return 0
		},
		"cat": func(g *devGuest, args []string) int {
			if len(args) == 0 {
				g.out.WriteString(g.stdin)
				return 0
			}
			code := 0
			for _, a := range args {
				if a == "-" {
					g.out.WriteString(g.stdin)
					continue
				}
				b, ok := g.file(a)
				if !ok {
					fmt.Fprintf(&g.errb, "cat: %s: No such file or directory\n", a)
					code = 1
					continue
				}
				g.out.Write(b)
			}
			return code
		},
		"ls": func(g *devGuest, args []string) int {
			dir := "/"
			if len(args) > 0 {
				dir = filepath.Clean(args[0])
			}
			var names []string
			for p := range g.v.guestFiles {
				if filepath.Dir(p) == dir {
					names = append(names, filepath.Base(p))
				}
			}
			if len(names) == 0 && !guestDirs[dir] {
				fmt.Fprintf(&g.errb, "ls: cannot access '%s': No such file or directory\n", dir)
				return 2
			}
			sort.Strings(names)
			for _, n := range names {
				g.out.WriteString(n + "\n")
			}
			return 0
		},
		"hostname": func(g *devGuest, _ []string) int {
			if b, ok := g.file("/etc/hostname"); ok {
				g.out.Write(b)
				return 0
			}
			g.out.WriteString(g.v.name() + "\n")
			return 0
		},
		// hostnamectl set-hostname NAME, as systemd's: the transient and
		// static name at once (/etc/hostname), which hostname then prints.
		"hostnamectl": func(g *devGuest, args []string) int {
			if len(args) != 2 || args[0] != "set-hostname" || args[1] == "" {
				g.errb.WriteString("hostnamectl: the simulated guest supports only `hostnamectl set-hostname NAME`\n")
				return 1
			}
			if g.v.guestFiles == nil {
				g.v.guestFiles = map[string][]byte{}
			}
			g.v.guestFiles["/etc/hostname"] = []byte(args[1] + "\n")
			return 0
		},
		"uname": func(g *devGuest, args []string) int {
			if len(args) > 0 && args[0] == "-a" {
				g.out.WriteString("Linux " + g.v.name() + " 6.8.0-85-generic #85-Ubuntu SMP PREEMPT_DYNAMIC x86_64 GNU/Linux\n")
			} else {
				g.out.WriteString("Linux\n")
			}
			return 0
		},
		"id": func(g *devGuest, _ []string) int {
			g.out.WriteString("uid=0(root) gid=0(root) groups=0(root)\n")
			return 0
		},
		"pwd": func(g *devGuest, _ []string) int { g.out.WriteString("/\n"); return 0 },
		"sleep": func(g *devGuest, args []string) int {
			if len(args) != 1 {
				g.errb.WriteString("sleep: missing operand\n")
				return 1
			}
			f, err := strconv.ParseFloat(args[0], 64)
			if err != nil || f < 0 {
				fmt.Fprintf(&g.errb, "sleep: invalid time interval '%s'\n", args[0])
				return 1
			}
			g.sleep += time.Duration(f * float64(time.Second))
			return 0
		},
		"seq": func(g *devGuest, args []string) int {
			n, err := strconv.Atoi(strings.Join(args, ""))
			if err != nil || len(args) != 1 {
				g.errb.WriteString("seq: usage: seq LAST\n")
				return 1
			}
			for i := 1; i <= n; i++ {
				g.out.WriteString(strconv.Itoa(i) + "\n")
			}
			return 0
		},
		"sh": shell,
	}
	devGuestCommands["bash"] = shell
}

// shell is `sh -c SCRIPT` for scripts of built-in commands separated by ';',
// each optionally redirected to stderr (>&2), plus `exit N`. Words split on
// blanks with '…' and "…" quoting; no expansion, pipes or file redirection.
func shell(g *devGuest, args []string) int {
	if len(args) != 2 || args[0] != "-c" {
		g.errb.WriteString("sh: the simulated guest runs only `sh -c SCRIPT`\n")
		return 2
	}
	code := 0
	for _, stmt := range strings.Split(args[1], ";") {
		words, err := splitWords(stmt)
		if err != nil {
			fmt.Fprintf(&g.errb, "sh: %v\n", err)
			return 2
		}
		toErr := false
		if n := len(words); n > 0 && (words[n-1] == ">&2" || words[n-1] == "1>&2") {
			words, toErr = words[:n-1], true
		}
		if len(words) == 0 {
			continue
		}
		if words[0] == "exit" {
			if len(words) > 1 {
				code, _ = strconv.Atoi(words[1])
			}
			return code & 0xff
		}
		run, ok := devGuestCommands[words[0]]
		if !ok {
			fmt.Fprintf(&g.errb, "sh: 1: %s: not found\n", words[0])
			code = 127
			continue
		}
		sub := &devGuest{s: g.s, v: g.v, stdin: g.stdin}
		code = run(sub, words[1:])
		g.sleep += sub.sleep
		if toErr {
			g.errb.WriteString(sub.out.String())
		} else {
			g.out.WriteString(sub.out.String())
		}
		g.errb.WriteString(sub.errb.String())
	}
	return code
}

func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	in, quote := false, rune(0)
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quoted string")
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}
