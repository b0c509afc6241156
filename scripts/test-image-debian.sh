#!/usr/bin/env bash
# test-image-debian.sh — the "image a developer already has" that the OCI end-to-end
# tests boot: Debian 12 (bookworm) made with `debootstrap --variant=minbase`, so it has
# no init and no SSH server, as an OCI image layout (scripts/oci-layout.sh).
#
# Output: $BANGER_TEST_IMAGES (default <repo>/.cache/test-images)/debian-bookworm-minbase/
# (tag `12`). Cached: the debootstrap runs only when the layout is missing (a few
# minutes and ~200 MB of downloads from the configured Debian mirror); delete the folder
# to rebuild it. Needs root (debootstrap) and the `debootstrap` package.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")" && pwd)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd)"
OUT_DIR="${BANGER_TEST_IMAGES:-$REPO_ROOT/.cache/test-images}"
RELEASE=bookworm
LAYOUT="$OUT_DIR/debian-$RELEASE-minbase"
MIRROR="${BANGER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

log() { printf 'test-image-debian: %s\n' "$*" >&2; }

if [[ -s "$LAYOUT/index.json" ]]; then
    log "cached: $LAYOUT"
    exit 0
fi
((EUID == 0)) || {
    log "error: run as root (debootstrap)"
    exit 1
}
command -v debootstrap >/dev/null || {
    log "error: debootstrap is missing (scripts/deps.sh installs it)"
    exit 1
}
mkdir -p -- "$OUT_DIR"
work="$(mktemp -d "$OUT_DIR/.debootstrap.XXXXXX")"
trap 'rm -rf -- "$work"' EXIT
log "debootstrap --variant=minbase $RELEASE (a few minutes)"
debootstrap --variant=minbase "$RELEASE" "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -n 20 -- "$work/debootstrap.log" >&2
    log "error: debootstrap failed"
    exit 1
}
# What a container image leaves out: package caches and logs.
rm -rf -- "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"* \
    "$work/root/var/log/"*.log
"$SCRIPT_DIR/oci-layout.sh" "$work/root" "$LAYOUT" 12
log "built $LAYOUT"
