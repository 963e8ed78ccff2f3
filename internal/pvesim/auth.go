package pvesim

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// authenticate implements PVEAPIToken headers and PVEAuthCookie tickets (with the
// CSRF token required on writes), as pve-http-server and pve-access-control do.
func (s *Sim) authenticate(r *http.Request, req *request) *Error {
	if c, err := r.Cookie("PVEAuthCookie"); err == nil && c.Value != "" {
		ticket, _ := url.QueryUnescape(c.Value)
		s.mu.Lock()
		user, ok := s.tickets[ticket]
		csrf := s.csrf[ticket]
		s.mu.Unlock()
		if !ok {
			return &Error{Code: 401, Msg: "Authentication failed!"}
		}
		if r.Method != http.MethodGet && r.Header.Get("CSRFPreventionToken") != csrf {
			return &Error{Code: 401, Msg: "Permission denied - invalid csrf token"}
		}
		req.user = user
		return nil
	}
	h := r.Header.Get("Authorization")
	i := strings.Index(h, "PVEAPIToken")
	if i < 0 {
		return &Error{Code: 401, Msg: "No ticket"}
	}
	val := strings.TrimLeft(h[i+len("PVEAPIToken"):], "= ")
	if j := strings.Index(val, ";"); j >= 0 {
		val = val[:j]
	}
	val, _ = url.QueryUnescape(val)
	eq := strings.LastIndex(val, "=")
	if eq < 0 {
		return &Error{Code: 401, Msg: "Authentication failed!"}
	}
	id, secret := val[:eq], val[eq+1:]
	if id != s.opts.TokenID || secret != s.opts.Secret {
		return &Error{Code: 401, Msg: "Authentication failed!"}
	}
	user, name, _ := strings.Cut(id, "!")
	req.user, req.tokenID = user, name
	return nil
}

func (s *Sim) login(req *request) (any, error) {
	user, pass := req.str("username"), req.str("password")
	if realm := req.str("realm"); realm != "" && !strings.Contains(user, "@") {
		user += "@" + realm
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, ok := s.tickets[pass]; ok && prev == user {
		pass = s.opts.Password // renewal with the current ticket as password
	}
	if user != s.opts.User || pass != s.opts.Password {
		if s.opts.AuthFailDelay > 0 {
			s.mu.Unlock()
			time.Sleep(s.opts.AuthFailDelay)
			s.mu.Lock()
		}
		return nil, &Error{Code: 401, Msg: "authentication failure"}
	}
	ticket := fmt.Sprintf("PVE:%s:%08X::%s", user, s.now().Unix(), s.uuid())
	csrf := fmt.Sprintf("%08X:%s", s.now().Unix(), s.uuid())
	s.tickets[ticket] = user
	s.csrf[ticket] = csrf
	return map[string]any{"username": user, "ticket": ticket, "CSRFPreventionToken": csrf,
		"cap": map[string]any{"vms": map[string]int{"VM.Audit": 1}}}, nil
}
