# One persistent workspace and one session per team member. A platform team
# calls this module once per person:
#
#   module "alice" {
#     source = "./modules/team-sandbox"
#     member = "alice"
#   }
#
# It uses the caller's agentlab provider, so it works in whichever team the
# provider's token (or its team setting) acts in: pass a team's provider with
# `providers = { agentlab = agentlab.ml }` (see examples/teams).
terraform {
  required_providers {
    agentlab = {
      source = "agentlab/agentlab"
    }
  }
}

variable "member" {
  description = "Team member's short name (lowercase letters, digits, dashes)."
  type        = string
}

variable "profile" {
  description = "Profile of the member's sandboxes."
  type        = string
  default     = "yolo-workspace"
}

variable "workspace_size_gb" {
  description = "Size of the member's workspace in GiB."
  type        = number
  default     = 40
}

variable "running" {
  description = "Whether the member's sandbox runs (false destroys the sandbox, keeps the workspace)."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Refuse to delete the member's workspace (set false and apply before removing a member)."
  type        = bool
  default     = true
}

variable "force_destroy" {
  description = "Delete the member's workspace even if it still has snapshots."
  type        = bool
  default     = false
}

resource "agentlab_workspace" "this" {
  name                = "${var.member}-work"
  size_gb             = var.workspace_size_gb
  deletion_protection = var.deletion_protection
  force_destroy       = var.force_destroy
}

resource "agentlab_session" "this" {
  name      = var.member
  profile   = var.profile
  workspace = agentlab_workspace.this.name
  running   = var.running
}

output "ip" {
  description = "Address of the member's current sandbox."
  value       = agentlab_session.this.ip
}

output "sandbox" {
  description = "Name of the member's current sandbox."
  value       = agentlab_session.this.sandbox
}

output "workspace" {
  description = "Name of the member's workspace."
  value       = agentlab_workspace.this.name
}
