package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// secretsAPI manages the age-encrypted bundles for global principals (host
// routes: the Unix socket, the agent's token, global tokens; never a team
// token). The
// answers name what a bundle holds, never a value; request bodies are not
// logged, and no event is written with a value.
type secretsAPI struct {
	mu  sync.Mutex // one read-modify-write of a bundle at a time
	st  secrets.Store
	db  *store.Store
	log *slog.Logger
}

// SetSecrets enables the secrets endpoints on this store.
func (s *Server) SetSecrets(st secrets.Store) {
	x := &secretsAPI{st: st, db: s.mgr.Store(), log: s.log}
	add := func(pattern string, h handler) {
		p := hostWrite
		if strings.HasPrefix(pattern, "GET ") {
			p = hostRead
		}
		s.handle(pattern, p, s.wrap(h))
	}
	add("GET /v1/secrets", x.list)
	add("GET /v1/secrets/{bundle}", x.get)
	add("PUT /v1/secrets/{bundle}/env/{name}", x.setEnv)
	add("DELETE /v1/secrets/{bundle}/env/{name}", x.unsetEnv)
	add("PUT /v1/secrets/{bundle}/ssh-keys/{name}", x.addKey)
	add("DELETE /v1/secrets/{bundle}/ssh-keys/{name}", x.removeKey)
	add("PUT /v1/secrets/{bundle}/git", x.setGit)
}

// secretsKinds is the one place where the secrets package's kinds of
// failure become API errors.
var secretsKinds = []struct {
	is     error
	status int
	code   api.Code
	suffix string
}{
	{secrets.ErrNoKey, http.StatusConflict, api.CodeNoSecretsKey, " (on the agent's host)"},
	{secrets.ErrInvalidName, http.StatusBadRequest, api.CodeInvalidField, ""},
	{secrets.ErrNotFound, http.StatusNotFound, api.CodeSecretNotFound, ""},
	{secrets.ErrReadOnly, http.StatusConflict, api.CodeSecretsReadOnly, ""},
	{secrets.ErrDecrypt, http.StatusUnprocessableEntity, api.CodeSecretsUnreadable, " (on the agent's host)"},
}

// secretsErr maps an error of the secrets package by its kind; the messages
// carry names and paths, never a value.
func secretsErr(err error) error {
	for _, k := range secretsKinds {
		if errors.Is(err, k.is) {
			return api.Errorf(k.status, k.code, "%v%s", err, k.suffix)
		}
	}
	return err
}

func (x *secretsAPI) list(_ http.ResponseWriter, _ *http.Request) (int, any, error) {
	names, err := x.st.Names()
	if err != nil {
		return 0, nil, err
	}
	out := api.SecretsBundleList{Bundles: []api.SecretsBundle{}}
	for _, n := range names {
		b, err := x.st.Load(n)
		if err != nil {
			return 0, nil, secretsErr(err)
		}
		out.Bundles = append(out.Bundles, b.Summary(n))
	}
	return 200, out, nil
}

func (x *secretsAPI) get(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	name := r.PathValue("bundle")
	b, err := x.st.Load(name)
	if err != nil {
		return 0, nil, secretsErr(err)
	}
	return 200, b.Summary(name), nil
}

// edit loads, changes and saves one bundle under the lock and answers with
// its summary. The change is recorded as an event naming the bundle and the
// key changed (what, never a value) once it is saved: an audit of who
// changed which secret, in `agentd events`.
func (x *secretsAPI) edit(r *http.Request, kind, what string, fn func(b *secrets.Bundle) error) (int, any, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	name := r.PathValue("bundle")
	b, err := x.st.Load(name)
	if err != nil {
		return 0, nil, secretsErr(err)
	}
	if err := fn(b); err != nil {
		return 0, nil, secretsErr(err)
	}
	if err := x.st.Save(name, b); err != nil {
		return 0, nil, secretsErr(err)
	}
	msg := fmt.Sprintf("bundle %s: %s", name, what)
	if err := x.db.AddEvent(r.Context(), nil, store.Event{Kind: kind, Message: msg}); err != nil {
		// The bundle is saved: answering an error would report a change
		// that did not happen as failed. The log keeps the audit line.
		x.log.Error("secrets change saved but its event was not recorded", "kind", kind, "change", msg, "err", err)
	}
	return 200, b.Summary(name), nil
}

func checkValue(field, v string) error {
	if v == "" {
		return api.FieldError(field, "is required")
	}
	if len(v) > api.SecretValueMax {
		return api.FieldError(field, "longer than %d bytes", api.SecretValueMax)
	}
	return nil
}

func (x *secretsAPI) setEnv(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.SetSecretEnvRequest
	if err := decodeMax(w, r, &req, false, 8*api.SecretValueMax); err != nil {
		return 0, nil, err
	}
	if err := checkValue("value", req.Value); err != nil {
		return 0, nil, err
	}
	n := r.PathValue("name")
	return x.edit(r, "secrets.env_set", "set env "+n, func(b *secrets.Bundle) error {
		b.SetEnv(n, req.Value)
		return nil
	})
}

func (x *secretsAPI) unsetEnv(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var empty struct{}
	if err := decode(w, r, &empty, true); err != nil {
		return 0, nil, err
	}
	n := r.PathValue("name")
	return x.edit(r, "secrets.env_unset", "removed env "+n, func(b *secrets.Bundle) error {
		return b.UnsetEnv(r.PathValue("bundle"), n)
	})
}

func (x *secretsAPI) addKey(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.AddSSHKeyRequest
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	req.PublicKey = strings.TrimSpace(req.PublicKey)
	if err := checkValue("public_key", req.PublicKey); err != nil {
		return 0, nil, err
	}
	n := r.PathValue("name")
	return x.edit(r, "secrets.ssh_key_added", "added ssh key "+n, func(b *secrets.Bundle) error {
		b.AddSSHKey(n, req.PublicKey)
		return nil
	})
}

func (x *secretsAPI) removeKey(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var empty struct{}
	if err := decode(w, r, &empty, true); err != nil {
		return 0, nil, err
	}
	n := r.PathValue("name")
	return x.edit(r, "secrets.ssh_key_removed", "removed ssh key "+n, func(b *secrets.Bundle) error {
		return b.RemoveSSHKey(r.PathValue("bundle"), n)
	})
}

func (x *secretsAPI) setGit(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.SetGitRequest
	if err := decodeMax(w, r, &req, false, 8*api.SecretValueMax); err != nil {
		return 0, nil, err
	}
	if req.Username == "" {
		return 0, nil, api.FieldError("username", "is required")
	}
	if err := checkValue("token", req.Token); err != nil {
		return 0, nil, err
	}
	if req.Host == "" {
		req.Host = "github.com"
	}
	return x.edit(r, "secrets.git_set", "set git credentials for "+req.Username+"@"+req.Host, func(b *secrets.Bundle) error {
		b.Git = &secrets.Git{Username: req.Username, Host: req.Host, Token: req.Token}
		return nil
	})
}
