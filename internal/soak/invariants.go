package soak

import (
	"cmp"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// Violation is one broken invariant, naming the objects at fault.
type Violation struct {
	Inv    string // I1..I9
	Object string
	Detail string
}

func (v Violation) String() string { return v.Inv + " " + v.Object + ": " + v.Detail }

// Invariants names the checks in report order.
var Invariants = []struct{ ID, Title string }{
	{"I1", "no orphan VM"},
	{"I2", "no phantom row"},
	{"I3", "nothing stuck in a transitional state"},
	{"I4", "acknowledged workspace writes readable"},
	{"I5", "volumes referenced once; DB attachments = VM configs"},
	{"I6", "VMs agentd did not create untouched"},
	{"I7", "failures answered 4xx/5xx with a cause, none hung"},
	{"I8", "live sandbox VMs carry agentd's full configuration"},
	{"I9", "warm pool: no VM both pooled and claimed, members hold no lease"},
	{"I10", "node loss: LOST, kept, settled; rows' node = VM's"},
}

// Check runs every invariant on w; the model supplies I4.
func Check(w *World, m *Model) []Violation {
	var out []Violation
	out = append(out, CheckI1(w)...)
	out = append(out, CheckI2(w)...)
	out = append(out, CheckI3(w)...)
	if m != nil {
		out = append(out, m.Check(w.Files)...)
	}
	out = append(out, CheckI5(w)...)
	out = append(out, CheckI6(w)...)
	out = append(out, CheckI7(w.Records, w.OpTimeout)...)
	out = append(out, CheckI8(w)...)
	out = append(out, CheckI9(w)...)
	out = append(out, CheckI10(w)...)
	return out
}

// poolMarker is the description line of an unclaimed warm-pool member.
const poolMarker = "agentlab-pool: "

// CheckI9: a POOLED row is an unclaimed member (named after its id, no
// lease) whose running VM carries the pool marker and belongs to no other
// live row; a claimed sandbox's VM no longer carries the marker.
func CheckI9(w *World) []Violation {
	var out []Violation
	byVM := map[int][]string{}
	for _, sb := range w.Sandboxes {
		if sb.State != api.StateDestroyed && sb.VMID != 0 {
			byVM[sb.VMID] = append(byVM[sb.VMID], sb.Name+"/"+string(sb.State))
		}
	}
	for _, sb := range w.Sandboxes {
		obj := fmt.Sprintf("sandbox %s (%s, %s, VM %d)", sb.Name, sb.ID, sb.State, sb.VMID)
		v, ok := w.Sim.VMs[sb.VMID]
		switch {
		case sb.State == api.StatePooled:
			switch {
			case sb.Name != sb.ID || sb.LeaseExpiresAt != nil:
				out = append(out, Violation{"I9", obj, "a pooled row with a user's name or a lease"})
			case len(byVM[sb.VMID]) > 1:
				out = append(out, Violation{"I9", obj, "its VM also belongs to " + strings.Join(byVM[sb.VMID], ", ")})
			case !ok:
				out = append(out, Violation{"I9", obj, "its VM does not exist"})
			case !strings.Contains(v.Config["description"], poolMarker+sb.Profile):
				out = append(out, Violation{"I9", obj, "its VM lacks the pool marker: a claimed VM went back to the pool"})
			case !v.Running:
				out = append(out, Violation{"I9", obj, "its VM is not running"})
			}
		case (sb.State == api.StateRunning || sb.State == api.StateStopped) && ok &&
			markerID(v.Config["description"], "agentlab-sandbox-id: ") == sb.ID && strings.Contains(v.Config["description"], poolMarker):
			out = append(out, Violation{"I9", obj, "a claimed sandbox's VM still carries the pool marker"})
		case (sb.State == api.StateRunning || sb.State == api.StateStopped) && ok &&
			markerID(v.Config["description"], "agentlab-sandbox-id: ") == sb.ID && hasPoolTag(v.Config["tags"]):
			// A rollback to a clean snapshot taken while the VM was a member
			// restores the member's tags (PVE keeps only the description).
			out = append(out, Violation{"I9", obj, "a claimed sandbox's VM still carries the pool tag"})
		}
	}
	return out
}

func hasPoolTag(tags string) bool {
	for _, t := range strings.FieldsFunc(tags, func(r rune) bool { return r == ';' || r == ',' || r == ' ' }) {
		if t == "agentlab-pool" {
			return true
		}
	}
	return false
}

func (w *World) vmIDs() []int {
	ids := make([]int, 0, len(w.Sim.VMs))
	for id := range w.Sim.VMs {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	return ids
}

func (w *World) sandboxByID(id string) *api.Sandbox {
	for i := range w.Sandboxes {
		if w.Sandboxes[i].ID == id {
			return &w.Sandboxes[i]
		}
	}
	return nil
}

// liveSandbox finds the non-DESTROYED row of a name (names are unique among live rows).
func (w *World) liveSandbox(name string) *api.Sandbox {
	for i := range w.Sandboxes {
		if w.Sandboxes[i].Name == name && w.Sandboxes[i].State != api.StateDestroyed {
			return &w.Sandboxes[i]
		}
	}
	return nil
}

func (w *World) workspaceByName(name string) *api.Workspace {
	for i := range w.Workspaces {
		if w.Workspaces[i].Name == name {
			return &w.Workspaces[i]
		}
	}
	return nil
}

// CheckI1: every VM agentd made is a live sandbox's or a live workspace's
// holder. The simulator's only other clients are the harness itself, so every
// VM outside Foreign is agentd's, tagged or not.
func CheckI1(w *World) []Violation {
	var out []Violation
	for _, id := range w.vmIDs() {
		if _, ok := w.Foreign[id]; ok {
			continue
		}
		v := w.Sim.VMs[id]
		desc := v.Config["description"]
		accounted := false
		for _, sb := range w.Sandboxes {
			if sb.VMID == id && sb.State != api.StateDestroyed && markerID(desc, "agentlab-sandbox-id: ") == sb.ID {
				accounted = true
			}
		}
		for _, ws := range w.Workspaces {
			if ws.HolderVMID == id && markerID(desc, "agentlab-workspace-id: ") == ws.ID {
				accounted = true
			}
		}
		if accounted {
			continue
		}
		why := "no description marker: nothing can prove it is agentd's"
		if sid := markerID(desc, "agentlab-sandbox-id: "); sid != "" {
			why = "names sandbox " + sid
			if sb := w.sandboxByID(sid); sb == nil {
				why += ", which has no row"
			} else {
				why += fmt.Sprintf(" (%s), whose row is %s with VMID %d", sb.Name, sb.State, sb.VMID)
				if sb.Error != "" {
					why += ": " + sb.Error
				}
			}
		} else if wid := markerID(desc, "agentlab-workspace-id: "); wid != "" {
			why = "holder of workspace " + wid + ", which is not live"
		}
		out = append(out, Violation{"I1", describeVM(id, v), why})
	}
	return out
}

// CheckI2: RUNNING/STOPPED rows have their VM in that power state; sessions
// point at live sandboxes or none; READY workspaces have their holder.
func CheckI2(w *World) []Violation {
	var out []Violation
	for _, sb := range w.Sandboxes {
		if sb.State != api.StateRunning && sb.State != api.StateStopped {
			continue
		}
		obj := fmt.Sprintf("sandbox %s (%s, %s, VM %d)", sb.Name, sb.ID, sb.State, sb.VMID)
		v, ok := w.Sim.VMs[sb.VMID]
		switch {
		case !ok:
			out = append(out, Violation{"I2", obj, "its VM does not exist"})
		case markerID(v.Config["description"], "agentlab-sandbox-id: ") != sb.ID:
			out = append(out, Violation{"I2", obj, "the VM at its VMID is not this sandbox's (description names " +
				strconv.Quote(markerID(v.Config["description"], "agentlab-sandbox-id: ")) + ")"})
		case sb.State == api.StateRunning && !v.Running:
			out = append(out, Violation{"I2", obj, "row says RUNNING, the VM is stopped"})
		case sb.State == api.StateStopped && v.Running:
			out = append(out, Violation{"I2", obj, "row says STOPPED, the VM is running"})
		}
	}
	for _, x := range w.Sessions {
		if x.Sandbox == "" {
			continue
		}
		if sb := w.liveSandbox(x.Sandbox); sb == nil {
			out = append(out, Violation{"I2", "session " + x.Name, "points at sandbox " + x.Sandbox + ", which is not live"})
		}
		if ws := w.workspaceByName(x.Workspace); ws == nil {
			out = append(out, Violation{"I2", "session " + x.Name, "its workspace " + x.Workspace + " is not live"})
		}
	}
	for _, ws := range w.Workspaces {
		if ws.State != "READY" {
			continue
		}
		obj := fmt.Sprintf("workspace %s (%s, holder %d)", ws.Name, ws.ID, ws.HolderVMID)
		v, ok := w.Sim.VMs[ws.HolderVMID]
		switch {
		case !ok:
			out = append(out, Violation{"I2", obj, "its holder VM does not exist"})
		case markerID(v.Config["description"], "agentlab-workspace-id: ") != ws.ID:
			out = append(out, Violation{"I2", obj, "the VM at its holder VMID is not its holder"})
		case holderVolume(w.Sim, ws.HolderVMID) == "":
			out = append(out, Violation{"I2", obj, "the holder has no volume (scsi0)"})
		}
	}
	return out
}

// CheckI3: nothing may still be in flight. The settle phase has waited up to
// provisioning_timeout (and a margin) after the last operation for
// everything to settle, so whatever is still transitional is stuck.
func CheckI3(w *World) []Violation {
	var out []Violation
	idle := w.Now.Sub(w.QuietSince).Round(100_000_000)
	for _, sb := range w.Sandboxes {
		if sb.State.InFlight() {
			out = append(out, Violation{"I3", fmt.Sprintf("sandbox %s (%s, VM %d)", sb.Name, sb.ID, sb.VMID),
				fmt.Sprintf("%s at step %q %s after the last operation (provisioning_timeout %s); error %q", sb.State, sb.Step, idle, w.ProvTimeout, sb.Error)})
		}
	}
	for _, ws := range w.Workspaces {
		if ws.State != "READY" {
			out = append(out, Violation{"I3", fmt.Sprintf("workspace %s (%s)", ws.Name, ws.ID),
				fmt.Sprintf("%s %s after the last operation; error %q", ws.State, idle, ws.Error)})
		}
	}
	return out
}

// CheckI5: no volume is referenced by two VMs, and agentd's attachments are
// exactly the VMs' configs.
func CheckI5(w *World) []Violation {
	var out []Violation
	refs := references(w.Sim)
	vols := make([]string, 0, len(refs))
	for v := range refs {
		vols = append(vols, v)
	}
	sort.Strings(vols)
	for _, vol := range vols {
		if ids := refs[vol]; len(ids) > 1 {
			out = append(out, Violation{"I5", "volume " + vol, fmt.Sprintf("referenced by VMs %v (owner %d)", ids, w.Sim.Volumes[vol].Owner)})
		}
	}
	holderOf := map[string]*api.Workspace{}
	for i := range w.Workspaces {
		ws := &w.Workspaces[i]
		vol := holderVolume(w.Sim, ws.HolderVMID)
		if vol != "" {
			holderOf[vol] = ws
		}
		if ws.AttachedSandbox == "" {
			continue
		}
		obj := "workspace " + ws.Name
		sb := w.liveSandbox(ws.AttachedSandbox)
		if sb == nil {
			out = append(out, Violation{"I5", obj, "DB says attached to sandbox " + ws.AttachedSandbox + ", which is not live"})
			continue
		}
		v, ok := w.Sim.VMs[sb.VMID]
		if !ok {
			// A claim on a sandbox without a VM blocks the workspace for good.
			out = append(out, Violation{"I5", obj, fmt.Sprintf("DB says attached to %s (%s, VM %d), which has no VM", sb.Name, sb.State, sb.VMID)})
			continue
		}
		if got := volumeOf(v.Config["scsi1"]); vol == "" || got != vol {
			out = append(out, Violation{"I5", obj, fmt.Sprintf("DB says attached to %s (%s), but VM %d's scsi1 is %q, not the holder's volume %q",
				sb.Name, sb.State, sb.VMID, v.Config["scsi1"], vol)})
		}
	}
	for _, vol := range vols {
		ws := holderOf[vol]
		if ws == nil {
			continue
		}
		for _, id := range refs[vol] {
			sbName := "no sandbox row"
			ok := false
			for _, sb := range w.Sandboxes {
				if sb.VMID == id && sb.State != api.StateDestroyed {
					sbName = sb.Name
					ok = ws.AttachedSandbox == sb.Name
				}
			}
			if !ok {
				out = append(out, Violation{"I5", "workspace " + ws.Name, fmt.Sprintf("VM %d (%s) references its volume %s, the DB says attached to %q",
					id, sbName, vol, ws.AttachedSandbox)})
			}
		}
	}
	for _, sb := range w.Sandboxes {
		if sb.State == api.StateDestroyed || sb.Workspace == "" {
			continue
		}
		// A LOST row gives up its claim when the VM at its VMID (not ours)
		// does not reference the volume: agentd promises only to leave that
		// VM alone, and a claim guarding nothing would lock the workspace.
		// The checks above still catch a claim the VM contradicts.
		if sb.State == api.StateLost {
			continue
		}
		if ws := w.workspaceByName(sb.Workspace); ws == nil || ws.AttachedSandbox != sb.Name {
			att := "(workspace not live)"
			if ws != nil {
				att = strconv.Quote(ws.AttachedSandbox)
			}
			out = append(out, Violation{"I5", "sandbox " + sb.Name, fmt.Sprintf("row (%s) names workspace %s, whose row says attached to %s", sb.State, sb.Workspace, att)})
		}
	}
	return out
}

// CheckI6: VMs agentd did not create still exist with the same config and power state.
func CheckI6(w *World) []Violation {
	ids := make([]int, 0, len(w.Foreign))
	for id := range w.Foreign {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	var out []Violation
	for _, id := range ids {
		was := w.Foreign[id]
		now, ok := w.Sim.VMs[id]
		if !ok {
			out = append(out, Violation{"I6", describeVM(id, was), "was destroyed"})
			continue
		}
		if d := configDiff(was.Config, now.Config); d != "" {
			out = append(out, Violation{"I6", describeVM(id, was), "config changed: " + d})
		}
		if was.Running != now.Running {
			out = append(out, Violation{"I6", describeVM(id, was), fmt.Sprintf("power state changed (running %v → %v)", was.Running, now.Running)})
		}
	}
	return out
}

func configDiff(a, b map[string]string) string {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var diffs []string
	for k := range keys {
		if a[k] != b[k] {
			diffs = append(diffs, fmt.Sprintf("%s %q → %q", k, a[k], b[k]))
		}
	}
	sort.Strings(diffs)
	return strings.Join(diffs, "; ")
}

// CheckI8: every RUNNING or STOPPED sandbox's VM carries what provisioning
// writes: tag, description marker, cicustom snippet (present on disk), NIC on
// the profile's bridge behind the firewall, the firewall group, cores, memory,
// the grown root disk and its workspace.
func CheckI8(w *World) []Violation {
	var out []Violation
	for _, sb := range w.Sandboxes {
		if sb.State != api.StateRunning && sb.State != api.StateStopped {
			continue
		}
		v, ok := w.Sim.VMs[sb.VMID]
		if !ok || markerID(v.Config["description"], "agentlab-sandbox-id: ") != sb.ID {
			continue // I2's finding
		}
		c := v.Config
		p := w.Profiles[sb.Profile]
		var miss []string
		if !hasTag(c, "agentlab") {
			miss = append(miss, fmt.Sprintf("tag agentlab (tags %q)", c["tags"]))
		}
		if want := "user=" + cmp.Or(w.SnippetsStorage, "local") + ":snippets/agentlab-" + sb.ID + ".yaml"; c["cicustom"] != want {
			miss = append(miss, fmt.Sprintf("cicustom %q (have %q)", want, c["cicustom"]))
		} else if !w.Snippets[sb.ID] {
			miss = append(miss, "the cicustom snippet file")
		}
		if p.Bridge != "" && !strings.Contains(c["net0"], "bridge="+p.Bridge) || !strings.Contains(c["net0"], "firewall=1") {
			miss = append(miss, fmt.Sprintf("net0 on %s with firewall=1 (have %q)", p.Bridge, c["net0"]))
		}
		if p.Cores > 0 && c["cores"] != strconv.Itoa(p.Cores) {
			miss = append(miss, fmt.Sprintf("cores %d (have %q)", p.Cores, c["cores"]))
		}
		if p.MemoryMB > 0 && c["memory"] != strconv.Itoa(p.MemoryMB) {
			miss = append(miss, fmt.Sprintf("memory %d (have %q)", p.MemoryMB, c["memory"]))
		}
		if p.RootSizeGB > 0 {
			if gb := sizeGB(c["scsi0"]); gb < p.RootSizeGB {
				miss = append(miss, fmt.Sprintf("root disk ≥ %d GiB (scsi0 %q)", p.RootSizeGB, c["scsi0"]))
			}
		}
		fw, ok := w.Firewall[sb.VMID]
		switch {
		case !ok || fw.Err != "":
			miss = append(miss, "readable firewall ("+fw.Err+")")
		default:
			group := false
			for _, r := range fw.Rules {
				group = group || r.Type == "group"
			}
			if !group {
				miss = append(miss, "the firewall group rule")
			}
			if fmt.Sprint(fw.Options["enable"]) != "1" {
				miss = append(miss, "firewall enabled")
			}
		}
		if sb.Workspace != "" {
			ws := w.workspaceByName(sb.Workspace)
			if ws == nil || volumeOf(c["scsi1"]) != holderVolume(w.Sim, ws.HolderVMID) {
				miss = append(miss, fmt.Sprintf("workspace %s as scsi1 (have %q)", sb.Workspace, c["scsi1"]))
			}
		}
		if len(miss) > 0 {
			out = append(out, Violation{"I8", fmt.Sprintf("sandbox %s (%s, %s, VM %d)", sb.Name, sb.ID, sb.State, sb.VMID),
				"VM lacks " + strings.Join(miss, "; ")})
		}
	}
	return out
}

// sizeGB reads size=… of a drive string in GiB.
func sizeGB(drive string) int {
	for _, part := range strings.Split(drive, ",") {
		v, ok := strings.CutPrefix(part, "size=")
		if !ok || v == "" {
			continue
		}
		n, _ := strconv.Atoi(strings.TrimRight(v, "KMGT"))
		switch v[len(v)-1] {
		case 'T':
			return n * 1024
		case 'G':
			return n
		case 'M':
			return n / 1024
		case 'K':
			return n / (1024 * 1024)
		}
		return n >> 30
	}
	return 0
}

// foreignState copies a VM's dump entry (configs are maps: the copy must not alias).
func foreignState(v pvesim.VMState) pvesim.VMState {
	c := make(map[string]string, len(v.Config))
	for k, val := range v.Config {
		c[k] = val
	}
	v.Config = c
	return v
}
