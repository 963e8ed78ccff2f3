# A sandbox created elsewhere (for example with `agentd sandbox create`).
data "agentlab_sandbox" "build" {
  name = "build-runner"
}

output "build_ip" {
  value = data.agentlab_sandbox.build.ip
}
