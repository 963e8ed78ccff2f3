package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestPveapiUpToDate: pveapi.json is what `make schema` makes from the
// vendored facts and paths.txt (edit paths.txt, then run make schema).
func TestPveapiUpToDate(t *testing.T) {
	out := filepath.Join(t.TempDir(), "pveapi.json")
	if err := run("../schema/pve-api-facts.json", "../paths.txt", out); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	want, err := os.ReadFile("../pveapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("internal/pvesim/apischema/pveapi.json is stale: run make schema")
	}
}

// TestFactsHaveNoProse: the vendored extract keeps facts only.
func TestFactsHaveNoProse(t *testing.T) {
	b, err := os.ReadFile("../schema/pve-api-facts.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"text"`, `"typetext"`, `"verbose_description"`, `"format_description"`, `"permissions"`, `"returns"`, `"title"`} {
		if bytes.Contains(b, []byte(k+":")) {
			t.Errorf("vendored facts carry %s", k)
		}
	}
}
