package agent_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim"
)

// Proxmox serialises every clone of a node's template on the storage lock
// (cluster_lock_storage) and gives up after its timeout: a client that
// starts a burst of clones on one node sees `can't lock file … got
// timeout`. agentd runs at most placement.max_inflight_per_node clones and
// starts per node, on one node as on a cluster, so a burst of creates all
// succeed. The simulator here holds the lock far longer, relative to its
// timeout, than a real host: with more than two clones queued on a node
// some would time out.
func TestBurstOfCreatesNeverHitsStorageLockTimeout(t *testing.T) {
	for _, nodes := range []int{1, 3} {
		t.Run(fmt.Sprintf("nodes=%d", nodes), func(t *testing.T) {
			d, c := startDev(t, agent.DevOptions{Nodes: nodes, ConfigureSim: func(o *pvesim.Options) {
				o.Durations.StorageLock = 100 * time.Millisecond
				o.StorageLockTimeout = 250 * time.Millisecond
			}})
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			n := 10 * nodes
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					name := fmt.Sprintf("burst%d", i)
					if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: name, Profile: "yolo-ephemeral"}); err != nil {
						errs <- err
						return
					}
					if _, err := waitRunning(ctx, c, name); err != nil {
						errs <- err
					}
				}(i)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if got := d.Sim.StorageLockTimeouts(); got != 0 {
				t.Errorf("%d storage lock timeouts in the simulator", got)
			}
			for _, tk := range d.Sim.Dump().Tasks {
				if strings.Contains(tk.ExitStatus, "got timeout") || strings.Contains(tk.ExitStatus, "lock request timeout") {
					t.Errorf("task %s %s: %s", tk.Type, tk.ID, tk.ExitStatus)
				}
			}
		})
	}
}
