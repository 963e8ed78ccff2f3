package pvesim

// SDN: /cluster/sdn zones, vnets and subnets (pve-network's
// PVE::API2::Network::SDN::{Zones,Vnets,Subnets}). /etc/pve/sdn/*.cfg hold
// the edited config; PUT /cluster/sdn (reload) commits it to
// .running-config (commit_config), and only then do the nodes build the
// VNets' bridges. GET ?pending=1 shows the difference as pending_config
// computes it, ?running=1 the committed one.

import (
	"crypto/sha1"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim/apischema"
)

// sdnKinds are the three section-config files, in the order we model them.
const (
	sdnZones   = "zones"
	sdnVnets   = "vnets"
	sdnSubnets = "subnets"
)

type sdnObjects map[string]map[string]any // id → key → value (typed as check_value returns it)

type sdnState struct {
	config  map[string]sdnObjects // kind → objects (the .cfg files)
	running map[string]sdnObjects // .running-config; nil: never applied
	version int64                 // .running-config version
}

func (d *sdnState) cfg(kind string) sdnObjects {
	if d.config == nil {
		d.config = map[string]sdnObjects{}
	}
	if d.config[kind] == nil {
		d.config[kind] = sdnObjects{}
	}
	return d.config[kind]
}

func (d *sdnState) run(kind string) sdnObjects {
	if d.running == nil || d.running[kind] == nil {
		return sdnObjects{}
	}
	return d.running[kind]
}

// sdnValue renders a value as the .cfg file holds it (encode_value: lists
// comma-joined).
func sdnValue(v any) string {
	switch x := v.(type) {
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = sdnValue(e)
		}
		return strings.Join(parts, ",")
	case int, int64:
		return fmt.Sprint(x)
	default:
		s, _ := apischema.Scalar(v)
		return s
	}
}

// digest is the SHA-1 of the section config file as write_config renders it.
func (objs sdnObjects) digest() string {
	var b strings.Builder
	for _, id := range sortedKeys(objs) {
		o := objs[id]
		fmt.Fprintf(&b, "%s: %s\n", sdnValue(o["type"]), id)
		for _, k := range sortedKeys(o) {
			if k != "type" {
				fmt.Fprintf(&b, "\t%s %s\n", k, sdnValue(o[k]))
			}
		}
		b.WriteString("\n")
	}
	return fmt.Sprintf("%x", sha1.Sum([]byte(b.String())))
}

func cloneSDN(objs sdnObjects) sdnObjects {
	out := sdnObjects{}
	for id, o := range objs {
		c := map[string]any{}
		for k, v := range o {
			c[k] = v
		}
		out[id] = c
	}
	return out
}

// pendingConfig is PVE::Network::SDN::pending_config.
func pendingConfig(running, config sdnObjects) sdnObjects {
	out := sdnObjects{}
	get := func(id string) map[string]any {
		if out[id] == nil {
			out[id] = map[string]any{}
		}
		return out[id]
	}
	pend := func(o map[string]any) map[string]any {
		if p, ok := o["pending"].(map[string]any); ok {
			return p
		}
		p := map[string]any{}
		o["pending"] = p
		return p
	}
	for _, id := range sortedKeys(running) {
		ro, co := running[id], config[id]
		o := get(id)
		for _, k := range sortedKeys(ro) {
			o[k] = ro[k]
			switch {
			case len(co) == 0:
				o["state"] = "deleted"
			case co[k] == nil:
				pend(o)[k] = "deleted"
				o["state"] = "changed"
			case sdnValue(ro[k]) != sdnValue(co[k]):
				o["state"] = "changed"
			}
		}
		if o["state"] != nil {
			pend(o)
		}
	}
	for _, id := range sortedKeys(config) {
		ro, co := running[id], config[id]
		o := get(id)
		for _, k := range sortedKeys(co) {
			cv := sdnValue(co[k])
			if k == "type" || k == "vnet" {
				o[k] = cv
			} else if ro[k] == nil || cv != sdnValue(ro[k]) {
				pend(o)[k] = co[k]
			}
			if len(ro) == 0 {
				o["state"] = "new"
			} else if ro[k] == nil {
				o["state"] = "changed"
			}
		}
		if o["state"] != nil {
			pend(o)
		}
	}
	return out
}

// sdnKind describes one of the three object kinds.
type sdnKind struct {
	kind, idParam, noun, pattern string
	// missing is sdn_<kind>_config's die for an unknown id.
	missing func(id string) string
}

var (
	kindZones = sdnKind{sdnZones, "zone", "zone", "/cluster/sdn/zones",
		func(id string) string { return fmt.Sprintf("sdn '%s' does not exist", id) }}
	kindVnets = sdnKind{sdnVnets, "vnet", "vnet", "/cluster/sdn/vnets",
		func(id string) string { return fmt.Sprintf("sdn vnet '%s' does not exist", id) }}
	kindSubnets = sdnKind{sdnSubnets, "subnet", "subnet", "/cluster/sdn/vnets/{vnet}/subnets",
		func(id string) string { return fmt.Sprintf("sdn subnet '%s' does not exist", id) }}
)

// view picks the config a GET reads: pending, running or the edited one.
func (s *Sim) sdnView(req *request, k sdnKind) (sdnObjects, string) {
	switch {
	case req.boolv("pending"):
		return pendingConfig(s.sdn.run(k.kind), s.sdn.cfg(k.kind)), ""
	case req.boolv("running"):
		return s.sdn.run(k.kind), ""
	default:
		c := s.sdn.cfg(k.kind)
		return c, c.digest()
	}
}

// sdnAPIObject is $api_sdn_<kind>_config: the object with its id and the
// file's digest (undef, so absent, for the pending and running views).
func sdnAPIObject(k sdnKind, objs sdnObjects, id, digest string) map[string]any {
	o := map[string]any{}
	for key, v := range objs[id] {
		if (key == "nodes" || key == "exitnodes" || key == "peers") && k.kind == sdnZones {
			v = sdnValue(v)
		}
		o[key] = v
	}
	o[k.idParam] = id
	if digest != "" {
		o["digest"] = digest
	}
	if k.kind == sdnSubnets {
		// sdn_subnets_config adds id, cidr, zone, network and mask (split
		// from the id, so mask is a string).
		o["id"] = id
		// get_dhcp_ranges: the property strings parsed, [] when none.
		ranges := []map[string]any{}
		if list, ok := o["dhcp-range"].([]any); ok {
			for _, e := range list {
				r := map[string]any{}
				for _, kv := range strings.Split(sdnValue(e), ",") {
					if k, v, ok := strings.Cut(kv, "="); ok {
						r[k] = v
					}
				}
				ranges = append(ranges, r)
			}
		}
		o["dhcp-range"] = ranges
		cidr := strings.Replace(strings.TrimPrefix(id, zoneOfSubnet(id)+"-"), "-", "/", 1)
		if _, ipn, err := net.ParseCIDR(cidr); err == nil {
			ones, _ := ipn.Mask.Size()
			o["cidr"], o["network"], o["mask"] = cidr, ipn.IP.String(), strconv.Itoa(ones)
			o["zone"] = zoneOfSubnet(id)
		}
	}
	return o
}

// zoneOfSubnet: subnet ids are "<zone>-<network>-<prefixlen>".
func zoneOfSubnet(id string) string {
	parts := strings.Split(id, "-")
	if len(parts) < 3 {
		return ""
	}
	return strings.Join(parts[:len(parts)-2], "-")
}

func sdnList(k sdnKind) func(*Sim, *request) (any, error) {
	return func(s *Sim, req *request) (any, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		objs, digest := s.sdnView(req, k)
		out := []map[string]any{}
		for _, id := range sortedKeys(objs) {
			if k.kind == sdnSubnets && sdnValue(objs[id]["vnet"]) != req.vars["vnet"] {
				continue
			}
			if t := req.str("type"); t != "" && sdnValue(objs[id]["type"]) != t {
				continue
			}
			out = append(out, sdnAPIObject(k, objs, id, digest))
		}
		return out, nil
	}
}

func sdnRead(k sdnKind) func(*Sim, *request) (any, error) {
	return func(s *Sim, req *request) (any, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		id := req.vars[k.idParam]
		objs, digest := s.sdnView(req, k)
		o, ok := objs[id]
		if !ok {
			return nil, errf("%s", k.missing(id))
		}
		if k.kind == sdnSubnets && sdnValue(o["vnet"]) != req.vars["vnet"] {
			return nil, paramErr(map[string]string{"vnet": "wrong vnet"})
		}
		return sdnAPIObject(k, objs, id, digest), nil
	}
}

// typed converts request values the way SectionConfig::check_value does:
// booleans and numbers become numbers.
func typed(pattern, method string, params map[string]any, skip ...string) map[string]any {
	schema, _ := apischema.Lookup(pattern, method)
	out := map[string]any{}
	for k, v := range params {
		if contains(skip, k) {
			continue
		}
		if p := schema[k]; p != nil && p.Type == "array" {
			// Arrays (a subnet's dhcp-range) keep one string per element.
			list := []any{}
			if arr, ok := v.([]any); ok {
				for _, e := range arr {
					es, _ := apischema.Scalar(e)
					list = append(list, es)
				}
			} else if sv, _ := apischema.Scalar(v); sv != "" {
				list = append(list, sv)
			}
			out[k] = list
			continue
		}
		sv, _ := apischema.Scalar(v)
		if p := schema[k]; p != nil {
			switch p.Type {
			case "boolean":
				if sv == "1" || strings.EqualFold(sv, "true") || sv == "on" || sv == "yes" {
					out[k] = 1
				} else {
					out[k] = 0
				}
				continue
			case "integer":
				n, _ := strconv.ParseInt(sv, 10, 64)
				out[k] = n
				continue
			case "number":
				f, _ := strconv.ParseFloat(sv, 64)
				out[k] = f
				continue
			}
		}
		out[k] = sv
	}
	return out
}

// sdnFail wraps an error as lock_sdn_domain does ("$errmsg: $err"); a
// PVE::Exception stringifies as "<code> <msg>\n<param>: <text>\n".
func sdnFail(what string, e *Error) error {
	msg := e.Msg
	if e.Code != 500 || len(e.Errors) > 0 {
		msg = fmt.Sprintf("%d %s", e.Code, e.Msg)
		for _, k := range sortedKeys(e.Errors) {
			msg += "\n" + k + ": " + e.Errors[k]
		}
	}
	return errf("%s: %s", what, msg)
}

func sdnCreate(k sdnKind) func(*Sim, *request) (any, error) {
	return func(s *Sim, req *request) (any, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := s.checkQuorum(); err != nil {
			return nil, err
		}
		what := "create sdn " + k.noun + " object failed"
		objs := s.sdn.cfg(k.kind)
		id := req.str(k.idParam)
		o := typed(k.pattern, "POST", req.params, k.idParam, "lock-token")
		if msg := sdnCheckConfig(k, o, true); msg != "" {
			if k.kind == sdnZones {
				// Zones.pm create runs check_config before lock_sdn_config.
				return nil, errf("%s", msg)
			}
			return nil, errf("%s: %s", what, msg)
		}
		switch k.kind {
		case sdnVnets:
			o["type"] = "vnet"
		case sdnSubnets:
			vnet := s.sdn.cfg(sdnVnets)[req.str("vnet")]
			zone := ""
			if vnet != nil {
				zone = sdnValue(vnet["zone"])
			}
			id = zone + "-" + strings.Replace(id, "/", "-", 1)
			o["type"] = "subnet"
		}
		if _, exists := objs[id]; exists {
			return nil, errf("%s: sdn %s object ID '%s' already defined", what, k.noun, id)
		}
		if e := s.sdnCheck(k, id, o); e != nil {
			return nil, sdnFail(what, e)
		}
		objs[id] = o
		return nil, nil
	}
}

func sdnUpdate(k sdnKind) func(*Sim, *request) (any, error) {
	return func(s *Sim, req *request) (any, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		what := "update sdn " + k.noun + " object failed"
		objs := s.sdn.cfg(k.kind)
		id := req.vars[k.idParam]
		if d := req.str("digest"); d != "" && d != objs.digest() {
			return nil, errf("%s: detected modified configuration - file changed by other user? Try again.", what)
		}
		cur, ok := objs[id]
		if !ok {
			return nil, errf("%s: %s", what, k.missing(id))
		}
		if k.kind == sdnSubnets && sdnValue(cur["vnet"]) != req.vars["vnet"] {
			return nil, paramErr(map[string]string{"vnet": "wrong vnet"})
		}
		opts := typed(k.pattern+"/{"+k.idParam+"}", "PUT", req.params, k.idParam, "vnet", "lock-token", "digest", "delete")
		if k.kind != sdnSubnets {
			opts["type"] = cur["type"]
			if msg := sdnCheckConfig(k, opts, false); msg != "" {
				return nil, errf("%s: %s", what, msg)
			}
			delete(opts, "type")
		}
		next := map[string]any{}
		for key, v := range cur {
			next[key] = v
		}
		if del := req.str("delete"); del != "" {
			for _, key := range strings.FieldsFunc(del, func(r rune) bool { return r == ',' || r == ';' || r == ' ' }) {
				if k.kind != sdnSubnets {
					if msg := sdnDeleteCheck(k, sdnValue(cur["type"]), key, opts); msg != "" {
						return nil, errf("%s: %s", what, msg)
					}
				}
				delete(next, key)
			}
		}
		for key, v := range opts {
			next[key] = v
		}
		if k.kind == sdnSubnets {
			next["vnet"] = cur["vnet"]
		}
		if k.kind == sdnVnets && next["zone"] == nil {
			return nil, sdnFail(what, paramErr(map[string]string{"zone": "cannot delete zone"}))
		}
		if k.kind == sdnVnets && sdnValue(next["zone"]) != sdnValue(cur["zone"]) && s.vnetHasSubnets(id) {
			return nil, sdnFail(what, paramErr(map[string]string{"zone": "can't change zone if subnets exist"}))
		}
		if e := s.sdnCheck(k, id, next); e != nil {
			return nil, sdnFail(what, e)
		}
		objs[id] = next
		return nil, nil
	}
}

func sdnDelete(k sdnKind) func(*Sim, *request) (any, error) {
	return func(s *Sim, req *request) (any, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		what := "delete sdn " + k.noun + " object failed"
		objs := s.sdn.cfg(k.kind)
		id := req.vars[k.idParam]
		if _, ok := objs[id]; !ok {
			return nil, errf("%s: %s", what, k.missing(id))
		}
		switch k.kind {
		case sdnZones:
			for _, vid := range sortedKeys(s.sdn.cfg(sdnVnets)) {
				if sdnValue(s.sdn.cfg(sdnVnets)[vid]["zone"]) == id {
					// Zones::Plugin on_delete_hook dies without a newline.
					return nil, errf("%s: zone %s is used by vnet %s at /usr/share/perl5/PVE/Network/SDN/Zones/Plugin.pm line 148.", what, id, vid)
				}
			}
		case sdnVnets:
			for _, sub := range s.sdn.cfg(sdnSubnets) {
				if sdnValue(sub["vnet"]) == id {
					return nil, sdnFail(what, paramErr(map[string]string{"vnet": "Can't delete vnet if subnets exists"}))
				}
			}
		}
		delete(objs, id)
		return nil, nil
	}
}

func (s *Sim) sdnIndex(*request) (any, error) {
	out := []map[string]any{}
	for _, id := range []string{"vnets", "zones", "controllers", "ipams", "dns", "fabrics"} {
		out = append(out, map[string]any{"id": id})
	}
	return out, nil
}

// sdnApply is the reload method: commit_config, then a reloadnetworkall
// worker that starts a reload on every node.
func (s *Sim) sdnApply(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sdn.running = map[string]sdnObjects{}
	for _, kind := range []string{sdnZones, sdnVnets, sdnSubnets} {
		s.sdn.running[kind] = cloneSDN(s.sdn.cfg(kind))
	}
	s.sdn.version = s.now().UnixNano() / 1000 // compile_running_cfg: version => time()
	return s.startTask(req, s.Node(), "reloadnetworkall", "", func(w *worker) error {
		if err := s.checkQuorum(); err != nil {
			return err
		}
		// $create_reload_network_worker runs `pvesh set /nodes/<n>/network`
		// per node; a failure is only warned about (warn $@), so the task
		// still ends OK. pvesh's exit code for an unreachable node is
		// assumed to be 255.
		for _, n := range s.opts.Nodes {
			w.logf("%s: reloading network config", n)
			if s.nodes[n].offline {
				w.logf("command 'pvesh set /nodes/%s/network --regenerate-frr 0' failed: exit code 255", n)
			}
		}
		return w.wait()
	}), nil
}

// vnetBridge reports whether name is a VNet, and whether its bridge exists
// on the nodes (it was applied).
func (s *Sim) vnetBridge(name string) (isVnet, applied bool) {
	_, isVnet = s.sdn.cfg(sdnVnets)[name]
	_, applied = s.sdn.run(sdnVnets)[name]
	return isVnet || applied, applied
}

func init() {
	for _, k := range []sdnKind{kindZones, kindVnets, kindSubnets} {
		one := k.pattern + "/{" + k.idParam + "}"
		handle("GET", k.pattern, sdnList(k))
		handle("POST", k.pattern, sdnCreate(k))
		handle("GET", one, sdnRead(k))
		handle("PUT", one, sdnUpdate(k))
		handle("DELETE", one, sdnDelete(k))
	}
	handle("GET", "/cluster/sdn", (*Sim).sdnIndex)
	handle("PUT", "/cluster/sdn", (*Sim).sdnApply)
}
