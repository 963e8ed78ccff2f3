package server

import (
	"errors"
	"net/http"
	"strings"
	"sync"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets"
)

// secretsAPI manages the age-encrypted bundles for admin clients (the Unix
// socket, or TCP with the bearer token: every API client is an admin). The
// answers name what a bundle holds, never a value; request bodies are not
// logged, and no event is written with a value.
type secretsAPI struct {
	mu sync.Mutex // one read-modify-write of a bundle at a time
	st secrets.Store
}

// SetSecrets enables the secrets endpoints on this store.
func (s *Server) SetSecrets(st secrets.Store) {
	x := &secretsAPI{st: st}
	add := func(pattern string, h handler) { s.mux.HandleFunc(pattern, s.wrap(h)) }
	add("GET /v1/secrets", x.list)
	add("GET /v1/secrets/{bundle}", x.get)
	add("PUT /v1/secrets/{bundle}/env/{name}", x.setEnv)
	add("DELETE /v1/secrets/{bundle}/env/{name}", x.unsetEnv)
	add("PUT /v1/secrets/{bundle}/ssh-keys/{name}", x.addKey)
	add("DELETE /v1/secrets/{bundle}/ssh-keys/{name}", x.removeKey)
	add("PUT /v1/secrets/{bundle}/git", x.setGit)
}

// secretsErr maps store errors to API errors; their messages carry names
// and paths, never a value.
func secretsErr(err error) error {
	if errors.Is(err, secrets.ErrNoKey) {
		return api.Errorf(http.StatusConflict, api.CodeNoSecretsKey, "%v (on the agent's host)", err)
	}
	if err != nil && (strings.HasPrefix(err.Error(), "bundle name ") || strings.HasPrefix(err.Error(), "env ") || strings.HasPrefix(err.Error(), "ssh key ")) {
		return api.Errorf(http.StatusBadRequest, api.CodeInvalidField, "%v", err)
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
// its summary.
func (x *secretsAPI) edit(r *http.Request, fn func(b *secrets.Bundle) error) (int, any, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	name := r.PathValue("bundle")
	b, err := x.st.Load(name)
	if err != nil {
		return 0, nil, secretsErr(err)
	}
	if err := fn(b); err != nil {
		return 0, nil, err
	}
	if err := x.st.Save(name, b); err != nil {
		return 0, nil, secretsErr(err)
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
	return x.edit(r, func(b *secrets.Bundle) error {
		if b.Env == nil {
			b.Env = map[string]string{}
		}
		b.Env[r.PathValue("name")] = req.Value
		return nil
	})
}

func (x *secretsAPI) unsetEnv(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var empty struct{}
	if err := decode(w, r, &empty, true); err != nil {
		return 0, nil, err
	}
	return x.edit(r, func(b *secrets.Bundle) error {
		n := r.PathValue("name")
		if _, ok := b.Env[n]; !ok {
			return api.Errorf(http.StatusNotFound, api.CodeSecretNotFound, "bundle %s has no %s", r.PathValue("bundle"), n)
		}
		delete(b.Env, n)
		return nil
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
	return x.edit(r, func(b *secrets.Bundle) error {
		if b.SSHKeys == nil {
			b.SSHKeys = map[string]string{}
		}
		b.SSHKeys[r.PathValue("name")] = req.PublicKey
		return nil
	})
}

func (x *secretsAPI) removeKey(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var empty struct{}
	if err := decode(w, r, &empty, true); err != nil {
		return 0, nil, err
	}
	return x.edit(r, func(b *secrets.Bundle) error {
		n := r.PathValue("name")
		if _, ok := b.SSHKeys[n]; !ok {
			return api.Errorf(http.StatusNotFound, api.CodeSecretNotFound, "bundle %s has no ssh key %s", r.PathValue("bundle"), n)
		}
		delete(b.SSHKeys, n)
		return nil
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
	return x.edit(r, func(b *secrets.Bundle) error {
		b.Git = &secrets.Git{Username: req.Username, Host: req.Host, Token: req.Token}
		return nil
	})
}
