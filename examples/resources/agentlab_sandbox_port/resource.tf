# An agent's dev server, reachable from the office LAN while the sandbox runs.
resource "agentlab_sandbox" "preview" {
  name    = "preview-42"
  profile = "interactive-dev"
}

resource "agentlab_sandbox_port" "web" {
  sandbox = agentlab_sandbox.preview.name
  port    = 3000
  sources = ["192.168.10.0/24"]
  ttl     = "8h"
}

output "preview_url" {
  value = "http://${agentlab_sandbox_port.web.host_address}:${agentlab_sandbox_port.web.host_port}"
}
