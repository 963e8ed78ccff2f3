data "agentlab_profiles" "all" {}

output "profile_names" {
  value = data.agentlab_profiles.all.names
}
