# A workspace is imported by name (or id).
terraform import agentlab_workspace.team_a team-a
