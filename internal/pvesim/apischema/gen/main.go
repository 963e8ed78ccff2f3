// Command gen extracts the facts the simulator validates against (paths, methods,
// parameter names, types, enums, formats, bounds, optional flags) for the paths
// in paths.txt into pveapi.json. Its input is the vendored facts-only extract of
// the official Proxmox VE API schema (apischema/schema/pve-api-facts.json, made
// with -extract from pve-api-schema.json; see facts.go), or the official schema
// itself: both have the same shape and give the same output.
//
//	go run ./internal/pvesim/apischema/gen -schema internal/pvesim/apischema/schema/pve-api-facts.json \
//	    -paths internal/pvesim/apischema/paths.txt -out internal/pvesim/apischema/pveapi.json
//	go run ./internal/pvesim/apischema/gen -extract internal/pvesim/apischema/schema/pve-api-facts.json \
//	    -schema ../shared/pve-api/pve-api-schema.json
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

type node struct {
	Path     string                     `json:"path"`
	Info     map[string]json.RawMessage `json:"info"`
	Children []node                     `json:"children"`
}

type method struct {
	Parameters struct {
		Properties map[string]map[string]any `json:"properties"`
	} `json:"parameters"`
}

// keep lists the schema keys that carry validation facts.
var keep = []string{"type", "optional", "enum", "format", "minimum", "maximum", "pattern",
	"maxLength", "minLength", "default_key", "alias", "keyAlias", "requires"}

func main() {
	schemaPath := flag.String("schema", "internal/pvesim/apischema/schema/pve-api-facts.json", "PVE API schema: the vendored facts or the official pve-api-schema.json")
	extract := flag.String("extract", "", "write the facts-only extract of -schema (the official schema) to this file and exit")
	pathsFile := flag.String("paths", "internal/pvesim/apischema/paths.txt", "paths to extract, one per line")
	out := flag.String("out", "internal/pvesim/apischema/pveapi.json", "output file")
	flag.Parse()
	if *extract != "" {
		if err := extractFacts(*schemaPath, *extract); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*schemaPath, *pathsFile, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(schemaPath, pathsFile, out string) error {
	raw, err := os.ReadFile(schemaPath)
	if err != nil {
		return err
	}
	var roots []node
	if err := json.Unmarshal(raw, &roots); err != nil {
		return fmt.Errorf("parse %s: %w", schemaPath, err)
	}
	want, err := readPaths(pathsFile)
	if err != nil {
		return err
	}
	all := map[string]node{}
	var walk func(n node)
	walk = func(n node) {
		all[n.Path] = n
		for _, c := range n.Children {
			walk(c)
		}
	}
	for _, r := range roots {
		walk(r)
	}
	result := map[string]map[string]map[string]any{}
	for _, p := range want {
		n, ok := all[p]
		if !ok {
			return fmt.Errorf("path %s is not in the schema", p)
		}
		methods := map[string]map[string]any{}
		for m, rawInfo := range n.Info {
			var mi method
			if err := json.Unmarshal(rawInfo, &mi); err != nil {
				return fmt.Errorf("%s %s: %w", m, p, err)
			}
			params := map[string]any{}
			for name, prop := range mi.Parameters.Properties {
				params[name] = compact(prop)
			}
			methods[m] = params
		}
		result[p] = methods
	}
	// One path per line keeps diffs after a schema update readable.
	var buf bytes.Buffer
	buf.WriteString("{\n")
	for i, p := range want {
		b, err := json.Marshal(result[p])
		if err != nil {
			return err
		}
		sep := ","
		if i == len(want)-1 {
			sep = ""
		}
		fmt.Fprintf(&buf, "%q: %s%s\n", p, b, sep)
	}
	buf.WriteString("}\n")
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

func compact(prop map[string]any) map[string]any {
	c := map[string]any{}
	for _, k := range keep {
		v, ok := prop[k]
		if !ok {
			continue
		}
		if k == "format" {
			if sub, isObj := v.(map[string]any); isObj {
				fm := map[string]any{}
				for sk, sv := range sub {
					if m, ok := sv.(map[string]any); ok {
						fm[sk] = compact(m)
					}
				}
				v = fm
			}
		}
		if k == "pattern" {
			// Perl stringifies compiled regexes as (?^:…); RE2 wants (?:…).
			// Perl also reads {,n} as {0,n}.
			v = strings.ReplaceAll(strings.ReplaceAll(v.(string), "(?^:", "(?:"), "{,", "{0,")
		}
		switch k {
		case "minimum", "maximum", "maxLength", "minLength", "optional", "default_key":
			// A few schema entries carry numbers as strings.
			if str, isStr := v.(string); isStr {
				f, err := strconv.ParseFloat(str, 64)
				if err != nil {
					continue
				}
				v = f
			}
		}
		c[k] = v
	}
	return c
}

func readPaths(file string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var paths []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		paths = append(paths, line)
	}
	sort.Strings(paths)
	return paths, sc.Err()
}
