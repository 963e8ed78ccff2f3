# The durable /work volume. Destroying it destroys the data, so guard it.
resource "agentlab_workspace" "team_a" {
  name    = "team-a"
  size_gb = 80

  lifecycle {
    prevent_destroy = true
  }
}
