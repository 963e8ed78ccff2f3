package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/netpolicy"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

// PortSets publishes exposed ports in the host's nftables (netpolicy.Sets);
// an Addresses value that implements it is told about every expose.
type PortSets interface {
	Expose(ctx context.Context, e netpolicy.Expose) error
	Unexpose(ctx context.Context, e netpolicy.Expose) error
}

// ExposeOptions configure exposed ports.
type ExposeOptions struct {
	// DefaultSources apply when a request names none (expose_default_sources).
	DefaultSources []netip.Prefix
	// PortLow..PortHigh is where free host ports are taken from.
	PortLow, PortHigh int
	// Uplink is the interface whose address is reported as the host address.
	Uplink string
}

func (m *Manager) portSets() PortSets {
	ps, _ := m.opts.Addresses.(PortSets)
	return ps
}

func portLive(s api.State) bool {
	return s == api.StateBooting || s == api.StateReady || s == api.StateRunning
}

// uplinkAddress is the first IPv4 address of the uplink interface ("" if none).
func (m *Manager) uplinkAddress() string {
	ifc, err := net.InterfaceByName(m.opts.Expose.Uplink)
	if err != nil {
		return ""
	}
	addrs, _ := ifc.Addrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return ""
}

func toExpose(p *store.Port) (netpolicy.Expose, error) {
	a, err := netip.ParseAddr(p.Addr)
	if err != nil {
		return netpolicy.Expose{}, err
	}
	e := netpolicy.Expose{HostPort: p.HostPort, Addr: a, Port: p.Port}
	for _, s := range p.Sources {
		pr, err := netip.ParsePrefix(s)
		if err != nil {
			return netpolicy.Expose{}, err
		}
		e.Sources = append(e.Sources, pr)
	}
	return e, nil
}

func (m *Manager) portView(p *store.Port, name string) api.ExposedPort {
	return api.ExposedPort{SandboxID: p.SandboxID, Sandbox: name, Port: p.Port, HostAddress: m.uplinkAddress(), HostPort: p.HostPort,
		SandboxAddr: p.Addr, Sources: p.Sources, Public: p.Public, CreatedAt: p.CreatedAt, ExpiresAt: p.ExpiresAt}
}

// ExposePolicy are the exposed ports of live sandboxes as netpolicy renders
// them (agentd host network render).
func ExposePolicy(ctx context.Context, st *store.Store) ([]netpolicy.Expose, error) {
	ports, err := st.Ports(ctx, "")
	if err != nil {
		return nil, err
	}
	var out []netpolicy.Expose
	for _, p := range ports {
		e, err := toExpose(p)
		if err != nil {
			return nil, fmt.Errorf("exposed port %d: %w", p.HostPort, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// Expose publishes a guest port of a READY or RUNNING sandbox on the host's
// uplink address, limited to the request's sources.
func (m *Manager) Expose(ctx context.Context, ref string, req api.ExposeRequest) (*api.ExposedPort, error) {
	if req.Port < 1 || req.Port > 65535 {
		return nil, api.FieldError("port", "%d is not a TCP port (1-65535)", req.Port)
	}
	if req.HostPort < 0 || req.HostPort > 65535 {
		return nil, api.FieldError("host_port", "%d is not a TCP port (1-65535)", req.HostPort)
	}
	if req.HostPort != 0 && (req.HostPort < 1024 || req.HostPort == 8006 || req.HostPort == 3128 || req.HostPort >= 5900 && req.HostPort <= 5999) {
		return nil, api.FieldError("host_port", "%d would shadow a host service (below 1024, or Proxmox's 8006, 3128, 5900-5999)", req.HostPort)
	}
	var sources []netip.Prefix
	for i, s := range req.Sources {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, api.FieldError(fmt.Sprintf("sources[%d]", i), "%q is not an IPv4 address or CIDR such as 192.168.1.0/24", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if !p.Addr().Is4() {
			return nil, api.FieldError(fmt.Sprintf("sources[%d]", i), "%q: sandboxes are exposed on IPv4 only", s)
		}
		if p.Bits() == 0 && !req.Public {
			return nil, api.FieldError(fmt.Sprintf("sources[%d]", i), "%q opens the port to every address: say so with public", s)
		}
		sources = append(sources, p.Masked())
	}
	if len(sources) == 0 {
		if req.Public {
			sources = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
		} else {
			sources = m.opts.Expose.DefaultSources
		}
	}
	if len(sources) == 0 {
		return nil, api.FieldError("sources", "none given and expose_default_sources is empty in the agent config")
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := validate.TTL("ttl", req.TTL)
		if err != nil {
			return nil, api.Invalid(err)
		}
		ttl = d
	}
	sb, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if sb.State != api.StateReady && sb.State != api.StateRunning {
		return nil, invalidState(sb, "expose a port of", api.StateReady, api.StateRunning)
	}
	addr, err := m.store.Address(ctx, sb.ID)
	if err != nil {
		if addr, err = netip.ParseAddr(sb.IP); err != nil {
			return nil, api.Errorf(http.StatusConflict, api.CodeInvalidState, "sandbox %s has no address yet", sb.Name)
		}
	}
	p := &store.Port{SandboxID: sb.ID, Port: req.Port, HostPort: req.HostPort, Addr: addr.String(), Public: req.Public}
	for _, s := range sources {
		p.Sources = append(p.Sources, s.String())
	}
	if ttl > 0 {
		exp := m.now().UTC().Add(ttl).Truncate(time.Millisecond)
		p.ExpiresAt = &exp
	}
	lo, hi := m.opts.Expose.PortLow, m.opts.Expose.PortHigh
	if lo == 0 {
		lo, hi = 20000, 20999
	}
	err = m.store.AddPort(ctx, sb, p, lo, hi, func(p *store.Port) store.Event {
		msg := fmt.Sprintf("exposed port %d on host port %d to %s", p.Port, p.HostPort, strings.Join(p.Sources, ", "))
		if p.ExpiresAt != nil {
			msg += " until " + p.ExpiresAt.Format(time.RFC3339)
		}
		return store.Event{Kind: "sandbox.port_exposed", Message: msg}
	})
	switch {
	case errors.Is(err, store.ErrPortTaken):
		return nil, api.Errorf(http.StatusConflict, api.CodeConflict, "%v", err)
	case errors.Is(err, store.ErrNoHostPort):
		return nil, api.Errorf(http.StatusConflict, api.CodeConflict, "every host port of expose_port_range %v is exposed", err)
	case err != nil:
		return nil, err
	}
	if ps := m.portSets(); ps != nil {
		e, _ := toExpose(p)
		if err := ps.Expose(ctx, e); err != nil {
			_, _ = m.store.DeletePort(ctx, sb, p.Port, store.Event{Kind: "sandbox.port_unexposed", Message: fmt.Sprintf("port %d: nftables refused it: %v", p.Port, err)})
			return nil, fmt.Errorf("publish host port %d in nftables (agentd host network apply loads the tables): %w", p.HostPort, err)
		}
	}
	m.opts.Log.Info("port exposed", "sandbox_id", sb.ID, "sandbox", sb.Name, "port", p.Port, "host_port", p.HostPort, "sources", p.Sources)
	v := m.portView(p, sb.Name)
	return &v, nil
}

// Unexpose withdraws an exposed port.
func (m *Manager) Unexpose(ctx context.Context, ref string, port int) error {
	sb, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return err
	}
	defer unlock()
	ports, err := m.store.Ports(ctx, sb.ID)
	if err != nil {
		return err
	}
	for _, p := range ports {
		if p.Port == port {
			return m.unexpose(ctx, sb, p, "unexposed")
		}
	}
	return api.Errorf(http.StatusNotFound, api.CodePortNotExposed, "sandbox %s has no exposed port %d", sb.Name, port)
}

func (m *Manager) unexpose(ctx context.Context, sb *store.Sandbox, p *store.Port, why string) error {
	if ps := m.portSets(); ps != nil {
		if e, err := toExpose(p); err == nil {
			if err := ps.Unexpose(ctx, e); err != nil {
				return fmt.Errorf("withdraw host port %d from nftables: %w", p.HostPort, err)
			}
		}
	}
	_, err := m.store.DeletePort(ctx, sb, p.Port, store.Event{Kind: "sandbox.port_unexposed",
		Message: fmt.Sprintf("port %d (host port %d) %s", p.Port, p.HostPort, why)})
	return err
}

// ExposedPorts lists exposed ports, of one sandbox (ref) or of all ("").
func (m *Manager) ExposedPorts(ctx context.Context, ref string) ([]api.ExposedPort, error) {
	id := ""
	if ref != "" {
		sb, err := m.Get(ctx, ref)
		if err != nil {
			return nil, err
		}
		id = sb.ID
	}
	ports, err := m.store.Ports(ctx, id)
	if err != nil {
		return nil, err
	}
	out := []api.ExposedPort{}
	names := map[string]string{}
	for _, p := range ports {
		if _, ok := names[p.SandboxID]; !ok {
			if sb, err := m.store.Sandbox(ctx, p.SandboxID); err == nil {
				names[p.SandboxID] = sb.Name
			}
		}
		out = append(out, m.portView(p, names[p.SandboxID]))
	}
	return out, nil
}

// syncPorts withdraws a sandbox's exposed ports once it no longer runs
// (stopped, hibernated, failed, destroyed); live, it (re)publishes them
// (idempotent, for a restart of agentd).
func (m *Manager) syncPorts(sb *store.Sandbox) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ports, err := m.store.Ports(ctx, sb.ID)
	if err != nil || len(ports) == 0 {
		return
	}
	for _, p := range ports {
		if portLive(sb.State) {
			if ps := m.portSets(); ps != nil {
				if e, err := toExpose(p); err == nil {
					if err := ps.Expose(ctx, e); err != nil {
						m.opts.Log.Warn("republish exposed port", "sandbox_id", sb.ID, "host_port", p.HostPort, "err", err)
					}
				}
			}
			continue
		}
		if err := m.unexpose(ctx, sb, p, "withdrawn: the sandbox is "+string(sb.State)); err != nil {
			m.opts.Log.Warn("withdraw exposed port", "sandbox_id", sb.ID, "host_port", p.HostPort, "err", err)
		}
	}
}

// PortGC withdraws exposed ports whose TTL ended, and those of sandboxes
// that no longer run (a change agentd missed).
func (m *Manager) PortGC(ctx context.Context) error {
	ports, err := m.store.Ports(ctx, "")
	if err != nil {
		return err
	}
	now := m.now()
	for _, p := range ports {
		sb, err := m.store.Sandbox(ctx, p.SandboxID)
		if err != nil {
			continue
		}
		switch {
		case !portLive(sb.State):
			m.syncPorts(sb)
		case p.ExpiresAt != nil && !now.Before(*p.ExpiresAt):
			if err := m.unexpose(ctx, sb, p, "expired"); err != nil {
				m.opts.Log.Warn("withdraw expired port", "sandbox_id", sb.ID, "host_port", p.HostPort, "err", err)
			}
		}
	}
	return nil
}
