package secrets

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/getsops/sops/v3"
	sopsaes "github.com/getsops/sops/v3/aes"
	sopsage "github.com/getsops/sops/v3/age"
	"github.com/getsops/sops/v3/config"
	"github.com/getsops/sops/v3/keyservice"
	"github.com/getsops/sops/v3/stores"
	sopsjson "github.com/getsops/sops/v3/stores/json"
	sopsyaml "github.com/getsops/sops/v3/stores/yaml"
	"google.golang.org/grpc"
)

// The formats a bundle file can have, decided by its content.
const (
	FormatAge  = "age"
	FormatSops = "sops"
)

var (
	ageHeader      = []byte("age-encryption.org/")
	ageArmorHeader = []byte("-----BEGIN AGE ENCRYPTED FILE-----")
)

// sniff says what a bundle file holds by its structure, whatever its name:
// an age file by its header, a sops document by its top-level "sops" key
// (JSON when it opens with a brace, YAML otherwise). "" is neither.
func sniff(doc []byte) (format string, store sops.Store) {
	t := bytes.TrimSpace(doc)
	if bytes.HasPrefix(t, ageHeader) || bytes.HasPrefix(t, ageArmorHeader) {
		return FormatAge, nil
	}
	if bytes.HasPrefix(t, []byte("{")) {
		store = sopsjson.NewStore(&config.JSONStoreConfig{})
	} else {
		store = sopsyaml.NewStore(&config.YAMLStoreConfig{})
	}
	branches, err := store.LoadPlainFile(doc)
	if err != nil || len(branches) == 0 || !stores.HasSopsTopLevelKey(branches[0]) {
		return "", nil
	}
	return FormatSops, store
}

// loadSops opens a sops document with the agent's age identity: the data
// key from the file's age recipient that is ours, every value with it, and
// the MAC over them checked as sops itself does, so a file edited outside
// sops (a value removed or changed) is refused rather than half-trusted.
func (s Store) loadSops(name, path string, doc []byte, store sops.Store) (*Bundle, error) {
	id, err := s.identity()
	if err != nil {
		return nil, err
	}
	tree, err := store.LoadEncryptedFile(doc)
	if err != nil {
		return nil, errorf(ErrDecrypt, "bundle %s: %s: not a valid sops document: %v", name, path, err)
	}
	key, err := tree.Metadata.GetDataKeyWithKeyServices([]keyservice.KeyServiceClient{ageKeys{id}}, nil)
	if err != nil {
		return nil, noDataKey(name, path, s.KeyFile, id.Recipient().String(), tree.Metadata, err)
	}
	cipher := sopsaes.NewCipher()
	mac, err := tree.Decrypt(key, cipher)
	if err != nil {
		// Not sops's error: for a value that is not in ENC[…] form it
		// quotes the value, which is then a secret in an API answer, an
		// event and the log. Name the keys instead.
		what := "a value does not decrypt"
		if keys := notEncrypted(tree.Branches, tree.Metadata); len(keys) > 0 {
			what = "these values are not sops-encrypted (ENC[…]): " + strings.Join(keys, ", ")
		}
		return nil, errorf(ErrDecrypt, "bundle %s: %s: %s (was the file edited outside sops? restore it, or set the values with sops %s)", name, path, what, path)
	}
	want, err := cipher.Decrypt(tree.Metadata.MessageAuthenticationCode, key, tree.Metadata.LastModified.Format(time.RFC3339))
	if err != nil || want != mac {
		return nil, errorf(ErrDecrypt, "bundle %s: %s: MAC mismatch: the file was changed outside sops; restore it, or re-encrypt it with sops", name, path)
	}
	if len(tree.Branches) != 1 {
		return nil, errorf(ErrDecrypt, "bundle %s: %s holds %d YAML documents; a bundle is one", name, path, len(tree.Branches))
	}
	// The JSON store emits any tree (YAML comments dropped), so one strict
	// decoder serves both formats and the age bundles' schema.
	plain, err := sopsjson.NewStore(&config.JSONStoreConfig{}).EmitPlainFile(tree.Branches)
	if err != nil {
		return nil, errorf(ErrDecrypt, "bundle %s: %s: %v", name, path, err)
	}
	var b Bundle
	dec := json.NewDecoder(bytes.NewReader(plain))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		// The decoder's message names a key or a type, not a value.
		return nil, errorf(ErrDecrypt, "bundle %s: %s: %v (a bundle holds env: {NAME: value}, ssh_keys: {name: public key} and git: {username, token, host})", name, path, err)
	}
	b.Format = FormatSops
	return &b, nil
}

// notEncrypted lists the dotted key paths of scalar values that sops would
// decrypt but that are not in its ENC[…] form, honouring the file's
// (un)encrypted suffix and regex as sops does (a matching key's whole
// subtree is plain).
func notEncrypted(branches sops.TreeBranches, m sops.Metadata) []string {
	plainRE, encRE := compileOrNil(m.UnencryptedRegex), compileOrNil(m.EncryptedRegex)
	var out []string
	var walk func(prefix string, v any, plain bool)
	walk = func(prefix string, v any, plain bool) {
		switch v := v.(type) {
		case sops.TreeBranch:
			for _, it := range v {
				k, ok := it.Key.(string)
				if !ok {
					continue // a comment
				}
				p := plain
				switch {
				case m.UnencryptedSuffix != "" && strings.HasSuffix(k, m.UnencryptedSuffix),
					m.EncryptedSuffix != "" && !strings.HasSuffix(k, m.EncryptedSuffix),
					plainRE != nil && plainRE.MatchString(k),
					encRE != nil && !encRE.MatchString(k):
					p = true
				}
				walk(strings.TrimPrefix(prefix+"."+k, "."), it.Value, p)
			}
		case []any:
			for i, e := range v {
				walk(fmt.Sprintf("%s[%d]", prefix, i), e, plain)
			}
		case nil, sops.Comment:
		case string:
			if !plain && v != "" && !(strings.HasPrefix(v, "ENC[AES256_GCM,") && strings.HasSuffix(v, "]")) {
				out = append(out, prefix)
			}
		default:
			if !plain {
				out = append(out, prefix)
			}
		}
	}
	for _, b := range branches {
		walk("", b, false)
	}
	return out
}

func compileOrNil(expr string) *regexp.Regexp {
	if expr == "" {
		return nil
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil
	}
	return re
}

// noDataKey explains why the data key did not open: sops's own error says
// only how many key groups failed, so name the file's recipients and ours.
func noDataKey(name, path, keyFile, ours string, m sops.Metadata, err error) error {
	var theirs []string
	listed := false
	for _, g := range m.KeyGroups {
		for _, k := range g {
			if ak, ok := k.(*sopsage.MasterKey); ok {
				listed = listed || ak.Recipient == ours
				theirs = append(theirs, ak.Recipient)
			} else {
				theirs = append(theirs, k.TypeToIdentifier())
			}
		}
	}
	if listed && len(m.KeyGroups) > 1 {
		return errorf(ErrDecrypt, "bundle %s: %s splits its data key over %d key groups (Shamir threshold %d); agentd holds one age key, so the file needs the recipient %s in enough groups (or a single group)",
			name, path, len(m.KeyGroups), m.ShamirThreshold, ours)
	}
	if listed {
		return errorf(ErrDecrypt, "bundle %s: %s lists this agent's recipient %s but its data key does not open with %s (re-encrypt it with sops rotate -i %s): %v",
			name, path, ours, keyFile, path, err)
	}
	return errorf(ErrDecrypt, "bundle %s: %s is not encrypted to this agent's age recipient %s (its recipients: %s): add it where a key of the file is at hand, with sops rotate -i --add-age %s %s",
		name, path, ours, strings.Join(theirs, ", "), ours, path)
}

// ageKeys is a sops key service that knows one age identity, the agent's:
// sops's local service would read identities from SOPS_AGE_KEY* and the
// user's config directory instead of the key file agentd owns.
type ageKeys struct{ id *age.X25519Identity }

func (k ageKeys) Decrypt(_ context.Context, req *keyservice.DecryptRequest, _ ...grpc.CallOption) (*keyservice.DecryptResponse, error) {
	ak := req.GetKey().GetAgeKey()
	if ak == nil {
		return nil, errors.New("not an age key (agentd opens sops files with its age key only)")
	}
	mk := &sopsage.MasterKey{Recipient: ak.GetRecipient(), EncryptedKey: string(req.GetCiphertext())}
	sopsage.ParsedIdentities{k.id}.ApplyToMasterKey(mk)
	pt, err := mk.Decrypt()
	if err != nil {
		return nil, fmt.Errorf("age recipient %s: %w", ak.GetRecipient(), err)
	}
	return &keyservice.DecryptResponse{Plaintext: pt}, nil
}

func (ageKeys) Encrypt(context.Context, *keyservice.EncryptRequest, ...grpc.CallOption) (*keyservice.EncryptResponse, error) {
	return nil, errors.New("agentd does not encrypt sops files")
}
