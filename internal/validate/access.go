package validate

import (
	"net/netip"
)

// A sandbox's resources (Proxmox allows more: cores 1..1024 per socket,
// memory from 16 MiB; these are the sane subset agentd's resize accepts).
const (
	MaxCores    = 128
	MinMemoryMB = 512
	MaxMemoryMB = 1 << 20
)

// Port checks a TCP port number.
func Port(field string, n int64) error {
	if n < 1 || n > 65535 {
		return fail(field, "%d is not a TCP port (1-65535)", n)
	}
	return nil
}

// HostPort checks a host port an exposed sandbox port is published on: a TCP
// port that shadows no host service (the privileged ports, and Proxmox's web
// UI 8006, SPICE proxy 3128 and VNC consoles 5900-5999).
func HostPort(field string, n int64) error {
	if err := Port(field, n); err != nil {
		return err
	}
	if n < 1024 || n == 8006 || n == 3128 || n >= 5900 && n <= 5999 {
		return fail(field, "%d would shadow a host service (below 1024, or Proxmox's 8006, 3128, 5900-5999)", n)
	}
	return nil
}

// ExposeSource reads a source an exposed port admits: an IPv4 CIDR such as
// 192.168.1.0/24, or one address (a /32). It returns the network, masked.
// public says whether 0.0.0.0/0 (every address) is wanted.
func ExposeSource(field, s string, public bool) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil {
			return netip.Prefix{}, fail(field, "%q is not an IPv4 address or CIDR such as 192.168.1.0/24", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fail(field, "%q: sandboxes are exposed on IPv4 only", s)
	}
	if p.Bits() == 0 && !public {
		return netip.Prefix{}, fail(field, "%q opens the port to every address: say so with public", s)
	}
	return p.Masked(), nil
}
