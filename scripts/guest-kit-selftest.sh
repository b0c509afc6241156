#!/usr/bin/env bash
# guest-kit-selftest.sh — boot the guest kit for real and check it.
#
# Builds the kit (scripts/guest-kit.sh, idempotent), then, inside a network namespace this
# script creates (bridge 172.30.0.1/24 + tap; the host's namespace is not touched), boots
# QEMU microvm under TCG with a copy of rootfs.ext4 and checks:
#   1. the console shows BANGER-GUEST-READY,
#   2. the guest answers ping from the namespace,
#   3. `ssh -i id_ed25519 root@172.30.0.2` works and the guest's hostname is banger.name,
#   4. QMP system_powerdown makes the guest power off cleanly (QEMU exits, the disk copy
#      passes `e2fsck -fn`).
# Prints the time from QEMU start to the marker and to the first successful ssh.
# Needs root. Every wait is bounded; the namespace, QEMU and temp files are removed on exit.
#
# Environment: BANGER_KIT_DIR (as guest-kit.sh), QEMU (default qemu-system-x86_64),
# BANGER_SELFTEST_BOOT_TIMEOUT (seconds to the marker, default 120).
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")" && pwd)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd)"
KIT_DIR="${BANGER_KIT_DIR:-$REPO_ROOT/.cache/guest-kit}"
QEMU="${QEMU:-qemu-system-x86_64}"
BOOT_TIMEOUT="${BANGER_SELFTEST_BOOT_TIMEOUT:-120}"

NETNS="kit-test-$$"
BRIDGE=kbr0
TAP=ktap0
HOST_IP=172.30.0.1
GUEST_IP=172.30.0.2
GUEST_MAC=52:54:00:4b:49:54
GUEST_NAME="kit-selftest-$$"

log() { printf 'guest-kit-selftest: %s\n' "$*" >&2; }
fail() {
    printf 'guest-kit-selftest: FAIL: %s\n' "$*" >&2
    if [[ -n "${CONSOLE:-}" && -s "$CONSOLE" ]]; then
        printf -- '--- guest console (last 40 lines) ---\n' >&2
        tail -n 40 -- "$CONSOLE" >&2
    fi
    exit 1
}

QEMU_PID=""
TMP=""
cleanup() {
    local i
    if [[ -n "$QEMU_PID" ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill -TERM "$QEMU_PID" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$QEMU_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
    fi
    ip netns del "$NETNS" 2>/dev/null || true
    [[ -n "$TMP" ]] && rm -rf -- "$TMP"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

in_ns() { ip netns exec "$NETNS" "$@"; }

ssh_guest() {
    in_ns ssh -i "$KIT_DIR/id_ed25519" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o BatchMode=yes -o ConnectTimeout=3 -o LogLevel=ERROR "root@$GUEST_IP" "$@"
}

qmp() {
    printf '%s\n' '{"execute":"qmp_capabilities"}' "$1" |
        socat -t 2 - "UNIX-CONNECT:$TMP/qmp.sock"
}

main() {
    ((EUID == 0)) || fail "must run as root (network namespace, tap device)"
    command -v "$QEMU" >/dev/null || fail "$QEMU not found"
    command -v socat >/dev/null || fail "socat not found"
    command -v ssh >/dev/null || fail "ssh (openssh-client) not found"

    "$SCRIPT_DIR/guest-kit.sh"
    # shellcheck source=/dev/null
    source "$KIT_DIR/kit.env"
    log "kernel $KERNEL_VERSION"

    TMP="$(mktemp -d "${TMPDIR:-/tmp}/banger-kit-selftest.XXXXXX")"
    CONSOLE="$TMP/console.log"
    cp --sparse=always -- "$ROOTFS" "$TMP/rootfs.ext4"

    ip netns add "$NETNS"
    in_ns ip link set lo up
    in_ns ip link add "$BRIDGE" type bridge
    in_ns ip addr add "$HOST_IP/24" dev "$BRIDGE"
    in_ns ip link set "$BRIDGE" up
    in_ns ip tuntap add dev "$TAP" mode tap
    in_ns ip link set "$TAP" master "$BRIDGE"
    in_ns ip link set "$TAP" up

    local start
    start="$(now)"
    in_ns "$QEMU" -M microvm -accel tcg -cpu max -m 256 -smp 1 \
        -nodefaults -no-user-config -nographic -no-reboot \
        -serial "file:$CONSOLE" \
        -qmp "unix:$TMP/qmp.sock,server=on,wait=off" \
        -kernel "$KERNEL" -initrd "$INITRD" \
        -append "console=ttyS0 root=/dev/vda rw ip=$GUEST_IP::$HOST_IP:255.255.255.0::eth0:off banger.name=$GUEST_NAME" \
        -drive "id=root,file=$TMP/rootfs.ext4,format=raw,if=none" \
        -device virtio-blk-device,drive=root \
        -netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no" \
        -device "virtio-net-device,netdev=n0,mac=$GUEST_MAC" \
        </dev/null >"$TMP/qemu.out" 2>&1 &
    QEMU_PID=$!

    local deadline t_marker t_ssh i
    deadline=$((SECONDS + BOOT_TIMEOUT))
    until grep -q '^BANGER-GUEST-READY' -- "$CONSOLE" 2>/dev/null; do
        kill -0 "$QEMU_PID" 2>/dev/null || fail "QEMU exited before the marker: $(cat -- "$TMP/qemu.out")"
        ((SECONDS < deadline)) || fail "no BANGER-GUEST-READY within ${BOOT_TIMEOUT}s"
        sleep 0.1
    done
    t_marker="$(elapsed "$start" "$(now)")"
    log "PASS console marker after ${t_marker}s"

    in_ns busybox ping -c 2 -W 5 "$GUEST_IP" >/dev/null || fail "ping $GUEST_IP from the namespace"
    log "PASS ping $GUEST_IP"

    for ((i = 0; ; i++)); do
        if ssh_guest true; then break; fi
        ((i < 20)) || fail "ssh root@$GUEST_IP did not succeed after 20 attempts"
        sleep 0.5
    done
    t_ssh="$(elapsed "$start" "$(now)")"
    log "PASS ssh after ${t_ssh}s"

    local guest_host
    guest_host="$(ssh_guest hostname)"
    [[ "$guest_host" == "$GUEST_NAME" ]] || fail "guest hostname is '$guest_host', want '$GUEST_NAME'"
    ssh_guest busybox ping -c 1 -W 5 "$HOST_IP" >/dev/null || fail "guest cannot ping $HOST_IP"
    # ssh joins its arguments into one remote command line: pass exactly one string.
    ssh_guest 'echo kit-selftest >/root/persisted'
    log "PASS hostname $guest_host, guest reaches $HOST_IP"

    qmp '{"execute":"system_powerdown"}' >/dev/null || fail "QMP system_powerdown"
    for ((i = 0; i < 300; i++)); do
        kill -0 "$QEMU_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$QEMU_PID" 2>/dev/null; then
        fail "guest ignored ACPI power-down for 30s"
    fi
    wait "$QEMU_PID" || true
    QEMU_PID=""
    grep -q 'banger-init: poweroff' -- "$CONSOLE" || fail "QEMU exited without the guest's clean power-off"
    e2fsck -fn -- "$TMP/rootfs.ext4" >"$TMP/fsck.out" 2>&1 || fail "rootfs not clean after power-off: $(cat -- "$TMP/fsck.out")"
    [[ "$(debugfs -R 'cat /root/persisted' -- "$TMP/rootfs.ext4" 2>/dev/null)" == kit-selftest ]] ||
        fail "file written over ssh did not survive the power-off"
    log "PASS ACPI power-down: clean power-off, filesystem clean, data persisted"
    log "timings: marker ${t_marker}s, ssh ${t_ssh}s (QEMU TCG, from process start)"
}

main "$@"
