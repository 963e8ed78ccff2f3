// Package apischema validates request parameters the way Proxmox VE's JSONSchema
// module does, driven by facts generated from the official API schema (pveapi.json).
package apischema

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
)

//go:generate go run ./gen -schema ../../../../shared/pve-api/pve-api-schema.json -paths paths.txt -out pveapi.json

//go:embed pveapi.json
var raw []byte

// Param is one parameter's schema facts.
type Param struct {
	Type       string           `json:"type"`
	Optional   int              `json:"optional"`
	Enum       []string         `json:"enum"`
	Format     json.RawMessage  `json:"format"`
	Minimum    *float64         `json:"minimum"`
	Maximum    *float64         `json:"maximum"`
	Pattern    string           `json:"pattern"`
	MaxLength  *int             `json:"maxLength"`
	MinLength  *int             `json:"minLength"`
	DefaultKey int              `json:"default_key"`
	Alias      string           `json:"alias"`
	KeyAlias   string           `json:"keyAlias"`
	Requires   json.RawMessage  `json:"requires"`
	named      string           // format name, when Format is a string
	sub        map[string]Param // property-string keys, when Format is an object
	re         *regexp.Regexp
}

// Method is the parameter set of one path+method.
type Method map[string]*Param

var (
	loadOnce sync.Once
	paths    map[string]map[string]Method
	loadErr  error
)

func load() {
	var m map[string]map[string]map[string]*Param
	if loadErr = json.Unmarshal(raw, &m); loadErr != nil {
		return
	}
	paths = map[string]map[string]Method{}
	for p, methods := range m {
		paths[p] = map[string]Method{}
		for verb, params := range methods {
			for _, prm := range params {
				if loadErr = prm.prepare(); loadErr != nil {
					return
				}
			}
			paths[p][verb] = params
		}
	}
}

// perlFlagsRE matches a stringified Perl qr// ("(?^i:…)": the caret resets
// the flags to the defaults, then sets those listed), which Go spells "(?i:…)".
var perlFlagsRE = regexp.MustCompile(`\(\?\^([a-z]*):`)

func goRegexp(pattern string) string {
	return perlFlagsRE.ReplaceAllStringFunc(pattern, func(m string) string {
		flags := perlFlagsRE.FindStringSubmatch(m)[1]
		return "(?" + flags + ":"
	})
}

func (p *Param) prepare() error {
	if len(p.Format) > 0 {
		if p.Format[0] == '"' {
			_ = json.Unmarshal(p.Format, &p.named)
		} else {
			var sub map[string]*Param
			if err := json.Unmarshal(p.Format, &sub); err != nil {
				return err
			}
			p.sub = map[string]Param{}
			for k, s := range sub {
				if err := s.prepare(); err != nil {
					return err
				}
				p.sub[k] = *s
			}
		}
	}
	if p.Pattern != "" {
		re, err := regexp.Compile("^(?:" + goRegexp(p.Pattern) + ")$")
		if err != nil {
			return fmt.Errorf("pattern %q: %w", p.Pattern, err)
		}
		p.re = re
	}
	return nil
}

// Lookup returns the schema of a path template (e.g. /nodes/{node}/qemu/{vmid}) and method.
func Lookup(pathTemplate, verb string) (Method, bool) {
	loadOnce.Do(load)
	if loadErr != nil {
		panic("apischema: embedded pveapi.json: " + loadErr.Error())
	}
	ms, ok := paths[pathTemplate]
	if !ok {
		return nil, false
	}
	m, ok := ms[verb]
	return m, ok
}

// Paths lists every path template with the methods the schema defines for it.
func Paths() map[string][]string {
	loadOnce.Do(load)
	out := map[string][]string{}
	for p, ms := range paths {
		for verb := range ms {
			out[p] = append(out[p], verb)
		}
		sort.Strings(out[p])
	}
	return out
}

// indexed maps PVE's "[n]" parameter families to their highest index.
var indexed = map[string]int{
	"net": 31, "ipconfig": 31, "scsi": 30, "virtio": 15, "sata": 5, "ide": 3, "unused": 255,
	"hostpci": 15, "usb": 13, "serial": 3, "parallel": 2, "numa": 7, "virtiofs": 9,
}

var indexRE = regexp.MustCompile(`^([a-z]+)(\d+)$`)

// spec finds the parameter schema for name, resolving families such as net0 → net[n].
func (m Method) spec(name string) *Param {
	if p, ok := m[name]; ok {
		return p
	}
	if g := indexRE.FindStringSubmatch(name); g != nil {
		if max, ok := indexed[g[1]]; ok {
			if n, _ := strconv.Atoi(g[2]); n <= max && (g[2] == "0" || g[2][0] != '0') {
				return m[g[1]+"[n]"]
			}
		}
	}
	return nil
}

// Validate checks params (already merged from path, query and body) and returns PVE's
// per-parameter error map, empty when the request is acceptable.
func (m Method) Validate(params map[string]any) map[string]string {
	errs := map[string]string{}
	for name, v := range params {
		p := m.spec(name)
		if p == nil {
			errs[name] = "property is not defined in schema and the schema does not allow additional properties"
			continue
		}
		if msg := p.check(v, name); msg != "" {
			errs[name] = msg
		}
	}
	for name, p := range m {
		if p.Optional == 1 || strings.HasSuffix(name, "[n]") {
			continue
		}
		if _, ok := params[name]; !ok {
			errs[name] = "property is missing and it is not optional"
		}
	}
	for name, v := range params {
		if _, bad := errs[name]; bad || v == nil {
			continue
		}
		if p := m.spec(name); p != nil && len(p.Requires) > 0 && p.Requires[0] == '"' {
			var req string
			_ = json.Unmarshal(p.Requires, &req)
			if _, ok := params[req]; !ok {
				errs[req] = fmt.Sprintf("missing property required by '%s'", name)
			}
		}
	}
	return errs
}

// Scalar renders a decoded JSON or form value the way Perl would see it.
func Scalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case bool:
		if x {
			return "1", true
		}
		return "0", true
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1e15 {
			return strconv.FormatInt(int64(x), 10), true
		}
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case json.Number:
		return x.String(), true
	}
	return "", false
}

var (
	integerRE = regexp.MustCompile(`^[+-]?\d+$`)
	numberRE  = regexp.MustCompile(`^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$`)
)

// check is check_prop for one value; path names it in nested format errors.
func (p *Param) check(v any, path string) string {
	s, ok := Scalar(v)
	if !ok {
		kind := "HASH"
		if _, isArr := v.([]any); isArr {
			kind = "ARRAY"
		}
		if p.Type == "array" {
			return ""
		}
		return fmt.Sprintf("type check ('%s') failed - got %s", p.Type, kind)
	}
	switch p.Type {
	case "boolean":
		if _, isBool := v.(bool); !isBool && s != "0" && s != "1" {
			return fmt.Sprintf("type check ('boolean') failed - got '%s'", s)
		}
	case "integer":
		if !integerRE.MatchString(s) {
			return fmt.Sprintf("type check ('integer') failed - got '%s'", s)
		}
	case "number":
		if !numberRE.MatchString(s) {
			return fmt.Sprintf("type check ('number') failed - got '%s'", s)
		}
	}
	if f := p.PropFormat(); f != nil {
		if _, err := f.Parse(s, path); err != nil {
			return "invalid format - " + err.Error()
		}
	} else if p.named != "" {
		if err := checkFormat(p.named, s); err != "" {
			return "invalid format - " + err + "\n"
		}
	}
	if p.re != nil && !p.re.MatchString(s) {
		return "value does not match the regex pattern"
	}
	if p.MaxLength != nil && len(s) > *p.MaxLength {
		return fmt.Sprintf("value may only be %d characters long", *p.MaxLength)
	}
	if p.MinLength != nil && len(s) < *p.MinLength {
		return fmt.Sprintf("value must be at least %d characters long", *p.MinLength)
	}
	if numberRE.MatchString(s) {
		f, _ := strconv.ParseFloat(s, 64)
		if p.Maximum != nil && f > *p.Maximum {
			return fmt.Sprintf("value must have a maximum value of %s", num(*p.Maximum))
		}
		if p.Minimum != nil && f < *p.Minimum {
			return fmt.Sprintf("value must have a minimum value of %s", num(*p.Minimum))
		}
	}
	if len(p.Enum) > 0 {
		for _, e := range p.Enum {
			if e == s {
				return ""
			}
		}
		return fmt.Sprintf("value '%s' does not have a value in the enumeration '%s'", s, strings.Join(p.Enum, ", "))
	}
	return ""
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// ParseBool reads PVE's boolean spellings (1/on/yes/true, 0/off/no/false) as "1"/"0".
func ParseBool(s string) (string, bool) {
	switch strings.ToLower(s) {
	case "1", "on", "yes", "true":
		return "1", true
	case "0", "off", "no", "false":
		return "0", true
	}
	return "", false
}

// PropFormat is the property-string format of a parameter: its inline hash
// format, or a named hash format (pve-qm-ipconfig, pve-qm-cicustom); nil otherwise.
func (p *Param) PropFormat() Format {
	if p.sub != nil {
		return p.sub
	}
	return hashFormats[p.named]
}

// requiresKey is the "requires" attribute when it names one other key.
func (p *Param) requiresKey() string {
	var req string
	if len(p.Requires) > 0 && p.Requires[0] == '"' {
		_ = json.Unmarshal(p.Requires, &req)
	}
	return req
}

// Format returns the property-string format of a parameter (net0, scsi1, ipconfig0, …).
func (m Method) Format(name string) Format {
	if p := m.spec(name); p != nil {
		return p.PropFormat()
	}
	return nil
}

// Type returns the schema type of a parameter ("" when unknown), resolving
// indexed families such as net0.
func (m Method) Type(name string) string {
	if p := m.spec(name); p != nil {
		return p.Type
	}
	return ""
}
