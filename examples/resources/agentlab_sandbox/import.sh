# A sandbox is imported by id (sbx-…), VMID or name. Digits are always a VMID,
# never a name, so an import by VMID cannot bind another sandbox.
terraform import agentlab_sandbox.fix_123 fix-123
terraform import agentlab_sandbox.fix_123 104
