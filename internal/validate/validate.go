// Package validate holds the rules for every value a client can give agentd:
// object names, Proxmox tags, storage ids, snapshot names, sizes and leases.
// The server applies them before anything reaches Proxmox, and the Terraform
// provider applies the same functions at plan time, so the two cannot drift.
//
// Every check returns an *Error naming the field, or nil. The package depends
// on nothing of agentd's, so the provider can import it.
package validate

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Error is a rejected value: which field, and what is wrong with it.
type Error struct {
	Field  string
	Reason string
}

func (e *Error) Error() string { return e.Field + ": " + e.Reason }

func fail(field, format string, args ...any) error {
	return &Error{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Id prefixes agentd gives its objects. A name may not start with one, so that
// a reference that looks like an id can only ever be an id.
const (
	SandboxPrefix   = "sbx-"
	WorkspacePrefix = "ws-"
	SessionPrefix   = "ses-"
	JobPrefix       = "job-"
)

// IDPrefixes lists every id prefix.
var IDPrefixes = []string{SandboxPrefix, WorkspacePrefix, SessionPrefix, JobPrefix}

// Longest names. A sandbox name is the VM's host name (one DNS label, 63).
// Workspace and session names are shorter because agentd derives names from
// them: the holder VM "ws-<workspace>" and the session's sandboxes
// "<session>-<generation>", which must still fit in one label.
const (
	MaxSandboxName   = 63
	MaxWorkspaceName = 52
	MaxSessionName   = 52
)

var labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// vmNameRE is a Proxmox VM name: the dns-name format of pve-common's
// JSONSchema (pve_verify_dns_name), which qm set --name checks.
var vmNameRE = regexp.MustCompile(`^(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$`)

// VMName reports whether s is a name Proxmox accepts for a VM.
func VMName(s string) bool { return vmNameRE.MatchString(s) }

func name(kind, field, s string, max int) error {
	if err := NameChars(field, s, max); err != nil {
		return err
	}
	return Unambiguous(kind, field, s)
}

// NameChars checks only the characters and length of a name (max is one of
// the Max…Name constants). Every name agentd ever accepted passes it, so it
// can be applied to the name of an object that may already exist; the full
// rule (SandboxName, …) applies to new names.
func NameChars(field, s string, max int) error {
	switch {
	case s == "":
		return fail(field, "is required")
	case len(s) > max || !labelRE.MatchString(s):
		return fail(field, "%q must be 1-%d lowercase letters, digits or dashes, starting and ending with a letter or digit", s, max)
	}
	return nil
}

// Unambiguous refuses a name of kind (sandbox, workspace, session) that could
// be read as another kind of reference: all digits (a VMID) or starting with
// an id prefix.
func Unambiguous(kind, field, s string) error {
	if s != "" && strings.Trim(s, "0123456789") == "" {
		return fail(field, "%q is all digits, which reads as a VMID; a %s name needs at least one letter or dash", s, kind)
	}
	for _, p := range IDPrefixes {
		if strings.HasPrefix(s, p) {
			return fail(field, "%q starts with %q, which agentd reserves for its ids (%s)", s, p, strings.Join(IDPrefixes, ", "))
		}
	}
	return nil
}

// SandboxName checks a sandbox name (also the VM's host name).
func SandboxName(field, s string) error { return name("sandbox", field, s, MaxSandboxName) }

// WorkspaceName checks a workspace name.
func WorkspaceName(field, s string) error { return name("workspace", field, s, MaxWorkspaceName) }

// SessionName checks a session name.
func SessionName(field, s string) error { return name("session", field, s, MaxSessionName) }

// IsJobID reports whether s has the shape of an id agentd issues for a job
// ("job-" and hex digits). The sandbox of a job is named after it: the one
// name with an id prefix, because agentd chose it and it names nothing else.
func IsJobID(s string) bool { return jobIDRE.MatchString(s) }

var jobIDRE = regexp.MustCompile(`^job-[0-9a-f]+$`)

// ReservedTags are the tags agentd uses to prove a VM is its own; a client
// cannot add them, or a VM could be made to look like agentd's.
var ReservedTags = []string{"agentlab", "agentlab-workspace", "agentlab-pool"}

// MaxTag bounds a tag's length (Proxmox itself sets none).
const MaxTag = 64

// tagRE is the lowercase subset of PVE's tag format (PVE::JSONSchema::
// pve_verify_tag, $PVE_TAG_RE = [a-z0-9_][a-z0-9_\-\+\.]*, case-insensitive):
// lowercase because Proxmox may fold case when it stores tags, and agentd
// compares them as written.
var tagRE = regexp.MustCompile(`^[a-z0-9_][a-z0-9_+.-]*$`)

// Tag checks one Proxmox tag a client asks for.
func Tag(field, s string) error {
	if len(s) > MaxTag || !tagRE.MatchString(s) {
		return fail(field, "%q is not a valid Proxmox tag (1-%d lowercase letters, digits, _ + . -, not starting with + . -)", s, MaxTag)
	}
	if slices.Contains(ReservedTags, s) {
		return fail(field, "%q is reserved: agentd tags its own VMs with it", s)
	}
	return nil
}

// storageIDRE is PVE's storage id format: PVE::JSONSchema::parse_storage_id,
// which calls parse_id with m/^[a-z][a-z0-9\-\_\.]*[a-z0-9]$/i (so at least
// two characters, and case-insensitive as in Perl).
var storageIDRE = regexp.MustCompile(`(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$`)

// StorageID checks that s is a well-formed Proxmox storage id.
func StorageID(field, s string) error {
	if !storageIDRE.MatchString(s) {
		return fail(field, "%q is not a Proxmox storage id (a letter, then letters, digits, - _ or ., ending with a letter or digit)", s)
	}
	return nil
}

// Storage checks a storage id against the storages agentd may use.
func Storage(field, s string, allowed []string) error {
	if err := StorageID(field, s); err != nil {
		return err
	}
	if !slices.Contains(allowed, s) {
		return fail(field, "storage %q is not one agentd may use (allowed: %s; see workspace_storages in agentd's config)", s, strings.Join(allowed, ", "))
	}
	return nil
}

// MaxSnapshotName is PVE's maxLength of pve-snapshot-name.
const MaxSnapshotName = 40

// snapshotRE is PVE's snapshot name format: the pve-snapshot-name standard
// option is format pve-configid, checked by PVE::JSONSchema::
// pve_verify_configid against $CONFIGID_RE = [a-z][a-z0-9_-]+ (case-
// insensitive), so at least two characters.
var snapshotRE = regexp.MustCompile(`(?i)^[a-z][a-z0-9_-]+$`)

// SnapshotName checks a workspace snapshot name.
func SnapshotName(field, s string) error {
	if len(s) > MaxSnapshotName || !snapshotRE.MatchString(s) {
		return fail(field, "%q must be 2-%d letters, digits, _ or -, starting with a letter", s, MaxSnapshotName)
	}
	// qemu-server refuses these: "current" is the live state in the
	// snapshot tree, "pending" the pending config section.
	if s == "current" || s == "pending" {
		return fail(field, "%q is reserved by Proxmox", s)
	}
	return nil
}

// Sizes in GiB: at least 1, at most 64 TiB.
const (
	MinSizeGiB = 1
	MaxSizeGiB = 65536
)

// SizeGiB checks a size in GiB.
func SizeGiB(field string, n int64) error {
	if n < MinSizeGiB || n > MaxSizeGiB {
		return fail(field, "must be between %d and %d GiB, got %d", MinSizeGiB, MaxSizeGiB, n)
	}
	return nil
}

var sizeRE = regexp.MustCompile(`^(\d+)\s*([GgTt]?)(?:i?[Bb])?$`)

// ParseSize reads a size such as "80G", "80", "80GiB" or "1T" as GiB.
func ParseSize(field, s string) (int, error) {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fail(field, "%q is not a size such as 80G or 1T", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || n > MaxSizeGiB {
		return 0, fail(field, "%q is larger than %dT", s, MaxSizeGiB/1024)
	}
	if strings.EqualFold(m[2], "t") {
		n *= 1024
	}
	switch {
	case n < MinSizeGiB:
		return 0, fail(field, "%q must be at least %dG", s, MinSizeGiB)
	case n > MaxSizeGiB:
		return 0, fail(field, "%q is larger than %dT", s, MaxSizeGiB/1024)
	}
	return int(n), nil
}

// TTL reads a lease: a Go duration of at least a minute in whole seconds
// ("90m", "8h"), or "0" (any zero duration) for no lease.
func TTL(field, s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fail(field, "%q is not a duration such as 90m or 8h (or 0 for no lease)", s)
	}
	if d < 0 || (d > 0 && d < time.Minute) {
		return 0, fail(field, "%q must be 0 (no lease) or at least 1m", s)
	}
	if d%time.Second != 0 {
		return 0, fail(field, "%q must be whole seconds", s)
	}
	return d, nil
}

// VMID reads a reference as a VMID: the canonical decimal form only, so that
// "0100" or "+100" is not VMID 100 (Proxmox VMIDs are 100-999999999).
func VMID(ref string) (int, bool) {
	if len(ref) < 3 || len(ref) > 9 || ref[0] < '1' || ref[0] > '9' || strings.Trim(ref, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(ref)
	return n, err == nil
}

// RefKind is what a reference (a CLI argument, an API path, a Terraform
// import id) stands for, by its shape: names can be neither all digits nor
// start with an id prefix, so no reference reads two ways. (The store's
// lookup lets an id-shaped reference that is no id still find a name given
// before that rule; digits are only ever a VMID.)
type RefKind int

// Reference kinds.
const (
	ByName RefKind = iota // anything else
	ByID                  // starts with an id prefix: sbx-, ws-, ses-, job-
	ByVMID                // all digits
)

// KindOf classifies a reference.
func KindOf(ref string) RefKind {
	for _, p := range IDPrefixes {
		if strings.HasPrefix(ref, p) {
			return ByID
		}
	}
	if ref != "" && strings.Trim(ref, "0123456789") == "" {
		return ByVMID
	}
	return ByName
}
