package secrets_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/agentlab/terraform-provider-agentlab/internal/secrets"
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets/sopstest"
)

const plainYAML = `# team secrets, kept in the team's repository
env:
  OPENAI_API_KEY: sk-sops-yaml-1111
  DB_PASSWORD: hunter2-sops
ssh_keys:
  alice: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests alice@example
git:
  username: bot
  token: ghp_sopsTokenValue42
`

const plainJSON = `{"env": {"OPENAI_API_KEY": "sk-sops-json-2222"}, "git": {"username": "bot", "token": "ghp_jsonToken"}}`

func newStore(t *testing.T) (secrets.Store, string) {
	t.Helper()
	dir := t.TempDir()
	st := secrets.Store{Dir: filepath.Join(dir, "secrets"), KeyFile: filepath.Join(dir, "secrets", "age.key")}
	rcpt, err := st.Init()
	if err != nil {
		t.Fatal(err)
	}
	return st, rcpt
}

func otherRecipient(t *testing.T) string {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id.Recipient().String()
}

func writeSops(t *testing.T, st secrets.Store, file, plain string, asJSON bool, recipients ...string) string {
	t.Helper()
	doc, err := sopstest.Encrypt([]byte(plain), asJSON, recipients...)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(st.Dir, file)
	if err := os.WriteFile(p, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSopsBundleReadOnly: a sops file (YAML or JSON, encrypted to the
// agent's recipient among others) opens with the agent's key file, is listed
// with the age bundles, and refuses changes with a message pointing at sops,
// leaving the file as it was.
func TestSopsBundleReadOnly(t *testing.T) {
	for _, tc := range []struct {
		name, file, plain string
		asJSON            bool
		env               map[string]string
		gitToken          string
	}{
		{"yaml", "team.sops.yaml", plainYAML, false, map[string]string{"OPENAI_API_KEY": "sk-sops-yaml-1111", "DB_PASSWORD": "hunter2-sops"}, "ghp_sopsTokenValue42"},
		{"json", "team.sops.json", plainJSON, true, map[string]string{"OPENAI_API_KEY": "sk-sops-json-2222"}, "ghp_jsonToken"},
		// The content decides, not the name: a sops document named like an age bundle.
		{"sops named .age", "team.age", plainYAML, false, map[string]string{"OPENAI_API_KEY": "sk-sops-yaml-1111", "DB_PASSWORD": "hunter2-sops"}, "ghp_sopsTokenValue42"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, rcpt := newStore(t)
			p := writeSops(t, st, tc.file, tc.plain, tc.asJSON, otherRecipient(t), rcpt)
			if err := st.Save("mine", &secrets.Bundle{Env: map[string]string{"A": "b"}}); err != nil {
				t.Fatal(err)
			}
			names, err := st.Names()
			if err != nil || strings.Join(names, ",") != "mine,team" {
				t.Fatalf("names %v %v", names, err)
			}
			b, err := st.Load("team")
			if err != nil {
				t.Fatal(err)
			}
			if b.Format != secrets.FormatSops || len(b.Env) != len(tc.env) || b.Git == nil || b.Git.Token != tc.gitToken {
				t.Fatalf("loaded %+v", b)
			}
			for k, v := range tc.env {
				if b.Env[k] != v {
					t.Errorf("env %s = %q, want %q", k, b.Env[k], v)
				}
			}
			if sum := b.Summary("team"); sum.Format != "sops" || !sum.ReadOnly {
				t.Errorf("summary %+v", sum)
			}
			before, _ := os.ReadFile(p)
			b.Env["NEW"] = "x"
			err = st.Save("team", b)
			if !errors.Is(err, secrets.ErrReadOnly) || !strings.Contains(err.Error(), "bundle team is a sops file") || !strings.Contains(err.Error(), "sops edit "+p) {
				t.Fatalf("save sops bundle: %v", err)
			}
			after, _ := os.ReadFile(p)
			if string(before) != string(after) {
				t.Fatal("refused save changed the sops file")
			}
			if _, err := os.Stat(filepath.Join(st.Dir, "team.age")); tc.file != "team.age" && err == nil {
				t.Fatal("refused save wrote an age file beside the sops one")
			}
		})
	}
}

// TestSopsBundleErrors: every way a sops bundle fails to open is ErrDecrypt
// with a message naming the bundle, its file and what failed.
func TestSopsBundleErrors(t *testing.T) {
	st, rcpt := newStore(t)
	// Encrypted to someone else only.
	theirs := otherRecipient(t)
	wrong := writeSops(t, st, "wrong.sops.yaml", plainYAML, false, theirs)
	// A value removed outside sops: everything left decrypts, the MAC does not match.
	tampered := writeSops(t, st, "tampered.sops.yaml", plainYAML, false, rcpt)
	doc, _ := os.ReadFile(tampered)
	var kept []string
	for _, l := range strings.Split(string(doc), "\n") {
		if !strings.Contains(l, "DB_PASSWORD:") {
			kept = append(kept, l)
		}
	}
	if len(kept) == len(strings.Split(string(doc), "\n")) {
		t.Fatal("no DB_PASSWORD line to remove")
	}
	os.WriteFile(tampered, []byte(strings.Join(kept, "\n")), 0o600)
	// A value's ciphertext changed.
	flipped := writeSops(t, st, "flipped.sops.json", plainJSON, true, rcpt)
	doc, _ = os.ReadFile(flipped)
	i := strings.Index(string(doc), "ENC[AES256_GCM,data:") + len("ENC[AES256_GCM,data:")
	c := byte('A')
	if doc[i] == 'A' {
		c = 'B'
	}
	doc[i] = c
	os.WriteFile(flipped, doc, 0o600)
	// Plaintext YAML and a "sops" key that is not the top-level one.
	plain := filepath.Join(st.Dir, "plain.yaml")
	os.WriteFile(plain, []byte(plainYAML), 0o600)
	nested := filepath.Join(st.Dir, "nested.json")
	os.WriteFile(nested, []byte(`{"env": {"sops": "x"}}`), 0o600)

	for _, tc := range []struct {
		bundle, path string
		want         []string
	}{
		{"wrong", wrong, []string{"not encrypted to this agent's age recipient " + rcpt, "its recipients: " + theirs, "sops rotate -i --add-age " + rcpt}},
		{"tampered", tampered, []string{"MAC mismatch", "changed outside sops"}},
		{"flipped", flipped, []string{"a value does not decrypt"}},
		{"plain", plain, []string{"no top-level sops key"}},
		{"nested", nested, []string{"no top-level sops key"}},
	} {
		_, err := st.Load(tc.bundle)
		if !errors.Is(err, secrets.ErrDecrypt) {
			t.Errorf("%s: %v, want ErrDecrypt", tc.bundle, err)
			continue
		}
		msg := err.Error()
		for _, w := range append(tc.want, "bundle "+tc.bundle, tc.path) {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: %q does not say %q", tc.bundle, msg, w)
			}
		}
		for _, v := range []string{"hunter2-sops", "sk-sops-yaml-1111", "sk-sops-json-2222", "ghp_"} {
			if strings.Contains(msg, v) {
				t.Errorf("%s: error shows a value: %s", tc.bundle, msg)
			}
		}
	}
}

// TestErrorKinds: callers tell failures apart with errors.Is, not by text.
func TestErrorKinds(t *testing.T) {
	st, _ := newStore(t)
	none := secrets.Store{Dir: t.TempDir(), KeyFile: filepath.Join(t.TempDir(), "missing.key")}
	os.WriteFile(filepath.Join(none.Dir, "x.age"), []byte("age-encryption.org/v1\n"), 0o600)
	two := writeSops(t, st, "two.sops.yaml", plainYAML, false, otherRecipient(t))
	os.WriteFile(strings.TrimSuffix(two, ".sops.yaml")+".json", []byte("{}"), 0o600)
	b := &secrets.Bundle{Env: map[string]string{"A": "1"}}
	for _, tc := range []struct {
		name string
		err  error
		kind error
	}{
		{"bad bundle name", st.Save("Bad Name", b), secrets.ErrInvalidName},
		{"bad env name", st.Save("ok", &secrets.Bundle{Env: map[string]string{"not-a-name": "v"}}), secrets.ErrInvalidName},
		{"bad ssh key", st.Save("ok", &secrets.Bundle{SSHKeys: map[string]string{"k": "nonsense"}}), secrets.ErrInvalidName},
		{"unset missing env", b.UnsetEnv("ok", "NOPE"), secrets.ErrNotFound},
		{"remove missing key", b.RemoveSSHKey("ok", "nope"), secrets.ErrNotFound},
		{"no key file", func() error { _, err := none.Load("x"); return err }(), secrets.ErrNoKey},
		{"two files", func() error { _, err := st.Load("two"); return err }(), secrets.ErrDecrypt},
		{"age, wrong key", func() error {
			other := secrets.Store{Dir: st.Dir, KeyFile: filepath.Join(t.TempDir(), "k")}
			if _, err := other.Init(); err != nil {
				t.Fatal(err)
			}
			if err := other.Save("theirs", b); err != nil {
				t.Fatal(err)
			}
			_, err := st.Load("theirs")
			return err
		}(), secrets.ErrDecrypt},
	} {
		if !errors.Is(tc.err, tc.kind) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.kind)
		}
	}
}

// TestOversizedBundleRefused: a bundle file beyond MaxBundleBytes (planted or
// a mistake) is refused before it is parsed or decrypted, naming the file.
func TestOversizedBundleRefused(t *testing.T) {
	st := secrets.Store{Dir: t.TempDir()}
	st.KeyFile = filepath.Join(st.Dir, "age.key")
	if _, err := st.Init(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(st.Dir, "huge.sops.yaml")
	big := append([]byte("sops:\n  x: "), make([]byte, secrets.MaxBundleBytes)...)
	if err := os.WriteFile(p, big, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := st.Load("huge")
	if !errors.Is(err, secrets.ErrDecrypt) || !strings.Contains(err.Error(), p+" is larger than") {
		t.Fatalf("oversized bundle: %v", err)
	}
}
