# AgentLab quickstart: one disposable sandbox, and one persistent workspace
# with a session on it. Against `agentd dev`, the provider reads
# AGENTLAB_ENDPOINT, AGENTLAB_TOKEN and AGENTLAB_CA_CERT from the environment.
terraform {
  required_providers {
    agentlab = {
      source = "agentlab/agentlab"
    }
  }
}

provider "agentlab" {}

data "agentlab_host" "this" {}

resource "agentlab_sandbox" "scratch" {
  name    = "quickstart-scratch"
  profile = "yolo-ephemeral"
  ttl     = "1h"
}

# The quickstart ends with terraform destroy, so it turns off the protection
# every workspace has by default; keep it on (the default) for real data.
resource "agentlab_workspace" "work" {
  name                = "quickstart-work"
  size_gb             = 20
  deletion_protection = false
}

resource "agentlab_session" "dev" {
  name      = "quickstart"
  profile   = "yolo-workspace"
  workspace = agentlab_workspace.work.name
}

output "proxmox" {
  value = "Proxmox VE ${data.agentlab_host.this.proxmox_version} on node ${data.agentlab_host.this.node}"
}

output "scratch" {
  value = "${agentlab_sandbox.scratch.name}: VM ${agentlab_sandbox.scratch.vmid}, ${agentlab_sandbox.scratch.ip}, lease until ${agentlab_sandbox.scratch.lease_expires_at}"
}

output "session" {
  value = "${agentlab_session.dev.name}: sandbox ${agentlab_session.dev.sandbox} at ${agentlab_session.dev.ip}, workspace ${agentlab_workspace.work.name} (${agentlab_workspace.work.size_gb} GiB)"
}
