// Package token makes random bearer tokens and the hashes that are all the
// store ever keeps of them.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
)

// New returns a random token and its hash.
func New() (raw, hash string) {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	raw = hex.EncodeToString(b)
	return raw, Hash(raw)
}

// Hash is the stored form of a token.
func Hash(raw string) string {
	s := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(s[:])
}
