#!/usr/bin/env bash
# Installs what the test suite needs and the Go toolchain does not bring,
# from Debian's packages: Chromium for the real-browser portal test, and
# qemu-utils (qemu-img) to check replica disk formats, qemu-system-x86 for
# the qemu driver's tests against a real QEMU, linux-image-cloud-amd64 and
# busybox-static for the real guest those tests boot (agent/internal/guesttest),
# qemu-guest-agent, copied into that guest for app-consistent captures,
# xfsprogs (mkfs.xfs)
# for the reflink capture test on a loop-mounted XFS; and, from npm with
# its lockfile, Azurite (the Azure Storage emulator) for the Azure Blob
# target's tests. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

# Azurite, pinned in scripts/azurite/package-lock.json.
if [ ! -x scripts/azurite/node_modules/.bin/azurite-blob ] ||
   [ scripts/azurite/package-lock.json -nt scripts/azurite/node_modules/.package-lock.json ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "Installing Azurite from npm (scripts/azurite)"
    npm ci --prefix scripts/azurite --no-audit --no-fund --loglevel=error
  else
    echo "npm is missing: the Azure Blob tests need Node.js and npm to install Azurite (apt-get install nodejs npm)" >&2
    exit 1
  fi
fi

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v mkfs.xfs >/dev/null 2>&1 || need+=(xfsprogs)
command -v busybox >/dev/null 2>&1 || need+=(busybox-static)
command -v qemu-ga >/dev/null 2>&1 || [ -x /usr/sbin/qemu-ga ] || need+=(qemu-guest-agent)
ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || need+=(linux-image-cloud-amd64)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "The tests need these Debian packages: ${need[*]}" >&2
  echo "Install them with: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "Installing test dependencies: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
