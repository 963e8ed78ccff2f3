data "agentlab_profile" "dev" {
  name = "interactive-dev"
}

output "dev_cores" {
  value = data.agentlab_profile.dev.cores
}
