package cli

import (
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"
)

// maxCell bounds a table cell without --wide: one long error message or
// artifact name must not push every other column off the screen.
const maxCell = 48

// clean makes text the CLI did not write safe for a terminal: control
// characters (ESC sequences, carriage returns, newlines, tabs that would
// break a table), bidirectional overrides and invalid UTF-8 are written as
// Go escapes (\x1b, \n, \u202e), everything else as it is.
func clean(s string) string {
	ok := true
	for _, r := range s {
		if unsafeRune(r) {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unsafeRune(r):
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	switch {
	case r == utf8.RuneError:
		return true
	case r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
		return true
	}
	return unicode.Is(unicode.Cc, r)
}

// cell is a cleaned table cell, cut to maxCell runes with an ellipsis
// unless --wide.
func (g *options) cell(s string) string {
	s = clean(s)
	if g.wide || utf8.RuneCountInString(s) <= maxCell {
		return s
	}
	r := []rune(s)
	return string(r[:maxCell-1]) + "…"
}

// printf is fmt.Fprintf with every string argument cleaned: the format is
// the CLI's own, the arguments come from the agent and the guests.
func printf(w io.Writer, format string, args ...any) {
	for i, a := range args {
		if v := reflect.ValueOf(a); v.IsValid() && v.Kind() == reflect.String {
			args[i] = clean(v.String())
		} else if err, ok := a.(error); ok {
			args[i] = clean(err.Error())
		}
	}
	fmt.Fprintf(w, format, args...)
}

func (g *options) table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = g.cell(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// kv prints "Key: value" lines aligned; values are cleaned, not cut.
func kv(w io.Writer, lines [][2]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, l := range lines {
		fmt.Fprintf(tw, "%s:\t%s\n", l[0], clean(l[1]))
	}
	return tw.Flush()
}
