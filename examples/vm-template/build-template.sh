#!/usr/bin/env bash
# Builds the AgentLab sandbox template on a Proxmox VE host, as root:
#   ./build-template.sh [VMID] [STORAGE] [BRIDGE]      (defaults: 9000 local-lvm vmbr1)
# It downloads the Debian 12 generic cloud image, installs qemu-guest-agent,
# git and the AgentLab guest runner (the agentd binary of this host), and turns
# the VM into a template with a cloud-init drive and the guest agent enabled.
# Needs: libguestfs-tools (virt-customize), and agentd in /usr/bin.
set -euo pipefail
VMID=${1:-9000}
STORAGE=${2:-local-lvm}
BRIDGE=${3:-vmbr1}
IMAGE_URL=${IMAGE_URL:-https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2}
HERE=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if qm status "$VMID" >/dev/null 2>&1; then
  echo "VM $VMID already exists; choose another VMID or remove it first" >&2
  exit 1
fi
command -v virt-customize >/dev/null || { echo "apt install libguestfs-tools" >&2; exit 1; }

curl -fsSL -o "$work/base.qcow2" "$IMAGE_URL"
virt-customize -a "$work/base.qcow2" \
  --install qemu-guest-agent,git,ca-certificates,curl \
  --copy-in /usr/bin/agentd:/usr/local/bin \
  --copy-in "$HERE/agentlab-runner.service:/etc/systemd/system" \
  --run-command 'systemctl enable qemu-guest-agent agentlab-runner.service' \
  --run-command 'mkdir -p /work && truncate -s 0 /etc/machine-id'

qm create "$VMID" --name agentlab-template --memory 2048 --cores 2 \
  --net0 "virtio,bridge=$BRIDGE" --scsihw virtio-scsi-pci --ostype l26 \
  --agent enabled=1 --serial0 socket --vga serial0
qm set "$VMID" --scsi0 "$STORAGE:0,import-from=$work/base.qcow2"
qm set "$VMID" --ide2 "$STORAGE:cloudinit" --boot order=scsi0 --ipconfig0 ip=dhcp
qm template "$VMID"
echo "template $VMID ready; check it with: agentd host check"
