#!/bin/sh
set -e
# The state (/var/lib/agentd) is kept on remove and on purge: it records which
# VMs agentd owns. Remove it by hand once no sandbox or workspace is left.
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
