# A snapshot is imported as WORKSPACE/NAME.
terraform import agentlab_workspace_snapshot.baseline team-a-snapshots/baseline
