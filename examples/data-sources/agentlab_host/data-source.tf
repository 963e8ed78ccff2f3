data "agentlab_host" "this" {}

output "proxmox_version" {
  value = data.agentlab_host.this.proxmox_version
}
