package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

func parsePort(flag, s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, usagef("%s %q is not a TCP port (1-65535)", flag, s)
	}
	return p, nil
}

func (g *options) sandboxExposeCmd() *cobra.Command {
	var req api.ExposeRequest
	cmd := &cobra.Command{
		Use:   "expose NAME|VMID|ID PORT [--host-port P] [--source CIDR…] [--ttl D] [--public]",
		Short: "Publish a sandbox's TCP port on the host's uplink address",
		Long: `Publish TCP port PORT of a READY or RUNNING sandbox on the Proxmox host's
uplink address (nftables DNAT in table inet agentlab): host:HOST_PORT then
reaches the sandbox's PORT, from the given sources only. Without --host-port a
free one of expose_port_range is taken; without --source the port is open to
expose_default_sources (the host's LAN, from the agent config). 0.0.0.0/0 is
never used without --public.

An exposed port is withdrawn by unexpose, when its --ttl ends, and when the
sandbox stops, hibernates or is destroyed (expose it again after a start).`,
		Example: `  agentd sandbox expose demo 8080
  agentd sandbox expose demo 8080 --host-port 20080 --source 192.168.1.0/24 --ttl 2h
  agentd sandbox expose demo 3000 --public --ttl 30m --json`,
		Args:              args("NAME|VMID|ID", "PORT"),
		ValidArgsFunction: g.completeSandboxes,
		RunE: func(cmd *cobra.Command, a []string) error {
			p, err := parsePort("PORT", a[1])
			if err != nil {
				return err
			}
			req.Port = p
			if req.HostPort < 0 || req.HostPort > 65535 {
				return usagef("--host-port %d is not a TCP port (1-65535)", req.HostPort)
			}
			for _, s := range req.Sources {
				if (s == "0.0.0.0/0" || s == "0/0") && !req.Public {
					return usagef("--source %s opens the port to every address: add --public to mean it", s)
				}
			}
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				ep, err := c.Expose(ctx, a[0], req)
				if err != nil {
					return err
				}
				return g.printPorts(cmd.OutOrStdout(), []api.ExposedPort{*ep}, true)
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&req.HostPort, "host-port", 0, "host port to publish on (default: a free one of expose_port_range)")
	f.StringSliceVar(&req.Sources, "source", nil, "IPv4 address or CIDR allowed to connect (repeatable; default: expose_default_sources)")
	f.StringVar(&req.TTL, "ttl", "", "withdraw the port after this long, e.g. 2h (default: until the sandbox stops)")
	f.BoolVar(&req.Public, "public", false, "allow every source (0.0.0.0/0) when no --source is given")
	return cmd
}

func (g *options) sandboxUnexposeCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "unexpose NAME|VMID|ID PORT",
		Short:             "Withdraw an exposed port",
		Long:              `Remove the DNAT of a sandbox's exposed PORT (the sandbox's port, not the host port).`,
		Example:           `  agentd sandbox unexpose demo 8080`,
		Args:              args("NAME|VMID|ID", "PORT"),
		ValidArgsFunction: g.completeSandboxes,
		RunE: func(cmd *cobra.Command, a []string) error {
			p, err := parsePort("PORT", a[1])
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				if err := c.Unexpose(ctx, a[0], p); err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), map[string]int{"unexposed": p})
				}
				printf(cmd.OutOrStdout(), "unexposed port %d of %s\n", p, a[0])
				return nil
			})
		},
	}
}

func (g *options) sandboxExposedCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "exposed [NAME|VMID|ID]",
		Short: "List exposed ports, of one sandbox or of all",
		Example: `  agentd sandbox exposed
  agentd sandbox exposed demo --json`,
		Args:              optionalArg("sandbox"),
		ValidArgsFunction: g.completeSandboxes,
		RunE: func(cmd *cobra.Command, a []string) error {
			ref := ""
			if len(a) == 1 {
				ref = a[0]
			}
			return g.withClient(cmd, func(c *client.Client, ctx contextT) error {
				ports, err := c.ExposedPorts(ctx, ref)
				if err != nil {
					return err
				}
				return g.printPorts(cmd.OutOrStdout(), ports, false)
			})
		},
	}
}

func (g *options) printPorts(w io.Writer, ports []api.ExposedPort, one bool) error {
	if g.json {
		if one {
			return printJSON(w, ports[0])
		}
		return printJSON(w, api.ExposedPortList{Ports: ports})
	}
	rows := make([][]string, 0, len(ports))
	for _, p := range ports {
		host := p.HostAddress
		if host == "" {
			host = "(uplink)"
		}
		rows = append(rows, []string{p.Sandbox, strconv.Itoa(p.Port), fmt.Sprintf("%s:%d", host, p.HostPort),
			strings.Join(p.Sources, ","), fmtTime(p.ExpiresAt)})
	}
	return g.table(w, "SANDBOX\tPORT\tHOST\tSOURCES\tEXPIRES", rows)
}
