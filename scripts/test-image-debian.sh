#!/usr/bin/env bash
# test-image-debian.sh [minbase|systemd] — the "images developers already have" that the
# OCI end-to-end tests boot, as OCI image layouts (scripts/oci-layout.sh), tag `12`:
#   minbase  Debian 12 (bookworm) made with `debootstrap --variant=minbase`: no init and
#            no SSH server (the default);
#   systemd  the same plus systemd-sysv: an image with its own init (systemd).
#
# Output: $BANGER_TEST_IMAGES (default <repo>/.cache/test-images)/debian-bookworm-VARIANT/.
# Cached: the debootstrap runs only when the layout is missing (a few minutes and
# ~200 MB of downloads from the configured Debian mirror); delete the folder to rebuild
# it. Needs root (debootstrap) and the `debootstrap` package.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")" && pwd)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd)"
OUT_DIR="${BANGER_TEST_IMAGES:-$REPO_ROOT/.cache/test-images}"
RELEASE=bookworm
VARIANT="${1:-minbase}"
case "$VARIANT" in
    minbase) INCLUDE=() ;;
    systemd) INCLUDE=(--include=systemd-sysv) ;;
    *)
        echo "test-image-debian: unknown variant $VARIANT (minbase or systemd)" >&2
        exit 2
        ;;
esac
LAYOUT="$OUT_DIR/debian-$RELEASE-$VARIANT"
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
log "debootstrap --variant=minbase ${INCLUDE[*]} $RELEASE (a few minutes)"
debootstrap --variant=minbase "${INCLUDE[@]}" "$RELEASE" "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -n 20 -- "$work/debootstrap.log" >&2
    log "error: debootstrap failed"
    exit 1
}
# What a container image leaves out: package caches and logs.
rm -rf -- "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"* \
    "$work/root/var/log/"*.log
"$SCRIPT_DIR/oci-layout.sh" "$work/root" "$LAYOUT" 12
log "built $LAYOUT"
