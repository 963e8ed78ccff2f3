#!/usr/bin/env bash
# A day-2 CLI session against `agentd dev` (no Proxmox needed).
# Run from the repository root: make demo-cli   (AGENTD=path/to/agentd to override)
set -euo pipefail
AGENTD=${AGENTD:-bin/agentd}
dir=$(mktemp -d)
"$AGENTD" dev --speed 20 --env-file "$dir/env" >/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [ -s "$dir/env" ] && break; sleep 0.1; done
set -a; . "$dir/env"; set +a   # AGENTLAB_ENDPOINT, AGENTLAB_TOKEN, AGENTLAB_CA_CERT, PVE_*

run() { echo "\$ agentd $*"; "$AGENTD" "$@"; echo; }
run status
run profile list
run sandbox create --name demo --profile yolo-ephemeral --ttl 2h
run sandbox list --filter state=RUNNING
run sandbox lease renew demo --ttl 4h
# In through the guest agent: no network path or SSH needed (agentd dev's
# guest has a small built-in command set, see sandbox exec --help).
run sandbox exec demo -- sh -c 'echo hello; uname -a'
echo 'patch text' | run sandbox exec demo --stdin -- cat
echo "\$ agentd sandbox exec demo -- sh -c 'exit 3'"
"$AGENTD" sandbox exec demo -- sh -c 'exit 3' || echo "exit status $?"
# Snapshots of the sandbox's VM (refused while a workspace is attached).
run sandbox snapshot create demo clean-state --description "before the agent ran"
run sandbox snapshot list demo
run sandbox snapshot restore demo clean-state --yes --start
run sandbox snapshot delete demo clean-state
# Revert goes back to "clean", taken before the first boot (behavior.clean_snapshot).
run sandbox revert demo --yes
"$AGENTD" sandbox events demo --tail 40 | grep -o 'reverted to snapshot clean' | head -1
# Exposed ports: host:PORT on the uplink address reaches the guest's port,
# from the given sources (default: expose_default_sources, the host's LAN).
run sandbox expose demo 8080 --source 192.168.1.0/24 --ttl 2h
run sandbox expose demo 3000 --host-port 20080
run sandbox exposed
run sandbox unexpose demo 3000
echo "\$ agentd sandbox expose demo 9000 --source 0.0.0.0/0"
"$AGENTD" sandbox expose demo 9000 --source 0.0.0.0/0 || echo "exit status $?"
# Pause (hibernate) frees the RAM and stops the lease clock; resume brings it back.
run sandbox pause demo
run sandbox resume demo
echo "\$ agentd sandbox resume demo"
"$AGENTD" sandbox resume demo || echo "exit status $?"
run sandbox exposed demo   # withdrawn when the sandbox hibernated
run sandbox update demo --cores 8 --memory-mb 8192 --disk-gb 60
run sandbox resize demo --cores 8   # the older name of update
run sandbox stop demo
run sandbox start demo
run sandbox list --json
echo "\$ agentd sandbox stop --all"
"$AGENTD" sandbox stop --all || echo "exit status $?"
run sandbox stop --all --profile yolo-ephemeral --filter name=demo --yes --json
id=$("$AGENTD" sandbox show demo --json | sed -n 's/^  "id": "\(.*\)",$/\1/p')
run sandbox destroy demo
run sandbox events "$id" --tail 4   # a destroyed sandbox answers to its id only

# Workspaces outlive sandboxes; sessions put a fresh sandbox on one per resume.
run workspace create --name team-a --size 20G
run session create --name alice --profile yolo-workspace --workspace team-a
run session resume alice
run session stop alice
run workspace snapshot create team-a before-refactor
run workspace snapshot list team-a
run workspace check team-a
run session delete alice
run workspace delete team-a --yes
