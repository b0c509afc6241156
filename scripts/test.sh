#!/usr/bin/env bash
# Runs all of banger's tests: unit, integration and end-to-end (real QEMU guests in
# network namespaces the tests create), including the ones plain `cargo test` skips
# because they need root, QEMU or the guest kit (`#[ignore = "needs root …"]`).
# Installs what it needs first: Debian packages (scripts/deps.sh), the guest kit
# (scripts/guest-kit.sh) and the cached Debian test images (scripts/test-image-debian.sh).
# Must run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: run as root: the end-to-end tests create network namespaces, bridges, taps and nftables rules (as a user, plain \`cargo test\` runs every test that needs none of that)" >&2
  exit 2
fi
if ! command -v cargo >/dev/null; then
  echo "test.sh: cargo not found: install a Rust toolchain (1.89 or newer, e.g. with rustup) first" >&2
  exit 2
fi

scripts/deps.sh
scripts/guest-kit.sh
# The Debian images the OCI end-to-end tests boot (debootstrap; minutes on the first
# run, then cached in .cache/test-images).
scripts/test-image-debian.sh minbase
scripts/test-image-debian.sh systemd

cargo build --workspace --all-targets
# The end-to-end tests boot real guests under TCG; two cores are shared between them.
cargo test --workspace --no-fail-fast -- --include-ignored --test-threads=2
