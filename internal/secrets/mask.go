package secrets

import (
	"bytes"
	"io"
	"sort"
)

// Mask replaces a secret value in masked output.
const Mask = "[MASKED]"

// MinMaskLen is the shortest value masked: shorter ones would also mask
// ordinary text ("1", "yes") and make a log unreadable without hiding much.
const MinMaskLen = 4

// Masker copies a stream to W with every secret value replaced by Mask,
// also when a value is split across writes. Close flushes what it holds back.
type Masker struct {
	w      io.Writer
	values [][]byte // longest first: of two overlapping values the longer wins
	keep   int      // bytes held back: a value may start in them
	buf    []byte
}

// NewMasker masks values (those shorter than MinMaskLen are left alone).
func NewMasker(w io.Writer, values []string) *Masker {
	m := &Masker{w: w}
	seen := map[string]bool{}
	for _, v := range values {
		if len(v) >= MinMaskLen && !seen[v] {
			seen[v] = true
			m.values = append(m.values, []byte(v))
		}
	}
	sort.Slice(m.values, func(i, j int) bool { return len(m.values[i]) > len(m.values[j]) })
	if len(m.values) > 0 {
		m.keep = len(m.values[0]) - 1
	}
	return m
}

// Write masks p; it reports len(p) written when W took everything.
func (m *Masker) Write(p []byte) (int, error) {
	if len(m.values) == 0 {
		return m.w.Write(p)
	}
	m.buf = append(m.buf, p...)
	if err := m.flush(false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close writes the bytes held back.
func (m *Masker) Close() error { return m.flush(true) }

func (m *Masker) flush(final bool) error {
	for {
		at, n := -1, 0
		for _, v := range m.values {
			if i := bytes.Index(m.buf, v); i >= 0 && (at < 0 || i < at) {
				at, n = i, len(v)
			}
		}
		// Undecided while a longer value starting at `at` may still be
		// arriving.
		if at < 0 || !final && at+m.keep+1 > len(m.buf) {
			break
		}
		if _, err := m.w.Write(m.buf[:at]); err != nil {
			return err
		}
		if _, err := io.WriteString(m.w, Mask); err != nil {
			return err
		}
		m.buf = m.buf[at+n:]
	}
	// Every match starting before len-keep lies wholly in buf and was
	// replaced above, so those bytes are final.
	keep := m.keep
	if final {
		keep = 0
	}
	if len(m.buf) > keep {
		cut := len(m.buf) - keep
		if _, err := m.w.Write(m.buf[:cut]); err != nil {
			return err
		}
		m.buf = append(m.buf[:0], m.buf[cut:]...)
	}
	return nil
}

// MaskString masks values in s.
func MaskString(s string, values []string) string {
	var b bytes.Buffer
	m := NewMasker(&b, values)
	_, _ = m.Write([]byte(s))
	_ = m.Close()
	return b.String()
}
