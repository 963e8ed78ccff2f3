package apischema

import (
	"fmt"
	"net"
	"regexp"
	"strings"
)

// Named formats the simulated endpoints use, with PVE's own messages. Formats not
// listed here are accepted unchecked (a documented gap, not a silent pass: they are
// only used by parameters agentd never sends).
var (
	nodeRE     = regexp.MustCompile(`^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$`)
	vmidRE     = regexp.MustCompile(`^[1-9][0-9]{2,8}$`)
	configIDRE = regexp.MustCompile(`(?i)^[a-z][a-z0-9_-]+$`)
	idRE       = regexp.MustCompile(`(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$`)
	dnsRE      = regexp.MustCompile(`^(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$`)
	urlencRE   = regexp.MustCompile(`^[-%a-zA-Z0-9_.!~*'()]*$`)
	tagRE      = regexp.MustCompile(`(?i)^[a-z0-9_][a-z0-9_\-+.]*$`)
	macRE      = regexp.MustCompile(`^[a-fA-F0-9]{2}(:[a-fA-F0-9]{2}){5}$`)
	bridgeRE   = regexp.MustCompile(`^[-_.\w\d]+$`)
	poolRE     = regexp.MustCompile(`^[A-Za-z0-9_\-]+$`)
	volumeIDRE = regexp.MustCompile(`^(?i:[a-z][a-z0-9\-_.]*[a-z0-9]):.+$`)
	realmRE    = regexp.MustCompile(`(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$`)
)

func checkFormat(name, value string) string {
	base, kind := name, ""
	if b, ok := strings.CutSuffix(name, "-list"); ok {
		base, kind = b, "list"
	} else if b, ok := strings.CutSuffix(name, "-opt"); ok {
		base, kind = b, "opt"
	}
	switch kind {
	case "list":
		for _, v := range splitList(value) {
			if msg := checkOne(base, v); msg != "" {
				return msg
			}
		}
		return ""
	case "opt":
		if value == "" {
			return ""
		}
	}
	return checkOne(base, value)
}

// splitList mirrors PVE::ParseUtils::split_list.
func splitList(s string) []string {
	if strings.Contains(s, "\x00") {
		return strings.Split(s, "\x00")
	}
	s = strings.NewReplacer(",", " ", ";", " ").Replace(s)
	return strings.Fields(s)
}

func checkOne(name, v string) string {
	switch name {
	case "pve-node":
		if !nodeRE.MatchString(v) {
			return "value does not look like a valid node name"
		}
	case "pve-vmid":
		if !vmidRE.MatchString(v) {
			return "value does not look like a valid VM ID"
		}
	case "pve-configid":
		if !configIDRE.MatchString(v) {
			return fmt.Sprintf("invalid configuration ID '%s'", v)
		}
	case "pve-storage-id":
		if len(v) < 2 {
			return fmt.Sprintf("storage ID '%s' cannot be shorter than 2 characters", v)
		}
		if !idRE.MatchString(v) {
			return fmt.Sprintf("storage ID '%s' contains illegal characters", v)
		}
	case "pve-realm":
		if !realmRE.MatchString(v) {
			return fmt.Sprintf("realm ID '%s' contains illegal characters", v)
		}
	case "dns-name":
		if !dnsRE.MatchString(v) {
			return "value does not look like a valid DNS name"
		}
	case "urlencoded":
		if !urlencRE.MatchString(v) {
			return "invalid urlencoded string: " + v
		}
	case "pve-tag":
		if !tagRE.MatchString(v) {
			return "invalid characters in tag"
		}
	case "mac-addr":
		if !macRE.MatchString(v) || v[1] == '1' || strings.ContainsAny(v[1:2], "13579bBdDfF") {
			return "value does not look like a valid unicast MAC address"
		}
	case "pve-bridge-id":
		if !bridgeRE.MatchString(v) {
			return fmt.Sprintf("invalid bridge ID '%s'", v)
		}
	case "pve-poolid":
		if !poolRE.MatchString(v) {
			return fmt.Sprintf("invalid pool ID '%s'", v)
		}
	case "pve-volume-id":
		if !volumeIDRE.MatchString(v) {
			return fmt.Sprintf("unable to parse volume ID '%s'", v)
		}
	case "ip":
		if net.ParseIP(v) == nil {
			return "value does not look like a valid IP address"
		}
	case "ipv4":
		if ip := net.ParseIP(v); ip == nil || ip.To4() == nil {
			return "value does not look like a valid IPv4 address"
		}
	case "ipv6":
		if ip := net.ParseIP(v); ip == nil || ip.To4() != nil {
			return "value does not look like a valid IPv6 address"
		}
	case "disk-size":
		if _, ok := ParseSize(v); !ok {
			return "value does not look like a valid disk size: " + v
		}
	case "pve-ipv4-config":
		if v != "dhcp" && v != "manual" && !isCIDR(v, true) {
			return "value does not look like a valid ipv4 network configuration"
		}
	case "pve-ipv6-config":
		if v != "auto" && v != "dhcp" && v != "manual" && !isCIDR(v, false) {
			return "value does not look like a valid ipv6 network configuration"
		}
	}
	return ""
}

func isCIDR(v string, v4 bool) bool {
	ip, _, err := net.ParseCIDR(v)
	return err == nil && (ip.To4() != nil) == v4
}

// hashFormats are the named property-string formats that the API schema refers to
// by name only; their keys are copied from qemu-server ($ipconfig_fmt in
// QemuServer/Network.pm, $cicustom_fmt in QemuServer.pm).
var hashFormats = map[string]Format{
	"pve-qm-ipconfig": {
		"ip":  {Type: "string", Optional: 1, named: "pve-ipv4-config"},
		"gw":  {Type: "string", Optional: 1, named: "ipv4", Requires: []byte(`"ip"`)},
		"ip6": {Type: "string", Optional: 1, named: "pve-ipv6-config"},
		"gw6": {Type: "string", Optional: 1, named: "ipv6", Requires: []byte(`"ip6"`)},
	},
	"pve-qm-cicustom": {
		"meta":    {Type: "string", Optional: 1, named: "pve-volume-id"},
		"network": {Type: "string", Optional: 1, named: "pve-volume-id"},
		"user":    {Type: "string", Optional: 1, named: "pve-volume-id"},
		"vendor":  {Type: "string", Optional: 1, named: "pve-volume-id"},
	},
}
