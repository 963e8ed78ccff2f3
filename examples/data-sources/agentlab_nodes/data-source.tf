data "agentlab_nodes" "this" {}

# The online, undrained node with the most free memory: a value for an
# agentlab_sandbox's node.
locals {
  usable_nodes = [for n in data.agentlab_nodes.this.nodes : n if n.online && !n.drained]
  most_free_mb = max([for n in local.usable_nodes : n.free_mb]...)
}

output "roomiest_node" {
  value = [for n in local.usable_nodes : n.name if n.free_mb == local.most_free_mb][0]
}
