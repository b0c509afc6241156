#!/usr/bin/env bash
# example-image.sh — the small registry image of examples/image-tiny.yaml: busybox-static
# as /bin (a shell for root), /etc/passwd and /etc/os-release, and nothing else (no init,
# no SSH server: banger adds those). Written as an OCI layout (scripts/oci-layout.sh) to
# $BANGER_EXAMPLE_IMAGE (default <repo>/.cache/example-image), tag `1`. Built once: the
# same digest is pushed on every run (delete the folder to rebuild).
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")" && pwd)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd)"
LAYOUT="${BANGER_EXAMPLE_IMAGE:-$REPO_ROOT/.cache/example-image}"

if [[ -s "$LAYOUT/index.json" ]]; then
    exit 0
fi
[[ -x /bin/busybox ]] || {
    echo "example-image: /bin/busybox is missing (package busybox-static)" >&2
    exit 1
}
work="$(mktemp -d "${TMPDIR:-/tmp}/banger-example-image.XXXXXX")"
trap 'rm -rf -- "$work"' EXIT
root="$work/root"
mkdir -p -- "$root"/{bin,etc,root,tmp}
chmod 0700 -- "$root/root"
chmod 1777 -- "$root/tmp"
install -m 0755 -- /bin/busybox "$root/bin/busybox"
while IFS= read -r applet; do
    applet="${applet##*/}"
    [[ "$applet" == busybox || -e "$root/bin/$applet" ]] && continue
    ln -s busybox "$root/bin/$applet"
done < <(/bin/busybox --list-full)
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf 'NAME="banger tiny example"\nID=banger-tiny\nPRETTY_NAME="banger tiny example (busybox)"\n' \
    >"$root/etc/os-release"
mkdir -p -- "$(dirname -- "$LAYOUT")"
"$SCRIPT_DIR/oci-layout.sh" "$root" "$LAYOUT" 1
