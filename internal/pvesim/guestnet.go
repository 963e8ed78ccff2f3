package pvesim

import (
	"net/netip"
	"strings"
)

// The simulated guest applies cloud-init's static ipconfig0 as a real
// cloud-init guest does (network config from the NoCloud drive); without one
// it falls back to the DHCP-style address derived from the VMID.

func staticIPv4(v *vm) (netip.Prefix, bool) {
	for _, kv := range strings.Split(v.conf.vals["ipconfig0"], ",") {
		if val, ok := strings.CutPrefix(kv, "ip="); ok {
			if p, err := netip.ParsePrefix(val); err == nil && p.Addr().Is4() {
				return p, true
			}
		}
	}
	return netip.Prefix{}, false
}

func guestIPv4(v *vm) string {
	if p, ok := staticIPv4(v); ok {
		return p.Addr().String()
	}
	return GuestIP(v.id)
}

func guestPrefix(v *vm) int {
	if p, ok := staticIPv4(v); ok {
		return p.Bits()
	}
	return 16
}
