#!/usr/bin/env bash
# Installs the Debian packages banger's daemon, guest kit and tests need (idempotent).
# Runs as root (CI and the README's commands do). qemu-utils is deliberately not listed:
# on this machine kind it comes preinstalled from backports and reinstalling conflicts.
set -euo pipefail

packages=(
  qemu-system-x86   # the QEMU microvm hypervisor
  busybox-static    # guest kit: initramfs and rootfs userland
  dropbear-bin      # guest kit: SSH server in the guest
  patchelf          # guest kit: dropbear of the guest bits runs on its own loader
  openssh-client    # tests: ssh into guests
  e2fsprogs         # mkfs.ext4, resize2fs, e2fsck, debugfs
  cpio              # guest kit: initramfs archive
  lz4               # guest kit: vmlinux extraction
  nftables          # NAT rules
  iproute2          # tests: network namespaces
  skopeo            # tests: push images to the local OCI registry
  docker-registry   # tests and up.sh: a real OCI registry on 127.0.0.1
  debootstrap       # tests: the Debian image with no init and no SSH server
  apache2-utils     # tests: htpasswd users of the private registry
  openssl           # tests: the private registry's test CA
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "deps: all present" >&2
fi
