# A team with a quota, managed with a global admin token (the agent's own
# API token or the Unix socket). Keys left out are 0: no limit.
resource "agentlab_team" "ml" {
  name             = "ml"
  description      = "ML research agents"
  max_sandboxes    = 10
  max_cores        = 40
  max_memory_mb    = 81920
  max_workspace_gb = 500
  max_ttl          = "24h"
}
