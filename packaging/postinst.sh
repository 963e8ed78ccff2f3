#!/bin/sh
set -e
if ! getent group agentd >/dev/null; then
  groupadd --system agentd
fi
install -d -m 0750 -o root -g agentd /var/lib/agentd /etc/agentd /etc/agentd/profiles
chgrp agentd /etc/agentd/config.yaml 2>/dev/null || true
chmod 0640 /etc/agentd/config.yaml 2>/dev/null || true
if [ -d /run/systemd/system ]; then
  systemd-tmpfiles --create /usr/lib/tmpfiles.d/agentd.conf || true
  systemctl daemon-reload || true
  # Not started here: it needs proxmox_token_id and its secret file first.
  systemctl enable agentd.service >/dev/null 2>&1 || true
fi
