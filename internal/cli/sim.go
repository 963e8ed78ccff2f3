package cli

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

func newSimCmd() *cobra.Command {
	var (
		addr      string
		nodes     []string
		realistic bool
		bootDelay time.Duration
		caFile    string
		localDir  string
		sharedDir string
		speed     float64
		logReqs   string
		stateDir  string
		nNodes    int
		perNode   bool
		sharedTpl bool
		offline   []string
	)
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run the Proxmox VE API simulator",
		Long: `Run the embedded Proxmox VE API simulator over HTTPS until interrupted.

It prints how to reach it as KEY=VALUE lines (PVE_URL, PVE_TOKEN, PVE_USER,
PVE_PASSWORD, PVE_NODE, and PVE_CA_FILE when --ca-file is set), so that
  eval "$(agentd sim --addr 127.0.0.1:8006 &)"
style scripts and any Proxmox client can use it. A cloud-init template VM 9000
and the storages local (dir), local-lvm (lvmthin), local-zfs (zfspool) and
local-raw (dir, raw) are present. Test hooks are served under /_sim/.

With --nodes N (N > 1) it is a cluster of nodes pve1..pveN: each with its own
local storages, all sharing the NFS storage "shared"; the template is on pve1
(--template-per-node adds 9001.. on the others, --shared-template puts it on
the shared storage). POST /_sim/node-online {"node":"pve2","on":false} takes
a node offline: its API answers "595 No route to host" as pveproxy does for
an unreachable node, and it is listed offline until brought back.

With --state-dir the cluster survives restarts, even kill -9: every change
is written atomically before anyone can observe it. A restart is a restart of
PVE's API daemons on a host that kept running: VMs keep their power state,
tasks that were running come back stopped with "unexpected status", and the
token, password and certificate stay the same.`,
		Example: `  agentd sim --addr 127.0.0.1:0
  agentd sim --realistic --ca-file /tmp/pvesim.pem
  agentd sim --log-requests /tmp/pve-requests.jsonl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("nodes") {
				if nNodes < 1 {
					return usagef("--nodes must be at least 1, got %d", nNodes)
				}
				if cmd.Flags().Changed("node") {
					return usagef("--nodes and --node name the nodes twice; give one of them")
				}
				nodes = pvesim.NodeNames(nNodes)
			}
			opts := pvesim.Options{Addr: addr, Nodes: nodes, Fixtures: true, AgentBootDelay: bootDelay, LocalDir: localDir, StateDir: stateDir,
				TemplatePerNode: perNode, SharedTemplate: sharedTpl, SharedDir: sharedDir}
			if sharedDir != "" && len(nodes) < 2 {
				return usagef("--shared-dir backs the cluster's shared storage: it needs --nodes 2 or more")
			}
			if speed <= 0 {
				return usagef("--speed must be positive, got %g", speed)
			}
			if realistic {
				scale := func(d time.Duration) time.Duration { return time.Duration(float64(d) / speed) }
				rd := pvesim.RealisticDurations()
				opts.Durations.Default = scale(rd.Default)
				opts.Durations.ByType = map[string]time.Duration{}
				for k, v := range rd.ByType {
					opts.Durations.ByType[k] = scale(v)
				}
				if bootDelay == 0 {
					opts.AgentBootDelay = scale(20 * time.Second)
					opts.DHCPDelay = scale(5 * time.Second)
				}
				opts.AuthFailDelay = scale(3 * time.Second)
			}
			if logReqs != "" {
				f, err := pvesim.OpenRequestLog(logReqs)
				if err != nil {
					return err
				}
				defer f.Close()
				opts.RequestLog = f
			}
			sim, err := pvesim.New(opts)
			if err != nil {
				return err
			}
			defer sim.Close()
			for _, n := range offline {
				if err := sim.SetNodeOnline(n, false); err != nil {
					return usagef("--offline: %v", err)
				}
			}
			if caFile != "" {
				if err := os.WriteFile(caFile, sim.CAPEM(), 0o644); err != nil {
					return fmt.Errorf("write --ca-file: %w", err)
				}
			}
			id, secret := sim.Token()
			user, pass := sim.Login()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "PVE_URL=%s\nPVE_TOKEN=%s=%s\nPVE_USER=%s\nPVE_PASSWORD=%s\nPVE_NODE=%s\n",
				sim.URL(), id, secret, user, pass, sim.Node())
			if caFile != "" {
				fmt.Fprintf(out, "PVE_CA_FILE=%s\n", caFile)
			}
			if f, ok := out.(*os.File); ok {
				_ = f.Sync()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8006", "listen address (port 0 picks a free port)")
	cmd.Flags().StringSliceVar(&nodes, "node", []string{"pve"}, "node names (repeat for a cluster)")
	cmd.Flags().IntVar(&nNodes, "nodes", 1, "simulate a cluster of this many nodes, pve1..pveN, with the shared storage \"shared\" (1: the standalone node pve)")
	cmd.Flags().BoolVar(&perNode, "template-per-node", false, "in a cluster, a copy of the template on every node (VMID 9000+i on the i-th node, counting from 0)")
	cmd.Flags().BoolVar(&sharedTpl, "shared-template", false, "in a cluster, template 9000's disks on the shared storage")
	cmd.Flags().StringSliceVar(&offline, "offline", nil, "start with these nodes offline (POST /_sim/node-online {\"node\":N,\"on\":true} brings one back)")
	cmd.Flags().BoolVar(&realistic, "realistic", false, "task durations, guest boot time and login delay of a real host")
	cmd.Flags().DurationVar(&bootDelay, "agent-boot-delay", 0, "time from VM start until the guest agent answers")
	cmd.Flags().StringVar(&caFile, "ca-file", "", "write the simulator's self-signed certificate (PEM) here")
	cmd.Flags().StringVar(&localDir, "local-dir", "", "back the \"local\" storage with this directory (snippets in DIR/snippets), like /var/lib/vz")
	cmd.Flags().StringVar(&sharedDir, "shared-dir", "", "in a cluster, back the shared storage \"shared\" with this directory (snippets in DIR/snippets, seen from every node)")
	cmd.Flags().StringVar(&stateDir, "state-dir", "", "persist the simulated cluster (VMs, volumes and their content, snapshots, firewall, pools, tasks, token, certificate) here across restarts")
	cmd.Flags().StringVar(&logReqs, "log-requests", "", "append one JSON line per API request to this file (method, path, parameters with secrets redacted, status line, duration)")
	cmd.Flags().Float64Var(&speed, "speed", 1, "with --realistic, divide task and boot times by this")
	return cmd
}
