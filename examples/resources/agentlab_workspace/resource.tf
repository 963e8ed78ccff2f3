# The durable /work volume. Destroying it destroys the data, so agentd's
# provider refuses to while deletion_protection is true (the default); to
# delete it on purpose, set deletion_protection = false, apply, then destroy.
# A workspace that still has snapshots is deleted only with force_destroy.
# On a cluster, node says where its volume lives (agentd's own node when
# unset); changing it moves the detached workspace there in place, its data
# kept (agentd workspace move), and storage changed with it moves it onto
# that storage on the new node.
resource "agentlab_workspace" "team_a" {
  name                = "team-a"
  size_gb             = 80
  deletion_protection = true
  force_destroy       = false
}
