#!/usr/bin/env bash
# oci-layout.sh — turns a root directory into a one-layer OCI image layout (linux/amd64),
# with nothing but coreutils, tar and gzip.
#
# usage: scripts/oci-layout.sh ROOT_DIR LAYOUT_DIR TAG
#
# The layer is `tar --numeric-owner` of ROOT_DIR (ownership and modes kept; sorted names
# and a fixed mtime for the archive's own metadata, so the same tree gives the same
# digest), gzip'd with `gzip -n`. LAYOUT_DIR gets `oci-layout`, `index.json` (the manifest
# tagged TAG through `org.opencontainers.image.ref.name`) and `blobs/sha256/`. An existing
# LAYOUT_DIR is replaced. Push it with
#   skopeo copy oci:LAYOUT_DIR:TAG docker://REGISTRY/REPO:TAG
set -euo pipefail

die() {
    printf 'oci-layout: error: %s\n' "$*" >&2
    exit 1
}

(($# == 3)) || die "usage: scripts/oci-layout.sh ROOT_DIR LAYOUT_DIR TAG"
root="$1" layout="$2" tag="$3"
[[ -d "$root" ]] || die "$root is not a directory"
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "invalid tag: $tag"

tmp="$layout.tmp.$$"
rm -rf -- "$tmp"
mkdir -p -- "$tmp/blobs/sha256"
trap 'rm -rf -- "$tmp"' EXIT

# blob FILE — moves FILE into the layout under its sha256; prints the digest's hex.
blob() {
    local hex
    hex="$(sha256sum -- "$1" | cut -d' ' -f1)"
    mv -- "$1" "$tmp/blobs/sha256/$hex"
    printf '%s\n' "$hex"
}

tar -C "$root" --numeric-owner --sort=name --xattrs-exclude='*' -cf "$tmp/layer.tar" .
diff_id="$(sha256sum -- "$tmp/layer.tar" | cut -d' ' -f1)"
gzip -n -1 -- "$tmp/layer.tar"
layer_size="$(stat -c %s -- "$tmp/layer.tar.gz")"
layer_hex="$(blob "$tmp/layer.tar.gz")"

printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$diff_id" >"$tmp/config.json"
config_size="$(stat -c %s -- "$tmp/config.json")"
config_hex="$(blob "$tmp/config.json")"

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config_hex" "$config_size" "$layer_hex" "$layer_size" >"$tmp/manifest.json"
manifest_size="$(stat -c %s -- "$tmp/manifest.json")"
manifest_hex="$(blob "$tmp/manifest.json")"

printf '{"imageLayoutVersion":"1.0.0"}' >"$tmp/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest_hex" "$manifest_size" "$tag" >"$tmp/index.json"

rm -rf -- "$layout"
mv -- "$tmp" "$layout"
trap - EXIT
printf 'oci-layout: %s:%s is sha256:%s (layer %s bytes)\n' "$layout" "$tag" "$manifest_hex" "$layer_size" >&2
