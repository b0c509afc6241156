#!/usr/bin/env bash
# Runs all of banger's tests: unit, integration and end-to-end (real QEMU guests in
# network namespaces the tests create). Installs what it needs first: Debian packages
# (scripts/deps.sh) and the guest kit (scripts/guest-kit.sh). Must run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: run as root: the end-to-end tests create network namespaces, bridges, taps and nftables rules (sudo $0)" >&2
  exit 2
fi

scripts/deps.sh
scripts/guest-kit.sh

cargo build --workspace --all-targets
# The end-to-end tests boot real guests under TCG; two cores are shared between them.
cargo test --workspace --no-fail-fast -- --test-threads=2
