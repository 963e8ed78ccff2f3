// Package hostcheck is `agentd host check`: a preflight of the Proxmox host
// and API, one result per prerequisite, each failure with its fix.
package hostcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/agentlab/terraform-provider-agentlab/internal/config"
	"github.com/agentlab/terraform-provider-agentlab/internal/profile"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
)

// Status of one check.
type Status string

// Statuses.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Result is one checked prerequisite.
type Result struct {
	Check  string `json:"check"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Host abstracts the local machine (real paths in production, a temp dir in tests).
type Host struct {
	Root     string // prefix for /sys and /proc; "" is the real root
	LookPath func(string) (string, error)
	// Nft runs nft (tests replace it); nil runs the real one.
	Nft func(ctx context.Context, args ...string) (string, error)
	// Dial reaches the resolver on the agent bridge; nil dials for real.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (h Host) read(p string) (string, error) {
	b, err := os.ReadFile(filepath.Join(h.Root, p))
	return strings.TrimSpace(string(b)), err
}

// Privileges agentd's token needs on "/".
var Privileges = []string{"VM.Allocate", "VM.Clone", "VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network",
	"VM.Config.Cloudinit", "VM.Config.Options", "VM.PowerMgmt", "VM.Audit", "VM.Monitor", "VM.Snapshot", "VM.Snapshot.Rollback",
	"Datastore.AllocateSpace", "Datastore.Audit", "Sys.Modify"}

// Run performs every check.
func Run(ctx context.Context, cfg *config.Config, profiles profile.Set, pc *pve.Client, h Host) []Result {
	if h.LookPath == nil {
		h.LookPath = exec.LookPath
	}
	var out []Result
	add := func(check string, st Status, detail, fix string) {
		out = append(out, Result{Check: check, Status: st, Detail: detail, Fix: fix})
	}
	if _, err := os.Stat(filepath.Join(h.Root, "/sys/class/net", cfg.AgentBridge)); err == nil {
		add("bridge", OK, cfg.AgentBridge+" exists", "")
	} else {
		add("bridge", Fail, cfg.AgentBridge+" does not exist",
			"add the stanza from `agentd host network render --interfaces` to /etc/network/interfaces, then `ifreload -a`")
	}
	if v, err := h.read("/proc/sys/net/ipv4/ip_forward"); err == nil && v == "1" {
		add("ip_forward", OK, "net.ipv4.ip_forward = 1", "")
	} else {
		add("ip_forward", Fail, "IPv4 forwarding is off: sandboxes cannot reach the internet",
			"echo net.ipv4.ip_forward=1 > /etc/sysctl.d/99-agentlab.conf && sysctl --system")
	}
	if _, err := h.LookPath("nft"); err == nil {
		add("nftables", OK, "nft is installed", "")
	} else {
		add("nftables", Fail, "nft is not installed: the isolation ruleset cannot be loaded", "apt install nftables")
	}
	if _, err := h.LookPath("conntrack"); err == nil {
		add("conntrack", OK, "conntrack is installed", "")
	} else {
		add("conntrack", Warn, "conntrack is not installed: idle auto-stop cannot see SSH sessions and stops nothing", "apt install conntrack")
	}
	if fi, err := os.Stat(cfg.SnippetsDir); err == nil && fi.IsDir() {
		add("snippets_dir", OK, cfg.SnippetsDir+" exists", "")
	} else {
		add("snippets_dir", Fail, cfg.SnippetsDir+" does not exist", "mkdir -p "+cfg.SnippetsDir)
	}
	network(ctx, cfg, pc, h, add)
	perms, err := pc.Permissions(ctx)
	if err != nil {
		add("proxmox_api", Fail, err.Error(), "check proxmox_url, proxmox_token_id, the secret file and proxmox_ca_file (agentd config check)")
		return out
	}
	add("proxmox_api", OK, "the API answers with the configured token", "")
	var missing []string
	for _, p := range Privileges {
		if !perms[p] {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		add("token_privileges", OK, "the token has every privilege agentd needs on /", "")
	} else {
		add("token_privileges", Fail, "the token lacks "+strings.Join(missing, ", "),
			"grant a role with these privileges to the token on / (pveum acl modify / -token '"+cfg.ProxmoxTokenID+"' -role …), or turn off privilege separation")
	}
	storages, err := pc.Storages(ctx)
	if err != nil {
		add("storages", Fail, err.Error(), "")
		return out
	}
	types := map[string]string{}
	for _, s := range storages {
		types[s.Storage] = s.Type
		if s.Storage == cfg.SnippetsStorage {
			if strings.Contains(s.Content, "snippets") {
				add("snippets_storage", OK, fmt.Sprintf("%s has the snippets content type", s.Storage), "")
			} else {
				add("snippets_storage", Fail, fmt.Sprintf("%s does not allow snippets (content: %s)", s.Storage, s.Content),
					"pvesm set "+s.Storage+" --content "+s.Content+",snippets")
			}
		}
	}
	if _, ok := types[cfg.SnippetsStorage]; !ok {
		add("snippets_storage", Fail, "storage "+cfg.SnippetsStorage+" does not exist on node "+pc.Node(), "set snippets_storage to a dir storage such as local")
	}
	if _, ok := types[cfg.WorkspaceStorage]; ok {
		add("workspace_storage", OK, fmt.Sprintf("%s (%s)", cfg.WorkspaceStorage, types[cfg.WorkspaceStorage]), "")
	} else {
		add("workspace_storage", Fail, "storage "+cfg.WorkspaceStorage+" does not exist", "set workspace_storage to an lvmthin or zfspool storage")
	}
	for _, st := range cfg.WorkspaceStorages {
		if _, ok := types[st]; ok {
			add("workspace_storages", OK, fmt.Sprintf("%s (%s)", st, types[st]), "")
		} else {
			add("workspace_storages", Fail, "storage "+st+" does not exist on node "+pc.Node(), "remove it from workspace_storages or create it")
		}
	}
	templates := map[int][]string{}
	var named map[string][]int // template name → VMIDs of that name on this node
	for _, n := range profiles.Names() {
		id := profiles[n].TemplateVMID
		if t := profiles[n].Template; t != "" {
			if named == nil {
				named = map[string][]int{}
				if vms, err := pc.Resources(ctx); err != nil {
					add("templates", Fail, err.Error(), "")
				} else {
					for _, r := range vms {
						if r.Template && r.Node == pc.Node() {
							named[r.Name] = append(named[r.Name], r.VMID)
						}
					}
				}
			}
			switch ids := named[t]; len(ids) {
			case 0:
				add(fmt.Sprintf("template %s (%s)", t, n), Fail, "no template of that name on node "+pc.Node(), "build it (examples/vm-template), or fix template in the profile")
				continue
			case 1:
				id = ids[0]
			default:
				add(fmt.Sprintf("template %s (%s)", t, n), Fail, fmt.Sprintf("templates %v on node %s all have that name", ids, pc.Node()), "rename all but one, or name the VMID under the profile's templates")
				continue
			}
		}
		templates[id] = append(templates[id], n)
	}
	ids := make([]int, 0, len(templates))
	for id := range templates {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		name := fmt.Sprintf("template %d (%s)", id, strings.Join(templates[id], ", "))
		cfgMap, err := pc.Config(ctx, id)
		if errors.Is(err, pve.ErrNotFound) {
			add(name, Fail, "VM does not exist", "build it (examples/vm-template) or fix template_vmid")
			continue
		}
		if err != nil {
			add(name, Fail, err.Error(), "")
			continue
		}
		var problems []string
		if t, _ := cfgMap["template"].(float64); t != 1 {
			problems = append(problems, "not a template (qm template "+fmt.Sprint(id)+")")
		}
		if a := fmt.Sprint(cfgMap["agent"]); !strings.HasPrefix(a, "1") && !strings.Contains(a, "enabled=1") {
			problems = append(problems, "guest agent not enabled (qm set "+fmt.Sprint(id)+" --agent enabled=1)")
		}
		hasCI := false
		for _, v := range cfgMap {
			if s, ok := v.(string); ok && strings.Contains(s, "cloudinit") {
				hasCI = true
			}
		}
		if !hasCI {
			problems = append(problems, "no cloud-init drive (qm set "+fmt.Sprint(id)+" --ide2 <storage>:cloudinit)")
		}
		disk := pve.DiskVolume(cfgMap, "scsi0")
		if st := strings.SplitN(disk, ":", 2)[0]; disk != "" {
			switch types[st] {
			case "lvmthin", "zfspool", "dir", "nfs", "cifs", "rbd", "btrfs":
			default:
				problems = append(problems, fmt.Sprintf("its disk is on %s (%s), which cannot make linked clones; use storage.clone: full or move the disk", st, types[st]))
			}
		}
		if len(problems) == 0 {
			add(name, OK, "template with cloud-init and the guest agent, on a storage that can link-clone", "")
		} else {
			add(name, Fail, strings.Join(problems, "; "), "fix the template as described")
		}
	}
	return out
}
