package agent_test

import (
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// TestNodesAndDrain: GET /v1/nodes shows each node's capacity and what
// agentd committed there; a drain is remembered and an unknown node named.
func TestNodesAndDrain(t *testing.T) {
	_, c := startDev(t, agent.DevOptions{})
	ctx := tctx(t)
	sb := create(t, c, "n1")
	ns, err := c.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) != 1 || ns[0].Name != "pve" || !ns[0].Online || ns[0].MemoryMB <= 0 || ns[0].CPUs <= 0 {
		t.Fatalf("nodes %+v", ns)
	}
	if ns[0].Sandboxes != 1 || ns[0].CommittedMB < int64(sb.MemoryMB) || ns[0].FreeMB != ns[0].MemoryMB-ns[0].CommittedMB {
		t.Fatalf("node pve with sandbox %s (%d MiB): %+v", sb.Name, sb.MemoryMB, ns[0])
	}
	n, err := c.DrainNode(ctx, "pve", true)
	if err != nil || !n.Drained {
		t.Fatalf("drain: %+v %v", n, err)
	}
	if ns, _ = c.Nodes(ctx); !ns[0].Drained {
		t.Fatal("the drain was not kept")
	}
	if _, err := c.DrainNode(ctx, "pve7", true); !api.IsCode(err, api.CodeNodeNotFound) {
		t.Fatalf("drain of an unknown node: %v", err)
	}
	if n, err = c.DrainNode(ctx, "pve", false); err != nil || n.Drained {
		t.Fatalf("undrain: %+v %v", n, err)
	}
}
