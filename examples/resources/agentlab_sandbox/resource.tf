# A throwaway sandbox for one agent run, gone after two hours.
resource "agentlab_sandbox" "fix_123" {
  name    = "fix-123"
  profile = "yolo-ephemeral"
  ttl     = "2h"
  tags    = ["team-a"]
}

output "fix_123_ip" {
  value = agentlab_sandbox.fix_123.ip
}
