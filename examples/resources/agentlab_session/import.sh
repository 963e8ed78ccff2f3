# A session is imported by name (or id).
terraform import agentlab_session.alice alice
