# A snapshot is imported as WORKSPACE/NAME (WORKSPACE: its name, id or holder VMID).
terraform import agentlab_workspace_snapshot.baseline team-a-snapshots/baseline
