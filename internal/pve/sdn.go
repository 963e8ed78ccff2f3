package pve

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	proxmox "github.com/luthermonson/go-proxmox"
)

// SDNAlias is the alias of the VNet agentd creates: the proof that the VNet,
// and the zone that holds it, are agentd's (a VXLAN zone has no comment).
const SDNAlias = "agentlab managed by agentd"

// SDN is the VXLAN zone, VNet and subnet that carry the agent network across
// the cluster's nodes.
type SDN struct {
	Zone  string
	VNet  string
	Tag   int      // the VXLAN VNI
	MTU   int      // 0: Proxmox's default (the underlay's MTU - 50, else 1450)
	Peers []string // the nodes' underlay addresses
	Nodes []string // empty: every node
	// Subnet is the agent subnet (CIDR); Gateway the agent's host address.
	Subnet, Gateway string
}

// SubnetID is the id Proxmox gives the subnet: "<zone>-<network>-<prefix>"
// (PVE::API2::Network::SDN::Subnets create).
func (s SDN) SubnetID() string {
	return s.Zone + "-" + strings.Replace(s.Subnet, "/", "-", 1)
}

// ErrForeignSDN: an SDN object agentd must create exists and is not agentd's.
var ErrForeignSDN = errors.New("SDN object not created by agentd")

// SDNChange is one write EnsureSDN made (or, with dry run, would make).
type SDNChange struct {
	Op     string // create | update | apply
	Kind   string // zone | vnet | subnet | sdn
	ID     string
	Fields []string // the options set or deleted
}

func (c SDNChange) String() string {
	if c.Op == "apply" {
		return "apply the SDN configuration (PUT /cluster/sdn)"
	}
	s := fmt.Sprintf("%s %s %s", c.Op, c.Kind, c.ID)
	if len(c.Fields) > 0 {
		s += " (" + strings.Join(c.Fields, ", ") + ")"
	}
	return s
}

type sdnObj map[string]any

func (o sdnObj) str(k string) string {
	switch v := o[k].(type) {
	case nil:
		return ""
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	default:
		return fmt.Sprint(v)
	}
}

// splitList is PVE::Tools::split_list: commas, semicolons, spaces and NULs.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || r == ' ' || r == '\t' || r == 0 })
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	sort.Strings(x)
	sort.Strings(y)
	return slices.Equal(slices.Compact(x), slices.Compact(y))
}

func (c *Client) sdnList(ctx context.Context, path string) ([]sdnObj, error) {
	var out []sdnObj
	if err := c.api.Get(ctx, path, &out); err != nil {
		return nil, wrap("read "+path, err)
	}
	return out, nil
}

func byID(list []sdnObj, key, id string) sdnObj {
	for _, o := range list {
		if o.str(key) == id {
			return o
		}
	}
	return nil
}

// EnsureSDN makes the zone, VNet and subnet of want exist as want says and
// applies them (PUT /cluster/sdn) when any of them is not yet applied. It
// changes nothing when all are already so (the result is then empty).
//
// It never touches what it did not create: a VNet of that id without
// SDNAlias, a zone of that id that is not VXLAN or holds other VNets but not
// ours, and pending changes of other SDN objects (an apply would commit
// them too; Proxmox applies all or nothing) are refused with ErrForeignSDN.
// With dryRun it only reports what it would do.
func (c *Client) EnsureSDN(ctx context.Context, want SDN, dryRun bool) ([]SDNChange, error) {
	zones, err := c.sdnList(ctx, "/cluster/sdn/zones")
	if err != nil {
		return nil, err
	}
	vnets, err := c.sdnList(ctx, "/cluster/sdn/vnets")
	if err != nil {
		return nil, err
	}
	pzones, err := c.sdnList(ctx, "/cluster/sdn/zones?pending=1")
	if err != nil {
		return nil, err
	}
	pvnets, err := c.sdnList(ctx, "/cluster/sdn/vnets?pending=1")
	if err != nil {
		return nil, err
	}
	foreign := func(format string, args ...any) error {
		return &Error{Op: "sdn", Msg: fmt.Sprintf(format, args...) + "; agentd changes only SDN objects it created", Kind: ErrForeignSDN}
	}
	zone, vnet := byID(zones, "zone", want.Zone), byID(vnets, "vnet", want.VNet)
	if vnet != nil && (vnet.str("alias") != SDNAlias || vnet.str("zone") != want.Zone) {
		return nil, foreign("VNet %s exists (zone %s, alias %q) and is not agentd's: choose another sdn.vnet or remove it", want.VNet, vnet.str("zone"), vnet.str("alias"))
	}
	if zone != nil {
		var others []string
		for _, v := range vnets {
			if v.str("zone") == want.Zone && v.str("vnet") != want.VNet {
				others = append(others, v.str("vnet"))
			}
		}
		state := byID(pzones, "zone", want.Zone).str("state")
		switch {
		case zone.str("type") != "vxlan":
			return nil, foreign("zone %s exists with type %s, not agentd's vxlan zone: choose another sdn.zone or remove it", want.Zone, zone.str("type"))
		case vnet == nil && len(others) > 0:
			return nil, foreign("zone %s exists and holds VNet(s) %s, not agentd's: choose another sdn.zone", want.Zone, strings.Join(others, ", "))
		case vnet == nil && state != "new":
			// An empty zone agentd left behind is never applied (an apply
			// follows the VNet); an applied empty one is someone's.
			return nil, foreign("zone %s exists (applied, no VNet of agentd's in it): choose another sdn.zone or remove it", want.Zone)
		}
	}
	// Pending changes of objects not ours would be committed by our apply.
	var theirs []string
	for _, z := range pzones {
		if z.str("state") != "" && z.str("zone") != want.Zone {
			theirs = append(theirs, "zone "+z.str("zone")+" ("+z.str("state")+")")
		}
	}
	pending := byID(pzones, "zone", want.Zone).str("state") != ""
	for _, v := range pvnets {
		id := v.str("vnet")
		if v.str("state") != "" && id != want.VNet {
			theirs = append(theirs, "vnet "+id+" ("+v.str("state")+")")
		}
		pending = pending || id == want.VNet && v.str("state") != ""
		if v.str("state") == "deleted" {
			continue
		}
		subs, err := c.sdnList(ctx, "/cluster/sdn/vnets/"+url.PathEscape(id)+"/subnets?pending=1")
		if err != nil {
			return nil, err
		}
		for _, s := range subs {
			if s.str("state") == "" {
				continue
			}
			if id == want.VNet && s.str("subnet") == want.SubnetID() {
				pending = true
			} else if id != want.VNet {
				theirs = append(theirs, "subnet "+s.str("subnet")+" ("+s.str("state")+")")
			}
		}
	}
	if len(theirs) > 0 {
		return nil, foreign("SDN has pending changes agentd did not make (%s), and an apply commits every pending change: apply or revert them first (pvesh set /cluster/sdn)", strings.Join(theirs, ", "))
	}

	var changes []SDNChange
	write := func(ch SDNChange, method, path string, body map[string]any) error {
		changes = append(changes, ch)
		if dryRun {
			return nil
		}
		var err error
		if method == "POST" {
			err = c.api.Post(ctx, path, body, nil)
		} else {
			err = c.api.Put(ctx, path, body, nil)
		}
		return wrap(ch.String(), err)
	}
	// diff compares an object's options with the wanted ones ("": absent)
	// and returns the PUT body (delete for the absent ones).
	diff := func(cur sdnObj, wantOpts map[string]string, lists map[string]bool) (map[string]any, []string) {
		body, fields, del := map[string]any{}, []string{}, []string{}
		for _, k := range sortedKeys(wantOpts) {
			w, have := wantOpts[k], cur.str(k)
			same := w == have
			if lists[k] {
				same = sameSet(splitList(w), splitList(have))
			}
			if same {
				continue
			}
			fields = append(fields, k)
			if w == "" {
				del = append(del, k)
			} else {
				body[k] = w
			}
		}
		if len(del) > 0 {
			body["delete"] = strings.Join(del, ",")
		}
		if d := cur.str("digest"); d != "" && len(fields) > 0 {
			body["digest"] = d // a concurrent edit fails instead of being overwritten
		}
		return body, fields
	}
	mtu := ""
	if want.MTU > 0 {
		mtu = strconv.Itoa(want.MTU)
	}
	zoneOpts := map[string]string{"peers": strings.Join(want.Peers, ","), "mtu": mtu, "nodes": strings.Join(want.Nodes, ",")}
	lists := map[string]bool{"peers": true, "nodes": true}
	if zone == nil {
		body := map[string]any{"zone": want.Zone, "type": "vxlan"}
		for k, v := range zoneOpts {
			if v != "" {
				body[k] = v
			}
		}
		if err := write(SDNChange{Op: "create", Kind: "zone", ID: want.Zone, Fields: sortedKeys(body)}, "POST", "/cluster/sdn/zones", body); err != nil {
			return changes, err
		}
	} else if body, fields := diff(zone, zoneOpts, lists); len(fields) > 0 {
		if err := write(SDNChange{Op: "update", Kind: "zone", ID: want.Zone, Fields: fields}, "PUT", "/cluster/sdn/zones/"+url.PathEscape(want.Zone), body); err != nil {
			return changes, err
		}
	}
	vnetOpts := map[string]string{"zone": want.Zone, "tag": strconv.Itoa(want.Tag), "alias": SDNAlias}
	if vnet == nil {
		body := map[string]any{"vnet": want.VNet, "zone": want.Zone, "tag": want.Tag, "alias": SDNAlias}
		if err := write(SDNChange{Op: "create", Kind: "vnet", ID: want.VNet, Fields: sortedKeys(body)}, "POST", "/cluster/sdn/vnets", body); err != nil {
			return changes, err
		}
	} else if body, fields := diff(vnet, vnetOpts, nil); len(fields) > 0 {
		if err := write(SDNChange{Op: "update", Kind: "vnet", ID: want.VNet, Fields: fields}, "PUT", "/cluster/sdn/vnets/"+url.PathEscape(want.VNet), body); err != nil {
			return changes, err
		}
	}
	var subnet sdnObj
	if vnet != nil {
		subs, err := c.sdnList(ctx, "/cluster/sdn/vnets/"+url.PathEscape(want.VNet)+"/subnets")
		if err != nil {
			return changes, err
		}
		subnet = byID(subs, "subnet", want.SubnetID())
	}
	subPath := "/cluster/sdn/vnets/" + url.PathEscape(want.VNet) + "/subnets"
	if subnet == nil {
		body := map[string]any{"subnet": want.Subnet, "type": "subnet", "gateway": want.Gateway}
		if err := write(SDNChange{Op: "create", Kind: "subnet", ID: want.SubnetID(), Fields: []string{"gateway"}}, "POST", subPath, body); err != nil {
			return changes, err
		}
	} else if body, fields := diff(subnet, map[string]string{"gateway": want.Gateway}, nil); len(fields) > 0 {
		if err := write(SDNChange{Op: "update", Kind: "subnet", ID: want.SubnetID(), Fields: fields}, "PUT", subPath+"/"+url.PathEscape(want.SubnetID()), body); err != nil {
			return changes, err
		}
	}
	if len(changes) == 0 && !pending {
		return nil, nil
	}
	changes = append(changes, SDNChange{Op: "apply", Kind: "sdn"})
	if dryRun {
		return changes, nil
	}
	var upid proxmox.UPID
	if err := c.api.Put(ctx, "/cluster/sdn", nil, &upid); err != nil {
		return changes, wrap("apply SDN", err)
	}
	return changes, c.wait(ctx, "apply SDN", proxmox.NewTask(upid, c.api))
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ClusterNode is one node of /cluster/status.
type ClusterNode struct {
	Name   string `json:"name"`
	IP     string `json:"ip"`
	Online int    `json:"online"`
	Type   string `json:"type"`
}

// ClusterNodes lists the cluster's nodes with their addresses (the
// corosync ring address pmxcfs reports, which is the VXLAN peer address
// unless the config names others).
func (c *Client) ClusterNodes(ctx context.Context) ([]ClusterNode, error) {
	var all []ClusterNode
	if err := c.api.Get(ctx, "/cluster/status", &all); err != nil {
		return nil, wrap("read cluster status", err)
	}
	var out []ClusterNode
	for _, n := range all {
		if n.Type == "node" {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
