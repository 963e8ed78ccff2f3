# A session is imported by name (or id, ses-…).
terraform import agentlab_session.alice alice
