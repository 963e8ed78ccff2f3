# A team is imported by its name.
terraform import agentlab_team.ml ml
