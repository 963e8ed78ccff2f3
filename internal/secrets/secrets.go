// Package secrets keeps named secrets bundles encrypted with age: one X25519
// identity in a 0600 key file, one <name>.age file per bundle. Bundles are
// decrypted only in memory, when a sandbox fetches its bootstrap.
package secrets

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"filippo.io/age"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// Bundle is what a bundle holds.
type Bundle struct {
	Env     map[string]string `json:"env,omitempty"`
	SSHKeys map[string]string `json:"ssh_keys,omitempty"` // name → public key (authorized in the guest)
	Git     *Git              `json:"git,omitempty"`
	// Format is where it was read from (FormatAge, FormatSops); not stored.
	Format string `json:"-"`
}

// Git holds git credentials.
type Git struct {
	Username string `json:"username,omitempty"`
	Token    string `json:"token,omitempty"`
	Host     string `json:"host,omitempty"` // default github.com
}

// Store is a directory of bundles and the key that opens them.
type Store struct {
	Dir     string
	KeyFile string
}

var (
	bundleRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	envRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Init creates the identity (refusing to overwrite one: that would orphan
// every bundle) and returns its public recipient.
func (s Store) Init() (string, error) {
	if _, err := os.Stat(s.KeyFile); err == nil {
		return "", fmt.Errorf("%s already exists: keeping it (bundles are encrypted to it)", s.KeyFile)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(s.KeyFile), 0o700); err != nil {
		return "", err
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return "", err
	}
	body := fmt.Sprintf("# agentd secrets key; public: %s\n%s\n", id.Recipient(), id)
	f, err := os.OpenFile(s.KeyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.WriteString(body); err != nil {
		return "", err
	}
	return id.Recipient().String(), f.Sync()
}

func (s Store) identity() (*age.X25519Identity, error) {
	b, err := os.ReadFile(s.KeyFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s is missing (run agentd secrets init)", ErrNoKey, s.KeyFile)
	}
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(s.KeyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by others (mode %o): chmod 600 it", s.KeyFile, fi.Mode().Perm())
	}
	ids, err := age.ParseIdentities(bytes.NewReader(b))
	if err != nil || len(ids) != 1 {
		return nil, fmt.Errorf("%s: not one age identity: %v", s.KeyFile, err)
	}
	id, ok := ids[0].(*age.X25519Identity)
	if !ok {
		return nil, fmt.Errorf("%s: not an X25519 identity", s.KeyFile)
	}
	return id, nil
}

func checkName(name string) error {
	if !bundleRE.MatchString(name) {
		return errorf(ErrInvalidName, "bundle name %q: lowercase letters, digits, - and _", name)
	}
	return nil
}

// bundleSuffixes are the file names a bundle may have: <name>.age (what
// agentd writes) or a sops document's usual names. The name only finds the
// file; its content decides the format (sniff).
var bundleSuffixes = []string{".age", ".sops.yaml", ".sops.yml", ".sops.json", ".yaml", ".yml", ".json"}

// IsBundleFile says whether a file name in the secrets directory is a bundle
// of either format (what backups must carry).
func IsBundleFile(name string) bool {
	for _, suf := range bundleSuffixes {
		if n, ok := strings.CutSuffix(name, suf); ok {
			return bundleRE.MatchString(n)
		}
	}
	return false
}

// file finds the one file of a bundle; "" when there is none.
func (s Store) file(name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	var found []string
	for _, suf := range bundleSuffixes {
		p := filepath.Join(s.Dir, name+suf)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 0:
		return "", nil
	case 1:
		return found[0], nil
	}
	return "", errorf(ErrDecrypt, "bundle %s has several files (%s): keep one", name, strings.Join(found, ", "))
}

// Load decrypts a bundle (age, or sops with the same key); a bundle that
// does not exist is empty.
func (s Store) Load(name string) (*Bundle, error) {
	p, err := s.file(name)
	if err != nil {
		return nil, err
	}
	if p == "" {
		return &Bundle{Format: FormatAge}, nil
	}
	enc, err := readBundle(p)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", name, err)
	}
	format, store := sniff(enc)
	switch format {
	case FormatSops:
		return s.loadSops(name, p, enc, store)
	case "":
		return nil, errorf(ErrDecrypt, "bundle %s: %s is neither age-encrypted nor a sops document (no top-level sops key); encrypt it with sops or write it with agentd secrets", name, p)
	}
	id, err := s.identity()
	if err != nil {
		return nil, err
	}
	r, err := age.Decrypt(bytes.NewReader(enc), id)
	if err != nil {
		return nil, errorf(ErrDecrypt, "bundle %s: %s is not encrypted to this agent's key %s: %v", name, p, s.KeyFile, err)
	}
	b := Bundle{Format: FormatAge}
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return nil, errorf(ErrDecrypt, "bundle %s: %s: %v", name, p, err)
	}
	return &b, nil
}

// MaxBundleBytes bounds a bundle file: a bundle holds environment
// variables, an SSH key list and a git token, and every sandbox's bootstrap
// carries it; a larger file (planted, or a mistake) is refused before it is
// parsed or decrypted.
const MaxBundleBytes = 1 << 20

func readBundle(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxBundleBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxBundleBytes {
		return nil, errorf(ErrDecrypt, "%s is larger than %d bytes, the most a bundle may be; not read", p, MaxBundleBytes)
	}
	return b, nil
}

// Save encrypts a bundle to the key's recipient, atomically, mode 0600. A
// sops bundle is not written: its source of truth is the sops file the team
// edits (usually in their repository), which a rewrite here would fork.
func (s Store) Save(name string, b *Bundle) error {
	if err := b.Validate(); err != nil {
		return err
	}
	cur, err := s.file(name)
	if err != nil {
		return err
	}
	p := filepath.Join(s.Dir, name+".age")
	if cur != "" {
		enc, err := readBundle(cur)
		if err != nil {
			return fmt.Errorf("bundle %s: %w", name, err)
		}
		switch f, _ := sniff(enc); {
		case f == FormatSops:
			return errorf(ErrReadOnly, "bundle %s is a sops file (%s): agentd reads it but does not change it; edit it with sops (sops edit %s)", name, cur, cur)
		case f != FormatAge || cur != p:
			return errorf(ErrDecrypt, "bundle %s: %s is not an age bundle agentd wrote; move it away to store the bundle here", name, cur)
		}
	}
	id, err := s.identity()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, id.Recipient())
	if err != nil {
		return err
	}
	if err := json.NewEncoder(w).Encode(b); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.Dir, ".bundle-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, &buf); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}

// Recipient is the age public key bundles are encrypted to (give it to sops
// with --age).
func (s Store) Recipient() (string, error) {
	id, err := s.identity()
	if err != nil {
		return "", err
	}
	return id.Recipient().String(), nil
}

// Names lists the bundles, of either format.
func (s Store) Names() ([]string, error) {
	ents, err := os.ReadDir(s.Dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		for _, suf := range bundleSuffixes {
			if n, ok := strings.CutSuffix(e.Name(), suf); ok {
				if bundleRE.MatchString(n) && !seen[n] {
					seen[n] = true
					out = append(out, n)
				}
				break
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// Validate checks names and values.
func (b *Bundle) Validate() error {
	for k := range b.Env {
		if !envRE.MatchString(k) {
			return errorf(ErrInvalidName, "env %q: not a variable name", k)
		}
	}
	for k, v := range b.SSHKeys {
		if f := strings.Fields(v); len(f) < 2 || !strings.HasPrefix(f[0], "ssh-") && !strings.HasPrefix(f[0], "ecdsa-") {
			return errorf(ErrInvalidName, "ssh key %q: not an OpenSSH public key", k)
		}
	}
	return nil
}

// Redacted is a copy safe to print: values replaced, names kept.
func (b *Bundle) Redacted() *Bundle {
	out := &Bundle{Env: map[string]string{}, SSHKeys: b.SSHKeys}
	for k := range b.Env {
		out.Env[k] = "[REDACTED]"
	}
	if b.Git != nil {
		g := *b.Git
		if g.Token != "" {
			g.Token = "[REDACTED]"
		}
		out.Git = &g
	}
	return out
}

// Values lists every secret value (for scrubbing logs and bundles).
func (b *Bundle) Values() []string {
	var out []string
	for _, v := range b.Env {
		out = append(out, v)
	}
	if b.Git != nil && b.Git.Token != "" {
		out = append(out, b.Git.Token)
	}
	return out
}

// Summary describes the bundle by its names only (what the API returns).
func (b *Bundle) Summary(name string) api.SecretsBundle {
	out := api.SecretsBundle{Name: name, Env: []string{}, SSHKeys: []string{}, Format: b.Format, ReadOnly: b.Format == FormatSops}
	if out.Format == "" {
		out.Format = FormatAge
	}
	for k := range b.Env {
		out.Env = append(out.Env, k)
	}
	for k := range b.SSHKeys {
		out.SSHKeys = append(out.SSHKeys, k)
	}
	sort.Strings(out.Env)
	sort.Strings(out.SSHKeys)
	if b.Git != nil {
		out.Git = &api.SecretsGit{Username: b.Git.Username, Host: b.Git.Host, TokenSet: b.Git.Token != ""}
	}
	return out
}

// SetEnv sets a variable, creating the bundle's env on first use.
func (b *Bundle) SetEnv(name, value string) {
	if b.Env == nil {
		b.Env = map[string]string{}
	}
	b.Env[name] = value
}

// AddSSHKey authorizes a public key under name, replacing one of that name.
func (b *Bundle) AddSSHKey(name, publicKey string) {
	if b.SSHKeys == nil {
		b.SSHKeys = map[string]string{}
	}
	b.SSHKeys[name] = publicKey
}

// UnsetEnv removes a variable; ErrNotFound when the bundle (named bundle)
// has none.
func (b *Bundle) UnsetEnv(bundle, name string) error {
	if _, ok := b.Env[name]; !ok {
		return errorf(ErrNotFound, "bundle %s has no env %s", bundle, name)
	}
	delete(b.Env, name)
	return nil
}

// RemoveSSHKey removes a key; ErrNotFound when the bundle has none by that
// name.
func (b *Bundle) RemoveSSHKey(bundle, name string) error {
	if _, ok := b.SSHKeys[name]; !ok {
		return errorf(ErrNotFound, "bundle %s has no ssh key %s", bundle, name)
	}
	delete(b.SSHKeys, name)
	return nil
}
