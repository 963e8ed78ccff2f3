resource "agentlab_team" "ml" {
  name = "ml"
}

# A member token of team ml for its CI, valid for 30 days. Its value lands
# in the state: keep the state in an encrypted backend, or issue tokens
# with `agentd token create` instead.
resource "agentlab_team_token" "ci" {
  team = agentlab_team.ml.name
  name = "ci"
  role = "member"
  ttl  = "720h"
}

output "ci_token" {
  value     = agentlab_team_token.ci.value
  sensitive = true
}
