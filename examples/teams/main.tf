# Two teams on one agentd, each with its own token: one aliased provider per
# team, passed to the team-sandbox module. The module configures no provider
# (so that it can be called with count or for_each); the provider, and with
# it the team, comes from here. Each team sees only its own objects, so both
# can have a member "alice" with a workspace "alice-work".
#
# The tokens are team tokens (agentd token create --team ml --name tf), given
# as variables: TF_VAR_ml_token=agt_... terraform apply.
terraform {
  required_providers {
    agentlab = {
      source = "agentlab/agentlab"
    }
  }
}

variable "endpoint" {
  description = "agentd's TLS listener, https://host:port."
  type        = string
}

variable "ca_cert" {
  description = "PEM certificate (or a path to one) of agentd's TLS listener."
  type        = string
}

variable "ml_token" {
  description = "API token of team ml."
  type        = string
  sensitive   = true
}

variable "web_token" {
  description = "API token of team web."
  type        = string
  sensitive   = true
}

variable "deletion_protection" {
  description = "Refuse to delete the members' workspaces."
  type        = bool
  default     = true
}

provider "agentlab" {
  alias    = "ml"
  endpoint = var.endpoint
  ca_cert  = var.ca_cert
  token    = var.ml_token
}

provider "agentlab" {
  alias    = "web"
  endpoint = var.endpoint
  ca_cert  = var.ca_cert
  token    = var.web_token
}

module "ml_alice" {
  source              = "../modules/team-sandbox"
  providers           = { agentlab = agentlab.ml }
  member              = "alice"
  deletion_protection = var.deletion_protection
}

module "web_alice" {
  source              = "../modules/team-sandbox"
  providers           = { agentlab = agentlab.web }
  member              = "alice"
  workspace_size_gb   = 10
  deletion_protection = var.deletion_protection
}

# A team token reads its own team: no name needed.
data "agentlab_team" "ml" {
  provider   = agentlab.ml
  depends_on = [module.ml_alice]
}

output "ml_alice_ip" {
  value = module.ml_alice.ip
}

output "web_alice_ip" {
  value = module.web_alice.ip
}

output "ml_usage" {
  value = "team ${data.agentlab_team.ml.name}: ${data.agentlab_team.ml.usage.sandboxes} sandboxes, ${data.agentlab_team.ml.usage.workspace_gb} GiB of workspaces"
}
