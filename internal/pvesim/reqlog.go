package pvesim

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The request log (Options.RequestLog, `agentd sim --log-requests FILE`): one
// JSON object per line and request, written when the answer is complete (so
// in completion order; "time" is the request's start), so a client author can
// see what was sent and what PVE (the simulator) answered.
//
//	{"time":"…","method":"POST","path":"/api2/json/nodes/pve/qemu/100/config",
//	 "user":"agentd@pve!agentd","params":{"cores":"2"},"status":"200 OK","duration_ms":1.2}
//
// Secrets never reach the log: the Authorization header and ticket cookie are
// not logged at all (only the authenticated user or token id), and parameters
// whose name says password, secret, token or key material are replaced by
// "<redacted>", as is the content of agent/file-write (it carries bootstrap
// credentials in agentd's case). A request whose connection was dropped
// without an answer (a lose-reply or hang fault, or the client gave up) is
// logged with "status":"no reply".

// RequestLogEntry is one line of the request log.
type RequestLogEntry struct {
	Time       string         `json:"time"`
	Method     string         `json:"method"`
	Path       string         `json:"path"`
	User       string         `json:"user,omitempty"`
	Params     map[string]any `json:"params,omitempty"`
	Status     string         `json:"status"`
	DurationMS float64        `json:"duration_ms"`
}

// redactedParam matches parameter names that hold secrets (password,
// cipassword, new-password, secrets, tokens, private keys).
var redactedParam = regexp.MustCompile(`(?i)pass(word)?|secret|token|private|^key$`)

const redacted = "<redacted>"

type reqLogger struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *reqLogger) write(e RequestLogEntry) {
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.w.Write(b) // one write per line: lines of concurrent requests never interleave
}

// logWriter wraps the ResponseWriter to learn the status line (also of the
// hijacked error answers, see writeError) and the parameters the API parsed.
type logWriter struct {
	http.ResponseWriter
	code   int
	reason string
	params map[string]any
	user   string
}

func (lw *logWriter) WriteHeader(code int) {
	if lw.code == 0 {
		lw.code, lw.reason = code, http.StatusText(code)
	}
	lw.ResponseWriter.WriteHeader(code)
}

func (lw *logWriter) Write(b []byte) (int, error) {
	if lw.code == 0 {
		lw.code, lw.reason = http.StatusOK, http.StatusText(http.StatusOK)
	}
	return lw.ResponseWriter.Write(b)
}

func (lw *logWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := lw.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, http.ErrNotSupported
	}
	return hj.Hijack()
}

func (lw *logWriter) setStatus(code int, reason string) { lw.code, lw.reason = code, reason }

func (lw *logWriter) setRequest(req *request) {
	lw.params, lw.user = req.params, req.owner()
}

// statusSetter is implemented by logWriter; writeError reports the status
// line it writes on the hijacked connection through it.
type statusSetter interface {
	setStatus(code int, reason string)
	setRequest(req *request)
}

func (s *Sim) serveLogged(w http.ResponseWriter, r *http.Request, serve func(http.ResponseWriter, *http.Request)) {
	start := time.Now()
	lw := &logWriter{ResponseWriter: w}
	defer func() {
		status := "no reply"
		if lw.code != 0 {
			status = strings.TrimSpace(strconv.Itoa(lw.code) + " " + lw.reason)
		}
		s.reqLog.write(RequestLogEntry{
			Time: start.UTC().Format(time.RFC3339Nano), Method: r.Method, Path: r.URL.Path,
			User: lw.user, Params: redactParams(r.URL.Path, lw.params), Status: status,
			DurationMS: float64(time.Since(start).Microseconds()) / 1000,
		})
	}()
	serve(lw, r)
}

func redactParams(path string, params map[string]any) map[string]any {
	if len(params) == 0 {
		return nil
	}
	out := make(map[string]any, len(params))
	for k, v := range params {
		switch {
		case redactedParam.MatchString(k):
			out[k] = redacted
		case k == "content" && strings.HasSuffix(path, "/agent/file-write"):
			out[k] = redacted
		default:
			out[k] = v
		}
	}
	return out
}

// OpenRequestLog opens path for appending request log lines (mode 0600: the
// parameters are a client's data even with secrets redacted).
func OpenRequestLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("request log: %w", err)
	}
	return f, nil
}
