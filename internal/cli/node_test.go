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

// TestWorkspaceMoveCommand: workspace move to the node it is on is a no-op
// that prints the workspace (text and JSON); an unknown node is named, and
// --node is required.
func TestWorkspaceMoveCommand(t *testing.T) {
	startDevConfig(t)
	mustCLI(t, "workspace", "create", "--name", "mv", "--size", "1G")
	wantAll(t, "workspace move", mustCLI(t, "workspace", "move", "mv", "--node", "pve"), "Node", "pve", "mv")
	var w api.Workspace
	if err := json.Unmarshal([]byte(mustCLI(t, "workspace", "move", "mv", "--node", "pve", "--json")), &w); err != nil || w.Node != "pve" || w.Name != "mv" {
		t.Fatalf("workspace move --json: %+v %v", w, err)
	}
	if code, out := cli("workspace", "move", "mv", "--node", "pve9"); code == 0 || !strings.Contains(out, `node "pve9" is not a node agentd uses (nodes: pve)`) {
		t.Fatalf("move to pve9: exit %d\n%s", code, out)
	}
	if code, out := cli("workspace", "move", "mv"); code == 0 || !strings.Contains(out, `"node" not set`) {
		t.Fatalf("move without --node: exit %d\n%s", code, out)
	}
}
