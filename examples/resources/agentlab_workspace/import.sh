# A workspace is imported by name (or id, ws-…, or its holder's VMID).
terraform import agentlab_workspace.team_a team-a
