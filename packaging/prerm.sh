#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  systemctl stop agentd.service || true
  systemctl disable agentd.service >/dev/null 2>&1 || true
fi
