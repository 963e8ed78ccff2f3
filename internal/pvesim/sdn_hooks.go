package pvesim

// The SDN plugins' section-config checks and update hooks
// (PVE::Network::SDN::Zones::*Plugin, VnetPlugin) and SectionConfig's
// check_config / delete_from_config as they apply to them.

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// sdnZoneOptions are each zone plugin's options(): true when required.
var sdnZoneOptions = map[string]map[string]bool{
	"simple": {"nodes": false, "mtu": false, "dns": false, "reversedns": false, "dnszone": false, "ipam": false, "dhcp": false},
	"vlan": {"nodes": false, "bridge": true, "bridge-disable-mac-learning": false, "mtu": false, "dns": false, "reversedns": false,
		"dnszone": false, "ipam": false},
	"qinq": {"nodes": false, "tag": true, "bridge": true, "bridge-disable-mac-learning": false, "mtu": false, "vlan-protocol": false,
		"dns": false, "reversedns": false, "dnszone": false, "ipam": false},
	"vxlan": {"nodes": false, "peers": false, "vxlan-port": false, "mtu": false, "dns": false, "reversedns": false, "dnszone": false,
		"ipam": false, "fabric": false},
	"evpn": {"nodes": false, "vrf-vxlan": true, "controller": true, "exitnodes": false, "exitnodes-local-routing": false,
		"exitnodes-primary": false, "advertise-subnets": false, "disable-arp-nd-suppression": false, "bridge-disable-mac-learning": false,
		"rt-import": false, "vxlan-port": false, "mtu": false, "mac": false, "dns": false, "reversedns": false, "dnszone": false, "ipam": false},
}

// sdnVnetOptions is VnetPlugin options().
var sdnVnetOptions = map[string]bool{"zone": true, "tag": false, "alias": false, "vlanaware": false, "isolate-ports": false}

func sdnOptions(k sdnKind, typ string) map[string]bool {
	if k.kind == sdnVnets {
		return sdnVnetOptions
	}
	return sdnZoneOptions[typ]
}

// sdnCheckConfig is SectionConfig::check_config for zones and vnets: every
// key must be an option of the object's type (check_value: "unexpected
// property"), and a create needs the required ones. Types the model does
// not know (faucet) are not checked.
func sdnCheckConfig(k sdnKind, o map[string]any, create bool) string {
	if k.kind == sdnSubnets {
		return ""
	}
	opts := sdnOptions(k, sdnValue(o["type"]))
	if opts == nil {
		return ""
	}
	for _, key := range sortedKeys(o) {
		if _, ok := opts[key]; !ok && key != "type" {
			return fmt.Sprintf("unexpected property '%s'", key)
		}
	}
	if create {
		for _, key := range sortedKeys(opts) {
			if opts[key] && o[key] == nil {
				return fmt.Sprintf("missing value for required option '%s'", key)
			}
		}
	}
	return ""
}

// sdnDeleteCheck is SectionConfig::delete_from_config for one key.
func sdnDeleteCheck(k sdnKind, typ, key string, set map[string]any) string {
	opts := sdnOptions(k, typ)
	if opts == nil {
		return ""
	}
	required, ok := opts[key]
	switch {
	case !ok:
		return fmt.Sprintf("no such option '%s'", key)
	case required:
		return fmt.Sprintf("unable to delete required option '%s'", key)
	case set[key] != nil:
		return fmt.Sprintf("cannot set and delete property '%s' at the same time!", key)
	}
	return ""
}

func (s *Sim) vnetHasSubnets(vnet string) bool {
	for _, sub := range s.sdn.cfg(sdnSubnets) {
		if sdnValue(sub["vnet"]) == vnet {
			return true
		}
	}
	return false
}

// sdnCheck runs the plugins' update hooks the simulator models.
func (s *Sim) sdnCheck(k sdnKind, id string, o map[string]any) *Error {
	switch k.kind {
	case sdnZones:
		// VxlanPlugin on_update_hook.
		if sdnValue(o["type"]) == "vxlan" && (o["peers"] != nil) == (o["fabric"] != nil) {
			msg := "must have exactly one of peers / fabric defined"
			return paramErr(map[string]string{"peers": msg, "fabric": msg})
		}
	case sdnVnets:
		zone := s.sdn.cfg(sdnZones)[sdnValue(o["zone"])]
		if zone == nil {
			return errf("sdn '%s' does not exist", sdnValue(o["zone"]))
		}
		if sdnValue(zone["type"]) == "vxlan" {
			// VxlanPlugin vnet_update_hook.
			tag, _ := strconv.ParseInt(sdnValue(o["tag"]), 10, 64)
			if o["tag"] == nil {
				return paramErr(map[string]string{"tag": "missing vxlan tag"})
			}
			if tag > 16777216 {
				return paramErr(map[string]string{"tag": "vxlan tag max value is 16777216"})
			}
			// VNIs are unique over the VXLAN and EVPN zones.
			vnets := s.sdn.cfg(sdnVnets)
			for _, other := range sortedKeys(vnets) {
				ov := vnets[other]
				oz := s.sdn.cfg(sdnZones)[sdnValue(ov["zone"])]
				if other == id || oz == nil || sdnValue(oz["type"]) != "vxlan" && sdnValue(oz["type"]) != "evpn" {
					continue
				}
				if ov["tag"] != nil && sdnValue(ov["tag"]) == sdnValue(o["tag"]) {
					return paramErr(map[string]string{"tag": fmt.Sprintf("vxlan tag %s already exist in vnet %s in zone %s ", sdnValue(o["tag"]), other, sdnValue(ov["zone"]))})
				}
			}
		}
	case sdnSubnets:
		vnetID := sdnValue(o["vnet"])
		vnet := s.sdn.cfg(sdnVnets)[vnetID]
		if vnet == nil {
			return paramErr(map[string]string{"vnet": vnetID + " don't exist"})
		}
		if sdnValue(vnet["vlanaware"]) == "1" {
			return paramErr(map[string]string{"vnet": "you can't add a subnet on a vlanaware vnet"})
		}
		if gw := sdnValue(o["gateway"]); o["gateway"] != nil {
			cidr := strings.Replace(strings.TrimPrefix(id, zoneOfSubnet(id)+"-"), "-", "/", 1)
			_, ipn, err := net.ParseCIDR(cidr)
			ip := net.ParseIP(gw)
			ones, bits := 0, 0
			if ipn != nil {
				ones, bits = ipn.Mask.Size()
			}
			if err == nil && (ip == nil || !ipn.Contains(ip)) && !(ones == 32 && bits == 32) {
				return paramErr(map[string]string{"gateway": fmt.Sprintf("%s is not in subnet %s", gw, cidr)})
			}
		}
	}
	return nil
}
