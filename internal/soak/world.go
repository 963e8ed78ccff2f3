package soak

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// World is everything the invariants look at, read after the run: the
// simulator's ground truth next to what agentd's API says.
type World struct {
	Sim        *pvesim.State
	Sandboxes  []api.Sandbox // including DESTROYED rows
	Workspaces []api.Workspace
	Sessions   []api.Session
	Profiles   map[string]api.Profile
	// Firewall of every VM a RUNNING or STOPPED sandbox row names.
	Firewall map[int]Firewall
	// Snippets: which sandbox ids have their cloud-init snippet on disk.
	Snippets map[string]bool
	// Files of every live workspace, by id (I4).
	Files map[string]WorkspaceFiles
	// Foreign are the VMs agentd did not create (the template, planted VMs,
	// nextid racers) as they were when the harness last knew them.
	Foreign map[int]pvesim.VMState
	// Nodes of the simulated cluster, agentd's own node first; Online is
	// which answered at the end (all of them, after the settle).
	Nodes  []string
	Online map[string]bool
	// SnippetsStorage is the storage agentd's cicustom names.
	SnippetsStorage string
	// Probes are the checks made while a node was offline (I10).
	Probes  []NodeProbe
	Records []Record // every operation of the run (I7)
	// QuietSince is when the last operation ended; Now when the world was read.
	QuietSince, Now time.Time
	ProvTimeout     time.Duration
	OpTimeout       time.Duration
}

// Firewall is a VM's firewall as Proxmox reports it.
type Firewall struct {
	Rules   []pve.FwRule
	Options map[string]any
	Err     string
}

// Gather reads the world from the simulator and agentd.
func Gather(ctx context.Context, e *Env, foreign map[int]pvesim.VMState) (*World, error) {
	w := &World{Foreign: foreign, Firewall: map[int]Firewall{}, Snippets: map[string]bool{},
		Files: map[string]WorkspaceFiles{}, Profiles: map[string]api.Profile{}, Now: time.Now(), ProvTimeout: e.ProvTime,
		Nodes: e.Nodes, SnippetsStorage: "local"}
	if len(e.Nodes) > 1 {
		w.SnippetsStorage = pvesim.SharedStorageID
	}
	var err error
	if w.Sandboxes, err = e.Client.Sandboxes(ctx, url.Values{"all": {"true"}, "pooled": {"true"}}); err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	if w.Workspaces, err = e.Client.Workspaces(ctx); err != nil {
		return nil, fmt.Errorf("list workspaces: %w", err)
	}
	if w.Sessions, err = e.Client.Sessions(ctx); err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	ps, err := e.Client.Profiles(ctx)
	if err != nil {
		return nil, fmt.Errorf("list profiles: %w", err)
	}
	for _, p := range ps {
		w.Profiles[p.Name] = p
	}
	// The simulator is read after agentd: a VM agentd removes in between
	// shows as missing (a finding), never as an orphan that is not there.
	if w.Sim, err = e.Sim.State(ctx); err != nil {
		return nil, err
	}
	for _, sb := range w.Sandboxes {
		if sb.State != api.StateRunning && sb.State != api.StateStopped {
			continue
		}
		_, err := os.Stat(filepath.Join(e.SnippetsDir(), "agentlab-"+sb.ID+".yaml"))
		w.Snippets[sb.ID] = err == nil
		v, ok := w.Sim.VMs[sb.VMID]
		if !ok || sb.VMID == 0 {
			continue
		}
		// The firewall is read on the VM's node: PVE finds a VM's config
		// only on the node that holds it.
		rules, opts, err := e.PVE.On(v.Node).VMFirewallRules(ctx, sb.VMID)
		fw := Firewall{Rules: rules, Options: opts}
		if err != nil {
			fw.Err = err.Error()
		}
		w.Firewall[sb.VMID] = fw
	}
	for _, ws := range w.Workspaces {
		wf := WorkspaceFiles{ID: ws.ID, Name: ws.Name}
		vol := holderVolume(w.Sim, ws.HolderVMID)
		if _, ok := w.Sim.VMs[ws.HolderVMID]; !ok {
			wf.Err = fmt.Sprintf("holder VM %d does not exist", ws.HolderVMID)
		} else if vol == "" {
			wf.Err = fmt.Sprintf("holder VM %d has no scsi0", ws.HolderVMID)
		} else if wf.Files, err = e.Sim.Files(ctx, vol); err != nil {
			wf.Err = err.Error()
		} else if wf.Files == nil {
			wf.Files = map[string]string{}
		}
		w.Files[ws.ID] = wf
	}
	w.Online = map[string]bool{}
	for _, n := range e.Nodes {
		w.Online[n] = true
	}
	for _, n := range w.Sim.Offline {
		w.Online[n] = false
	}
	return w, nil
}

// volumeOf is the volid in a drive string ("local-lvm:vm-1-disk-0,size=8G").
func volumeOf(drive string) string { return strings.SplitN(drive, ",", 2)[0] }

func holderVolume(st *pvesim.State, holder int) string {
	v, ok := st.VMs[holder]
	if !ok {
		return ""
	}
	return volumeOf(v.Config["scsi0"])
}

func isDiskKey(k string) bool {
	for _, p := range []string{"scsi", "virtio", "sata", "ide", "unused", "efidisk", "tpmstate"} {
		if rest, ok := strings.CutPrefix(k, p); ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
			return true
		}
	}
	return false
}

// references maps each volume to the VMs whose config names it without owning it.
func references(st *pvesim.State) map[string][]int {
	out := map[string][]int{}
	for id, v := range st.VMs {
		for k, val := range v.Config {
			if !isDiskKey(k) || strings.Contains(val, "media=cdrom") {
				continue
			}
			vol := volumeOf(val)
			info, ok := st.Volumes[vol]
			if !ok || info.Owner == id {
				continue
			}
			out[vol] = append(out[vol], id)
		}
	}
	for _, ids := range out {
		sort.Ints(ids)
	}
	return out
}

func hasTag(cfg map[string]string, tag string) bool {
	for _, t := range strings.FieldsFunc(cfg["tags"], func(r rune) bool { return r == ';' || r == ',' || r == ' ' }) {
		if t == tag {
			return true
		}
	}
	return false
}

// describeVM names a VM for a report line.
func describeVM(id int, v pvesim.VMState) string {
	s := fmt.Sprintf("VM %d", id)
	if n := v.Config["name"]; n != "" {
		s += " (" + n + ")"
	}
	tags := v.Config["tags"]
	if tags == "" {
		tags = "untagged"
	}
	s += " [" + tags
	if v.Running {
		s += ", running"
	}
	return s + "]"
}

// markerID extracts the id after a marker line in a description.
func markerID(desc, prefix string) string {
	desc, _ = url.QueryUnescape(desc) // PVE stores descriptions percent-encoded in some paths
	_, rest, ok := strings.Cut(desc, prefix)
	if !ok {
		return ""
	}
	return strings.TrimSpace(strings.SplitN(rest, "\n", 2)[0])
}
