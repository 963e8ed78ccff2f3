# Keep two booted sandboxes of yolo-ephemeral ready, never more than four:
# a create of that profile then reports RUNNING without a clone and a boot.
resource "agentlab_pool" "ephemeral" {
  profile   = "yolo-ephemeral"
  min_ready = 2
  max       = 4
}

# Created from the pool while it has a ready member, cold otherwise.
resource "agentlab_sandbox" "runner" {
  name    = "pool-runner"
  profile = agentlab_pool.ephemeral.profile
}
