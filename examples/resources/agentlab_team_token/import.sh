# A token is imported by its id (agentd token list); its value cannot be
# imported (agentd keeps only a hash), so `value` is null afterwards.
terraform import agentlab_team_token.ci tok-0123456789ab
