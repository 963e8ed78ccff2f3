package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// TestNodeCommands: node list shows the dev node, drain marks it in text
// and JSON, an unknown node is named in the error.
func TestNodeCommands(t *testing.T) {
	startDevConfig(t)
	wantAll(t, "node list", mustCLI(t, "node", "list"), "NODE", "STATE", "pve", "online")
	wantAll(t, "node drain", mustCLI(t, "node", "drain", "pve"), "pve", "drained")
	var l api.NodeList
	if err := json.Unmarshal([]byte(mustCLI(t, "node", "list", "--json")), &l); err != nil || len(l.Nodes) != 1 || !l.Nodes[0].Drained {
		t.Fatalf("node list --json: %+v %v", l, err)
	}
	if code, out := cli("node", "drain", "pve9"); code == 0 || !strings.Contains(out, `node "pve9" is not a node agentd uses (nodes: pve)`) {
		t.Fatalf("drain pve9: exit %d\n%s", code, out)
	}
	wantAll(t, "node undrain", mustCLI(t, "node", "undrain", "pve"), "online")
	// One round of the node agent, printing the ruleset it would load.
	wantAll(t, "node run --once --dry-run", mustCLI(t, "node", "run", "--node", "pve", "--once", "--dry-run"), "table bridge agentlab", "table inet agentlab")
	if code, out := cli("node", "run", "--once"); code == 0 || !strings.Contains(out, "needs --node") {
		t.Fatalf("node run without --node: exit %d\n%s", code, out)
	}
}
