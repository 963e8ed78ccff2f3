// Package sopstest writes sops-encrypted bundle files through the sops
// library, as `sops encrypt --age` does, so tests exercise real sops files
// without the sops CLI or checked-in blobs.
package sopstest

import (
	"fmt"
	"time"

	"github.com/getsops/sops/v3"
	"github.com/getsops/sops/v3/aes"
	sopsage "github.com/getsops/sops/v3/age"
	"github.com/getsops/sops/v3/config"
	"github.com/getsops/sops/v3/keyservice"
	sopsjson "github.com/getsops/sops/v3/stores/json"
	sopsyaml "github.com/getsops/sops/v3/stores/yaml"
)

// Encrypt encrypts plain, a YAML document (or JSON with asJSON), to the age
// recipients, in one key group.
func Encrypt(plain []byte, asJSON bool, recipients ...string) ([]byte, error) {
	var store sops.Store = sopsyaml.NewStore(&config.YAMLStoreConfig{})
	if asJSON {
		store = sopsjson.NewStore(&config.JSONStoreConfig{})
	}
	branches, err := store.LoadPlainFile(plain)
	if err != nil {
		return nil, fmt.Errorf("parse plain document: %w", err)
	}
	var group sops.KeyGroup
	for _, r := range recipients {
		mk, err := sopsage.MasterKeyFromRecipient(r)
		if err != nil {
			return nil, fmt.Errorf("recipient %s: %w", r, err)
		}
		group = append(group, mk)
	}
	tree := sops.Tree{Branches: branches, Metadata: sops.Metadata{
		KeyGroups: []sops.KeyGroup{group}, UnencryptedSuffix: "_unencrypted", Version: "3.13.3",
	}}
	// The local key service encrypts to age recipients without any identity.
	key, errs := tree.GenerateDataKeyWithKeyServices([]keyservice.KeyServiceClient{keyservice.NewLocalClient()})
	if len(errs) > 0 {
		return nil, fmt.Errorf("encrypt data key: %v", errs)
	}
	cipher := aes.NewCipher()
	mac, err := tree.Encrypt(key, cipher)
	if err != nil {
		return nil, fmt.Errorf("encrypt values: %w", err)
	}
	tree.Metadata.LastModified = time.Now().UTC()
	tree.Metadata.MessageAuthenticationCode, err = cipher.Encrypt(mac, key, tree.Metadata.LastModified.Format(time.RFC3339))
	if err != nil {
		return nil, fmt.Errorf("encrypt MAC: %w", err)
	}
	return store.EmitEncryptedFile(tree)
}
