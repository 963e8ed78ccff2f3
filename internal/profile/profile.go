// Package profile loads sandbox profiles: named templates of VM size, network
// and lifecycle behaviour, one or more YAML documents per file.
package profile

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/strictyaml"
	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

// Defaults are the profiles shipped with agentd (used by `agentd dev` and
// installed into /etc/agentd/profiles by the package).
//
//go:embed defaults/*.yaml
var Defaults embed.FS

// Profile is one sandbox profile.
type Profile struct {
	Name         string `yaml:"name"`
	Description  string `yaml:"description"`
	TemplateVMID int    `yaml:"template_vmid"`
	// Template names the template instead of template_vmid: on each node
	// the template of that name there is cloned (a linked clone needs it on
	// the node it is made on).
	Template  string    `yaml:"template"`
	Resources Resources `yaml:"resources"`
	Storage   Storage   `yaml:"storage"`
	Network   Network   `yaml:"network"`
	Behavior  Behavior  `yaml:"behavior"`
	Secrets   Secrets   `yaml:"secrets"`
	// Pool keeps booted, unassigned VMs of this profile ready (nil: none).
	Pool *Pool `yaml:"pool"`
	// Teams may use the profile; empty: every team.
	Teams []string `yaml:"teams"`
	// Templates names the template on other cluster nodes (node → VMID):
	// a linked clone needs its template on the node it is made on.
	// template_vmid is used on the node it lives on.
	Templates map[string]int `yaml:"templates"`

	Source string `yaml:"-"` // file it came from
}

// Resources sizes the VM.
type Resources struct {
	Cores    int `yaml:"cores"`
	MemoryMB int `yaml:"memory_mb"`
	Balloon  int `yaml:"balloon"` // MiB; 0 leaves ballooning off
}

// Storage describes the root disk.
type Storage struct {
	RootSizeGB int    `yaml:"root_size_gb"` // grow the template's disk to this; 0 keeps it
	Clone      string `yaml:"clone"`        // linked (default) | full
	Storage    string `yaml:"storage"`      // target storage of a full clone
}

// Network describes the sandbox NIC.
type Network struct {
	Bridge string `yaml:"bridge"` // default: agent_bridge from the config
	Model  string `yaml:"model"`  // virtio (default) | e1000 | vmxnet3
	Mode   string `yaml:"mode"`   // off | nat (default) | allowlist
	// Allowlist entries for mode allowlist: "CIDR" or "CIDR:port" (TCP).
	Allowlist []string `yaml:"allowlist"`
}

// Allow is one parsed allowlist entry (Port 0: any).
type Allow struct {
	Prefix netip.Prefix
	Port   int
}

// ParseAllow parses "203.0.113.0/24:443", "198.51.100.7" or "198.51.100.7:22".
func ParseAllow(s string) (Allow, error) {
	addr, port := s, 0
	if i := strings.LastIndex(s, ":"); i > 0 && !strings.Contains(s[:i], ":") {
		n, err := strconv.Atoi(s[i+1:])
		if err != nil || n < 1 || n > 65535 {
			return Allow{}, fmt.Errorf("%q: port must be 1-65535", s)
		}
		addr, port = s[:i], n
	}
	if !strings.Contains(addr, "/") {
		addr += "/32"
	}
	p, err := netip.ParsePrefix(addr)
	if err != nil || !p.Addr().Is4() {
		return Allow{}, fmt.Errorf("%q is not an IPv4 address or CIDR with an optional :port", s)
	}
	return Allow{Prefix: p.Masked(), Port: port}, nil
}

// Secrets selects what a profile's sandboxes receive at bootstrap.
type Secrets struct {
	Bundle string   `yaml:"bundle"` // "" delivers nothing
	Env    []string `yaml:"env"`    // env names to deliver; empty: all of the bundle's
}

// Behavior is the lifecycle policy.
type Behavior struct {
	TTLDefault time.Duration `yaml:"ttl_default"` // 0: no lease
	Keepalive  bool          `yaml:"keepalive"`
	// IdleStopMinutes overrides idle_stop_minutes_default; nil inherits, 0 disables.
	IdleStopMinutes  *int `yaml:"idle_stop_minutes_default"`
	RequireWorkspace bool `yaml:"require_workspace"`
	// MaxTTL replaces the config's max_ttl for this profile (0 inherits).
	MaxTTL time.Duration `yaml:"max_ttl"`
	// MaxSandboxes replaces max_sandboxes_per_profile (0 inherits).
	MaxSandboxes int `yaml:"max_sandboxes"`
	// CleanSnapshot (nil: true) takes the disk-only snapshot "clean" before
	// the first boot, which sandbox revert rolls back to.
	CleanSnapshot *bool `yaml:"clean_snapshot"`
	// IdleAction is what idle stop does: stop (default) or hibernate.
	IdleAction string `yaml:"idle_action"`
	// OnNodeLost is what happens to a sandbox whose node goes offline: keep
	// (default: LOST until the node is back) or recreate (a replacement of
	// the same name elsewhere; the old VM is destroyed when its node is
	// back).
	OnNodeLost string `yaml:"on_node_lost"`
}

// Values of behavior.on_node_lost.
const (
	NodeLostKeep     = "keep"
	NodeLostRecreate = "recreate"
)

// Idle actions of behavior.idle_action.
const (
	IdleStop      = "stop"
	IdleHibernate = "hibernate"
)

// TakesCleanSnapshot reports behavior.clean_snapshot (default on).
func (b Behavior) TakesCleanSnapshot() bool { return b.CleanSnapshot == nil || *b.CleanSnapshot }

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// validate checks one profile and fills defaults.
func (p *Profile) validate(bridge string) error {
	if !nameRE.MatchString(p.Name) {
		return fmt.Errorf("name: %q must be lowercase letters, digits and dashes (1-63, not starting with a dash)", p.Name)
	}
	for i, t := range p.Teams {
		if err := auth.ValidTeam(t); err != nil {
			return fmt.Errorf("teams[%d]: %v", i, err)
		}
	}
	switch {
	case p.Template != "" && p.TemplateVMID != 0:
		return fmt.Errorf("template, template_vmid: give one of them, not both (template %q, template_vmid %d)", p.Template, p.TemplateVMID)
	case p.Template != "":
		if !validate.VMName(p.Template) {
			return fmt.Errorf("template: %q is not a Proxmox VM name (letters, digits, dashes and dots, as qm set --name takes)", p.Template)
		}
	case p.TemplateVMID < 100 || p.TemplateVMID > 999999999:
		return fmt.Errorf("template_vmid: must be a VMID between 100 and 999999999 (or give the template's name as template), got %d", p.TemplateVMID)
	}
	for node, id := range p.Templates {
		if id < 100 || id > 999999999 {
			return fmt.Errorf("templates.%s: must be a VMID between 100 and 999999999, got %d", node, id)
		}
	}
	if p.Resources.Cores == 0 {
		p.Resources.Cores = 2
	}
	if p.Resources.Cores < 1 || p.Resources.Cores > 128 {
		return fmt.Errorf("resources.cores: must be between 1 and 128, got %d", p.Resources.Cores)
	}
	if p.Resources.MemoryMB == 0 {
		p.Resources.MemoryMB = 2048
	}
	if p.Resources.MemoryMB < 256 {
		return fmt.Errorf("resources.memory_mb: must be at least 256, got %d", p.Resources.MemoryMB)
	}
	if p.Resources.Balloon < 0 || p.Resources.Balloon > p.Resources.MemoryMB {
		return fmt.Errorf("resources.balloon: must be between 0 and memory_mb (%d), got %d", p.Resources.MemoryMB, p.Resources.Balloon)
	}
	if p.Storage.RootSizeGB < 0 || p.Storage.RootSizeGB > 65536 {
		return fmt.Errorf("storage.root_size_gb: must be between 0 and 65536, got %d", p.Storage.RootSizeGB)
	}
	switch p.Storage.Clone {
	case "":
		p.Storage.Clone = "linked"
	case "linked", "full":
	default:
		return fmt.Errorf("storage.clone: must be linked or full, got %q", p.Storage.Clone)
	}
	if p.Storage.Storage != "" && p.Storage.Clone != "full" {
		return fmt.Errorf("storage.storage: only allowed with storage.clone: full (a linked clone lives on its template's storage)")
	}
	if p.Network.Bridge == "" {
		p.Network.Bridge = bridge
	}
	if !regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,15}$`).MatchString(p.Network.Bridge) {
		return fmt.Errorf("network.bridge: %q is not a bridge name such as vmbr1", p.Network.Bridge)
	}
	switch p.Network.Model {
	case "":
		p.Network.Model = "virtio"
	case "virtio", "e1000", "vmxnet3", "rtl8139":
	default:
		return fmt.Errorf("network.model: must be virtio, e1000, vmxnet3 or rtl8139, got %q", p.Network.Model)
	}
	switch p.Network.Mode {
	case "":
		p.Network.Mode = "nat"
	case "off", "nat", "allowlist":
	default:
		return fmt.Errorf("network.mode: must be off, nat or allowlist, got %q", p.Network.Mode)
	}
	if p.Network.Mode == "allowlist" && len(p.Network.Allowlist) == 0 {
		return fmt.Errorf("network.allowlist: mode allowlist needs at least one entry such as 203.0.113.0/24:443")
	}
	if p.Network.Mode != "allowlist" && len(p.Network.Allowlist) > 0 {
		return fmt.Errorf("network.allowlist: only used with network.mode: allowlist (mode is %s)", p.Network.Mode)
	}
	for i, a := range p.Network.Allowlist {
		if _, err := ParseAllow(a); err != nil {
			return fmt.Errorf("network.allowlist[%d]: %v", i, err)
		}
	}
	if p.Secrets.Bundle == "" && len(p.Secrets.Env) > 0 {
		return fmt.Errorf("secrets.env: needs secrets.bundle")
	}
	if b := p.Secrets.Bundle; b != "" && !regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`).MatchString(b) {
		return fmt.Errorf("secrets.bundle: %q is not a bundle name", b)
	}
	if d := p.Behavior.MaxTTL; d < 0 || d%time.Second != 0 || d > 0 && d < time.Minute {
		return fmt.Errorf("behavior.max_ttl: must be 0 (inherit max_ttl) or whole seconds of at least 1m, got %s", d)
	}
	if d := p.Behavior.MaxTTL; d > 0 && p.Behavior.TTLDefault > d {
		return fmt.Errorf("behavior.ttl_default: %s is longer than behavior.max_ttl %s", p.Behavior.TTLDefault, d)
	}
	if p.Behavior.MaxSandboxes < 0 {
		return fmt.Errorf("behavior.max_sandboxes: must be 0 (inherit max_sandboxes_per_profile) or more, got %d", p.Behavior.MaxSandboxes)
	}
	if m := p.Behavior.IdleStopMinutes; m != nil && *m < 0 {
		return fmt.Errorf("behavior.idle_stop_minutes_default: must be 0 (off) or more, got %d", *m)
	}
	switch p.Behavior.OnNodeLost {
	case "":
		p.Behavior.OnNodeLost = NodeLostKeep
	case NodeLostKeep, NodeLostRecreate:
	default:
		return fmt.Errorf("behavior.on_node_lost: must be %s or %s, got %q", NodeLostKeep, NodeLostRecreate, p.Behavior.OnNodeLost)
	}
	switch p.Behavior.IdleAction {
	case "":
		p.Behavior.IdleAction = IdleStop
	case IdleStop, IdleHibernate:
	default:
		return fmt.Errorf("behavior.idle_action: must be %s or %s, got %q", IdleStop, IdleHibernate, p.Behavior.IdleAction)
	}
	return p.Pool.validate()
}

// API converts to the wire type.
func (p *Profile) API() api.Profile {
	idle := -1
	if p.Behavior.IdleStopMinutes != nil {
		idle = *p.Behavior.IdleStopMinutes
	}
	return api.Profile{Name: p.Name, Description: p.Description, TemplateVMID: p.TemplateVMID, Template: p.Template,
		Cores: p.Resources.Cores, MemoryMB: p.Resources.MemoryMB, Balloon: p.Resources.Balloon,
		RootSizeGB: p.Storage.RootSizeGB, Storage: p.Storage.Storage, Clone: p.Storage.Clone,
		Bridge: p.Network.Bridge, NetworkMode: p.Network.Mode, TTLDefault: p.Behavior.TTLDefault.String(),
		Keepalive: p.Behavior.Keepalive, IdleStopMinutes: idle, WorkspaceRequired: p.Behavior.RequireWorkspace,
		MaxTTLSeconds: int64(p.Behavior.MaxTTL / time.Second), MaxSandboxes: p.Behavior.MaxSandboxes,
		CleanSnapshot: p.Behavior.TakesCleanSnapshot(), IdleAction: p.Behavior.IdleAction, Source: p.Source, Teams: p.Teams,
		OnNodeLost: p.Behavior.OnNodeLost}
}

// Allows reports whether team may use the profile.
func (p *Profile) Allows(team string) bool {
	return len(p.Teams) == 0 || slices.Contains(p.Teams, team)
}

// Set is the loaded profiles by name.
type Set map[string]*Profile

// Names lists profile names sorted.
func (s Set) Names() []string {
	out := make([]string, 0, len(s))
	for n := range s {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Parse reads every YAML document of one file.
func Parse(file string, data []byte, bridge string) ([]*Profile, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []*Profile
	for i := 1; ; i++ {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s", file, strings.TrimPrefix(err.Error(), "yaml: "))
		}
		if len(doc.Content) == 0 {
			continue
		}
		p := &Profile{Source: file}
		if err := strictyaml.DecodeNode(file, &doc, p); err != nil {
			return nil, err
		}
		if err := p.validate(bridge); err != nil {
			label := p.Name
			if label == "" {
				label = fmt.Sprintf("document %d", i)
			}
			return nil, fmt.Errorf("%s:%d: profile %s: %w", file, doc.Content[0].Line, label, err)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no profile in file", file)
	}
	return out, nil
}

// Load reads every *.yaml / *.yml file of fsys (sorted). It returns every
// problem at once, so an operator fixes all files in one go; a set with errors
// must not be used.
func Load(fsys fs.FS, dir, bridge string) (Set, error) {
	ents, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read profiles: %w", err)
	}
	set := Set{}
	var errs []error
	for _, e := range ents {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		file := filepath.Join(dir, e.Name())
		data, err := fs.ReadFile(fsys, filepath.ToSlash(filepath.Join(dir, e.Name())))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ps, err := Parse(file, data, bridge)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, p := range ps {
			if prev, dup := set[p.Name]; dup {
				errs = append(errs, fmt.Errorf("%s: profile %s: name already defined in %s", file, p.Name, prev.Source))
				continue
			}
			set[p.Name] = p
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("no profiles in %s (want *.yaml files)", dir)
	}
	return set, nil
}

// LoadDir loads profiles from a directory on disk.
func LoadDir(dir, bridge string) (Set, error) {
	set, err := Load(os.DirFS(dir), ".", bridge)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	for _, p := range set {
		p.Source = filepath.Join(dir, p.Source)
	}
	return set, nil
}

// LoadDefaults loads the shipped profiles.
func LoadDefaults(bridge string) (Set, error) {
	return Load(Defaults, "defaults", bridge)
}
