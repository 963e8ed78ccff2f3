package secrets

import (
	"bytes"
	"strings"
	"testing"
)

// TestMaskerSplitWrites: a value is masked wherever the writes split it, the
// longer of two overlapping values wins, and short values stay.
func TestMaskerSplitWrites(t *testing.T) {
	values := []string{"sk-live-123456", "ghp_tokenvalue", "sk-live", "ab"}
	in := "key=sk-live-123456 tok=ghp_tokenvalue short=sk-live x=ab end sk-live-123456"
	want := "key=[MASKED] tok=[MASKED] short=[MASKED] x=ab end [MASKED]"
	for chunk := 1; chunk <= len(in); chunk++ {
		var out bytes.Buffer
		m := NewMasker(&out, values)
		for i := 0; i < len(in); i += chunk {
			j := min(i+chunk, len(in))
			if n, err := m.Write([]byte(in[i:j])); err != nil || n != j-i {
				t.Fatalf("write: %d %v", n, err)
			}
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Fatalf("chunk %d: %q, want %q", chunk, out.String(), want)
		}
	}
	if got := MaskString("no secrets here", values); got != "no secrets here" {
		t.Errorf("unmasked text changed: %q", got)
	}
	if strings.Contains(MaskString("x"+values[1]+"y", values), values[1]) {
		t.Error("value not masked")
	}
}
