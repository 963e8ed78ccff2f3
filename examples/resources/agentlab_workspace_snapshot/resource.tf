resource "agentlab_workspace" "team_a" {
  name                = "team-a-snapshots"
  size_gb             = 20
  deletion_protection = true
}

# Taken while the workspace is detached. Restoring it is an operator action:
#   agentd workspace snapshot restore team-a-snapshots baseline --yes
resource "agentlab_workspace_snapshot" "baseline" {
  workspace   = agentlab_workspace.team_a.name
  name        = "baseline"
  description = "clean checkout before the agents start"
}
