package pvesim

// Guest agent endpoints (PVE::API2::Qemu::Agent). Agent exec and file
// functions belong here or in agentfile.go.

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Guest agent: the three canonical errors in assert_agent_available's order.
func (s *Sim) agentCheck(req *request) (*vm, error) {
	v, err := s.vmFor(req)
	if err != nil {
		return nil, err
	}
	a, ok := v.conf.get("agent")
	if !ok || !agentEnabled(a) {
		return nil, errf("No QEMU guest agent configured")
	}
	if !v.running {
		return nil, errf("VM %d is not running", v.id)
	}
	switch v.agent {
	case AgentNotRunning:
		return nil, errf("QEMU guest agent is not running")
	case AgentHung:
		return nil, errf("VM %d qmp command 'guest-ping' failed - got timeout", v.id)
	}
	if !v.awake && s.now().Sub(v.started) < s.opts.AgentBootDelay {
		return nil, errf("QEMU guest agent is not running")
	}
	return v, nil
}

func (s *Sim) agentPing(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.agentCheck(req); err != nil {
		return nil, err
	}
	return map[string]any{"result": map[string]any{}}, nil
}

func (s *Sim) agentOSInfo(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.agentCheck(req); err != nil {
		return nil, err
	}
	return map[string]any{"result": map[string]any{"id": "ubuntu", "name": "Ubuntu", "pretty-name": "Ubuntu 24.04.3 LTS",
		"version": "24.04.3 LTS (Noble Numbat)", "version-id": "24.04", "kernel-release": "6.8.0-85-generic",
		"kernel-version": "#85-Ubuntu SMP PREEMPT_DYNAMIC", "machine": "x86_64"}}, nil
}

// GuestIP is the address a VM's guest reports once DHCP is done: 10.77.x.y derived from the VMID.
func GuestIP(vmid int) string {
	return fmt.Sprintf("10.77.%d.%d", (vmid/250)%250, vmid%250+2)
}

func (s *Sim) agentInterfaces(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.agentCheck(req)
	if err != nil {
		return nil, err
	}
	stats := map[string]any{"rx-bytes": 1024, "rx-packets": 10, "rx-errs": 0, "rx-dropped": 0,
		"tx-bytes": 2048, "tx-packets": 12, "tx-errs": 0, "tx-dropped": 0}
	ifaces := []map[string]any{{"name": "lo", "hardware-address": "00:00:00:00:00:00", "statistics": stats,
		"ip-addresses": []map[string]any{{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
			{"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128}}}}
	for _, k := range v.conf.keys {
		if !regexp.MustCompile(`^net\d+$`).MatchString(k) {
			continue
		}
		idx, _ := strconv.Atoi(strings.TrimPrefix(k, "net"))
		mac := ""
		if _, m, ok := strings.Cut(strings.Split(v.conf.vals[k], ",")[0], "="); ok {
			mac = strings.ToLower(m)
		}
		addrs := []map[string]any{{"ip-address-type": "ipv6", "ip-address": "fe80::be24:11ff:fe00:" + strconv.Itoa(v.id%9999), "prefix": 64}}
		if idx == 0 && (v.awake || s.now().Sub(v.started) >= s.opts.AgentBootDelay+s.opts.DHCPDelay) {
			addrs = append([]map[string]any{{"ip-address-type": "ipv4", "ip-address": guestIPv4(v), "prefix": guestPrefix(v)}}, addrs...)
		}
		ifaces = append(ifaces, map[string]any{"name": fmt.Sprintf("eth%d", idx), "hardware-address": mac,
			"ip-addresses": addrs, "statistics": stats})
	}
	return map[string]any{"result": ifaces}, nil
}
