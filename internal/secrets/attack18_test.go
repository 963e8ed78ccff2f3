package secrets_test

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/secrets"
)

// TestAttack18SopsPlaintextValueNotEchoed: a sops file where someone pasted
// a value in plain text over its ENC[…] (an edit outside sops, or a file
// crafted to make agentd talk) is refused, and the refusal, which reaches
// the API answer, events and the log, names the key, never the value.
func TestAttack18SopsPlaintextValueNotEchoed(t *testing.T) {
	st, rcpt := newStore(t)
	p := writeSops(t, st, "pasted.sops.yaml", plainYAML, false, rcpt)
	doc, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	const leaked = "hunter2-pasted-in-plain"
	re := regexp.MustCompile(`(DB_PASSWORD: )ENC\[[^\]]*\]`)
	if !re.Match(doc) {
		t.Fatalf("no encrypted DB_PASSWORD in\n%s", doc)
	}
	if err := os.WriteFile(p, re.ReplaceAll(doc, []byte("${1}"+leaked)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = st.Load("pasted")
	if !errors.Is(err, secrets.ErrDecrypt) {
		t.Fatalf("load: %v, want ErrDecrypt", err)
	}
	if strings.Contains(err.Error(), leaked) {
		t.Fatalf("the error shows the value: %v", err)
	}
	if !strings.Contains(err.Error(), "DB_PASSWORD") {
		t.Fatalf("the error does not name the key: %v", err)
	}
}

// TestAttack18SopsNumericValueNotEchoed: an env value written as a YAML
// number (a PIN, a numeric token) is encrypted by sops as an int and comes
// back as one; the bundle wants strings, and the refusal must not quote the
// number (encoding/json's type error does: "cannot unmarshal number 90210…").
func TestAttack18SopsNumericValueNotEchoed(t *testing.T) {
	st, rcpt := newStore(t)
	writeSops(t, st, "numeric.sops.yaml", "env:\n  PIN: 9021077\n", false, rcpt)
	_, err := st.Load("numeric")
	if !errors.Is(err, secrets.ErrDecrypt) {
		t.Fatalf("load: %v, want ErrDecrypt", err)
	}
	if strings.Contains(err.Error(), "9021077") {
		t.Fatalf("the error shows the value: %v", err)
	}
	if !strings.Contains(err.Error(), "env") {
		t.Fatalf("the error does not say where: %v", err)
	}
}
