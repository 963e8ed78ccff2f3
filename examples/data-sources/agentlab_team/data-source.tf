# Without a name: the team of the provider's token (or its team setting).
data "agentlab_team" "default" {
  name = "default"
}

output "default_sandboxes" {
  value = "${data.agentlab_team.default.usage.sandboxes} sandboxes (limit ${data.agentlab_team.default.max_sandboxes}, 0 = none)"
}
