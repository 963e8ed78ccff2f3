package apischema

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Format is the schema of a property string: the keys a value such as
// "virtio=BC:24:11:00:00:01,bridge=vmbr0" may carry, each with its own schema.
type Format map[string]Param

// FormatError is the exception parse_property_string raises: a message and,
// for schema violations, one error per key path ("net0.tag").
type FormatError struct {
	Msg    string
	Errors map[string]string
}

// Error renders the exception as PVE::Exception::stringify does: the message,
// then one "path: error" line per key (sorted here; Perl's hash order is random).
func (e *FormatError) Error() string {
	msg := e.Msg
	if !strings.HasSuffix(msg, "\n") {
		msg += "\n"
	}
	keys := make([]string, 0, len(e.Errors))
	for k := range e.Errors {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		msg += k + ": " + e.Errors[k] + "\n"
	}
	return msg
}

func die(format string, a ...any) error { return &FormatError{Msg: fmt.Sprintf(format, a...) + "\n"} }

var (
	blankRE  = regexp.MustCompile(`^\s*$`)
	keyValRE = regexp.MustCompile(`^([^=]+)=(.+)$`)
)

// DefaultKey is the key a value without "key=" is assigned to (drives: file, nets: model).
func (f Format) DefaultKey() string {
	for _, k := range sortedFormatKeys(f) {
		if f[k].DefaultKey == 1 {
			return k
		}
	}
	return ""
}

func sortedFormatKeys(f Format) []string {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Parse follows PVE::JSONSchema::parse_property_string: keys may be written out
// (file=, model=) or left to the default key, aliases (volume → file, virtio=MAC →
// model=virtio + macaddr=MAC) are resolved, booleans normalised with parse_boolean,
// and the result is checked with check_object and additionalProperties 0. path is
// the parameter name; sub-key errors are reported as "<path>.<key>".
//
// A quirk kept on purpose: parse_property_string tests "$schema->{alias}" on an
// unknown key, which autovivifies $schema, so its "invalid key" branch never fires;
// the key instead fails check_object's "property is not defined in schema" test.
func (f Format) Parse(data, path string, skip ...string) (map[string]string, error) {
	res := map[string]string{}
	skipped := map[string]bool{}
	for _, s := range skip {
		skipped[s] = true
	}
	defaultKey := ""
	for _, part := range strings.Split(data, ",") {
		if blankRE.MatchString(part) {
			continue
		}
		if m := keyValRE.FindStringSubmatch(part); m != nil {
			k, v := m[1], m[2]
			if skipped[k] {
				continue
			}
			if _, dup := res[k]; dup {
				return nil, die("duplicate key in comma-separated list property: %s", k)
			}
			s := f[k]
			if s.Alias != "" {
				if s.KeyAlias != "" {
					if _, dup := res[s.KeyAlias]; dup {
						return nil, die("key alias '%s' is already defined", s.KeyAlias)
					}
					res[s.KeyAlias] = k
				}
				k = s.Alias
				s = f[k]
				if _, dup := res[k]; dup {
					return nil, die("key '%s' is already defined (via alias)", k)
				}
			}
			if s.Type == "boolean" {
				if b, ok := ParseBool(v); ok {
					v = b
				}
			}
			res[k] = v
			continue
		}
		if strings.Contains(part, "=") {
			return nil, die("missing key in comma-separated list property")
		}
		if defaultKey != "" {
			return nil, die("duplicate key in comma-separated list property: %s", defaultKey)
		}
		defaultKey = f.DefaultKey()
		if defaultKey == "" {
			return nil, die("value without key, but schema does not define a default key")
		}
		// Perl tests the existing value for truth: "" and "0" count as unset.
		if cur := res[defaultKey]; cur != "" && cur != "0" {
			return nil, die("duplicate key in comma-separated list property: %s", defaultKey)
		}
		if f[defaultKey].Type == "boolean" {
			if b, ok := ParseBool(part); ok {
				part = b
			}
		}
		res[defaultKey] = part
	}
	if errs := f.checkObject(path, res); len(errs) > 0 {
		return nil, &FormatError{Msg: "format error\n", Errors: errs}
	}
	return res, nil
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// checkObject is check_object with additionalProperties 0 for a parsed property string.
func (f Format) checkObject(path string, res map[string]string) map[string]string {
	errs := map[string]string{}
	for k, v := range res {
		if s, ok := f[k]; ok && s.Alias != "" {
			if _, both := res[s.Alias]; both {
				errs[joinPath(path, k)] = fmt.Sprintf("cannot set both '%s' and its alias target '%s'", k, s.Alias)
			} else {
				res[s.Alias] = v
				delete(res, k)
			}
		}
	}
	for _, k := range sortedFormatKeys(f) {
		s := f[k]
		if s.Alias != "" {
			continue // aliases are always optional and were remapped above
		}
		v, ok := res[k]
		if !ok {
			if s.Optional != 1 {
				errs[joinPath(path, k)] = "property is missing and it is not optional"
			}
			continue
		}
		if msg := s.check(v, joinPath(path, k)); msg != "" {
			errs[joinPath(path, k)] = msg
		}
	}
	for k := range res {
		s, ok := f[k]
		if !ok {
			errs[joinPath(path, k)] = "property is not defined in schema and the schema does not allow additional properties"
			continue
		}
		if req := s.requiresKey(); req != "" {
			if _, ok := res[req]; !ok {
				errs[joinPath(path, req)] = fmt.Sprintf("missing property required by '%s'", joinPath(path, k))
			}
		}
	}
	return errs
}

// Print follows print_property_string: the default key first (combined with its
// key alias, e.g. "virtio=<mac>"), then the non-optional keys, then the rest, each
// group sorted; disk-size values are written with format_size.
func (f Format) Print(data map[string]string, skip ...string) string {
	done := map[string]bool{}
	for _, s := range skip {
		done[s] = true
	}
	keyAlias := map[string]string{} // model → macaddr
	for _, k := range sortedFormatKeys(f) {
		if s := f[k]; s.Alias != "" && s.KeyAlias != "" {
			keyAlias[s.KeyAlias] = s.Alias
		}
	}
	value := func(k, v string) string {
		if f[k].named == "disk-size" {
			if n, ok := ParseSize(v); ok {
				return FormatSize(n)
			}
		}
		return v
	}
	var parts []string
	add := func(k string, isDefault bool) {
		if done[k] {
			return
		}
		done[k] = true
		v, ok := data[k]
		if !ok {
			return
		}
		if combine := keyAlias[k]; combine != "" {
			if cv, ok := data[combine]; ok {
				parts = append(parts, value(k, v)+"="+value(combine, cv))
				done[combine] = true
				return
			}
		}
		if isDefault {
			parts = append(parts, value(k, v))
		} else {
			parts = append(parts, k+"="+value(k, v))
		}
	}
	if dk := f.DefaultKey(); dk != "" {
		add(dk, true)
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if s, ok := f[k]; ok && s.Optional != 1 {
			add(k, false)
		}
	}
	for _, k := range keys {
		add(k, false)
	}
	return strings.Join(parts, ",")
}

var sizeRE = regexp.MustCompile(`^(\d+(?:\.\d+)?)([KMGT](?:iB)?)?$`)

// ParseSize is PVE::JSONSchema::parse_size (bytes; K/M/G/T and KiB… units).
func ParseSize(s string) (int64, bool) {
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	var f float64
	fmt.Sscan(m[1], &f)
	switch strings.TrimSuffix(m[2], "iB") {
	case "K":
		f *= 1 << 10
	case "M":
		f *= 1 << 20
	case "G":
		f *= 1 << 30
	case "T":
		f *= 1 << 40
	}
	return int64(f), true
}

// FormatSize is PVE::JSONSchema::format_size: the largest unit that divides evenly.
func FormatSize(n int64) string {
	units := []string{"K", "M", "G", "T"}
	if n%1024 != 0 {
		return fmt.Sprint(n)
	}
	n /= 1024
	for i, u := range units {
		if i == len(units)-1 || n%1024 != 0 {
			return fmt.Sprintf("%d%s", n, u)
		}
		n /= 1024
	}
	return ""
}
