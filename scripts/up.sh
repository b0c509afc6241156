#!/usr/bin/env bash
# banger's main job on a fresh machine: installs the Debian packages and the guest kit,
# builds banger, creates the system group `banger` (its members may use the daemon's
# socket) if missing, installs the kit's kernel, initrd and guest bits as the daemon's
# default kernel (<state>/guest), serves the example registry image
# (examples/image-tiny.yaml) from a registry on 127.0.0.1:5000, starts `banger daemon`
# with examples/ as its specs directory (unless a daemon already answers on the
# socket), and waits until the example VMs are Ready and the example Workspace (this
# checkout) is copied into vm/dev. Idempotent: a second run changes nothing that is
# already in place.
# Must run as root (bridges, taps, nftables). The daemon keeps running afterwards; stop it
# with `kill $(cat /run/banger/daemon.pid)` — the VMs survive a daemon stop by design;
# `banger delete vm dev ci` removes them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "up.sh: run as root: the daemon creates a bridge, taps and nftables rules" >&2
  exit 2
fi
if ! command -v cargo >/dev/null; then
  echo "up.sh: cargo not found: install a Rust toolchain (1.89 or newer, e.g. with rustup) first" >&2
  exit 2
fi

scripts/deps.sh
scripts/guest-kit.sh
cargo build --release -p banger

bin="$PWD/target/release/banger"
state_dir="${BANGER_STATE_DIR:-/var/lib/banger}"
registry_port=5000
socket="${BANGER_SOCKET:-/run/banger/banger.sock}"
log="${BANGER_LOG:-/var/log/banger-daemon.log}"
export BANGER_SOCKET="$socket"

if ! getent group banger >/dev/null; then
  echo "up.sh: creating the system group banger (its members may use banger's socket: usermod -aG banger USER)" >&2
  groupadd --system banger
fi

# The default kernel (Images without `kernel` boot it), its initrd and the guest bits.
kit=.cache/guest-kit
guest_dir="$state_dir/guest"
mkdir -p -m 700 "$state_dir"
if ! cmp -s "$kit/vmlinux" "$guest_dir/vmlinux" || ! cmp -s "$kit/initrd.img" "$guest_dir/initrd.img" ||
  ! diff -rq "$kit/guest-bits" "$guest_dir/guest-bits" >/dev/null 2>&1; then
  echo "up.sh: installing the default kernel $(cat "$kit/kernel.release") into $guest_dir" >&2
  rm -rf "$guest_dir.tmp"
  mkdir -p "$guest_dir.tmp"
  cp -a "$kit/vmlinux" "$kit/initrd.img" "$kit/kernel.release" "$kit/guest-bits" "$guest_dir.tmp/"
  rm -rf "$guest_dir"
  mv "$guest_dir.tmp" "$guest_dir"
fi
# The VMMs run as banger-vmm (docs/security.md) and must read the kernel and initrd;
# the kit builds them 0600. Neither holds a secret.
chmod 0644 "$guest_dir/vmlinux" "$guest_dir/initrd.img"

# The example registry image, served on 127.0.0.1 (a registry of the loopback interface
# may speak plain HTTP).
scripts/example-image.sh
if ! (exec 3<>"/dev/tcp/127.0.0.1/$registry_port") 2>/dev/null; then
  mkdir -p "$state_dir/registry"
  cat >"$state_dir/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $state_dir/registry/data
http:
  addr: 127.0.0.1:$registry_port
EOF
  echo "up.sh: starting docker-registry on 127.0.0.1:$registry_port" >&2
  setsid /usr/bin/docker-registry serve "$state_dir/registry/config.yml" \
    >>/var/log/banger-registry.log 2>&1 </dev/null &
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$registry_port") 2>/dev/null && break
    sleep 0.2
  done
fi
skopeo copy --quiet --dest-tls-verify=false oci:.cache/example-image:1 \
  "docker://127.0.0.1:$registry_port/banger/tiny:1"

if ! "$bin" get vms >/dev/null 2>&1; then
  mkdir -p "$(dirname "$socket")"
  # The daemon refuses a state dir its group or others may enter; one made by an
  # older up.sh (mode 0755) is closed here, once, saying so.
  if [ -d "$state_dir" ] && [ "$(stat -c %u "$state_dir")" = 0 ] && [ "$(stat -c %a "$state_dir")" != 700 ]; then
    echo "up.sh: $state_dir is mode $(stat -c %a "$state_dir"); banger needs 0700: chmod 700 $state_dir" >&2
    chmod 700 "$state_dir"
  fi
  echo "up.sh: starting banger daemon (log: $log)" >&2
  setsid "$bin" daemon --specs-dir "$PWD/examples" --state-dir "$state_dir" --socket "$socket" \
    >>"$log" 2>&1 </dev/null &
  echo $! >"$(dirname "$socket")/daemon.pid"
  for _ in $(seq 1 100); do
    "$bin" get vms >/dev/null 2>&1 && break
    sleep 0.2
  done
  if ! "$bin" get vms >/dev/null 2>&1; then
    echo "up.sh: the daemon did not come up; the end of $log:" >&2
    tail -n 5 "$log" >&2
    exit 1
  fi
fi

for object in vm/dev vm/ci vm/tiny workspace/banger-src; do
  "$bin" wait "$object" --for=condition=Ready --timeout 5m
done
"$bin" get images
"$bin" get vms -o wide
"$bin" get workspaces
