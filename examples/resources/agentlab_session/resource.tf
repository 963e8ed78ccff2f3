resource "agentlab_workspace" "alice" {
  name                = "alice"
  size_gb             = 40
  deletion_protection = true
}

# A session puts a fresh sandbox on the workspace; set running = false at night
# to destroy the sandbox and keep the workspace.
resource "agentlab_session" "alice" {
  name      = "alice"
  profile   = "yolo-workspace"
  workspace = agentlab_workspace.alice.name
  running   = true
}

output "alice_ip" {
  value = agentlab_session.alice.ip
}
