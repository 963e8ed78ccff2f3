# A sandbox is imported by name, VMID or id.
terraform import agentlab_sandbox.fix_123 fix-123
terraform import agentlab_sandbox.fix_123 104
