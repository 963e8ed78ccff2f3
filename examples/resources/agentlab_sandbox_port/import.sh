# An exposed port is imported as SANDBOX:PORT, the sandbox by name or id and
# the guest port (`agentd sandbox exposed preview-42` lists them).
terraform import agentlab_sandbox_port.web preview-42:3000
