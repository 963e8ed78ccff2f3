# With agentd on the same host, the Unix socket needs no token.
provider "agentlab" {
  endpoint = "unix:///run/agentd/agentd.sock"
}
