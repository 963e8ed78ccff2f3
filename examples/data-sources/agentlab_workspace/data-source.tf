data "agentlab_workspace" "shared" {
  name = "shared-cache"
}

output "shared_volume" {
  value = data.agentlab_workspace.shared.volume
}
