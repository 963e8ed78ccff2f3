#!/usr/bin/env bash
# The main job: start `agentd dev`, `terraform apply` examples/quickstart with
# the locally built provider (dev_overrides in a temporary CLI config: no
# registry access), print the outputs, destroy, stop the agent. Re-runnable;
# leaves nothing behind. Needs bin/ (make build) and .tools/bin/terraform.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
TF=${TF:-$root/.tools/bin/terraform}
tmp=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

"$root/bin/agentd" dev --speed "${SPEED:-10}" --env-file "$tmp/agentlab.env" > /dev/null &
pid=$!
for _ in $(seq 100); do [ -s "$tmp/agentlab.env" ] && break; sleep 0.1; done
[ -s "$tmp/agentlab.env" ] || { echo "agentd dev did not start" >&2; exit 1; }
set -a; . "$tmp/agentlab.env"; set +a
echo "agentd dev is up at $AGENTLAB_ENDPOINT (Proxmox simulator at $PVE_URL)"

cat > "$tmp/cli.tfrc" <<RC
provider_installation {
  dev_overrides {
    "registry.terraform.io/agentlab/agentlab" = "$root/bin"
  }
  direct {}
}
RC
export TF_CLI_CONFIG_FILE=$tmp/cli.tfrc TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1
mkdir "$tmp/quickstart"
cp examples/quickstart/*.tf "$tmp/quickstart/"
cd "$tmp/quickstart"
echo "+ terraform apply (examples/quickstart)"
"$TF" apply -auto-approve -input=false -no-color | grep -Ev '^(│|╷|╵|Warning: Provider development overrides|The following provider|  - agentlab|$)' || true
echo "+ terraform destroy"
"$TF" destroy -auto-approve -input=false -no-color | grep -E '^(Destroy complete|Error)' || true
left=$("$root/bin/agentd" sandbox list --json | grep -c '"name"' || true)
echo "sandboxes left: $left"
[ "$left" = 0 ]
