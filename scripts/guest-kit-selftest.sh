#!/usr/bin/env bash
# guest-kit-selftest.sh — boot the guest kit for real and check it.
#
# Builds the kit (scripts/guest-kit.sh, idempotent), then, inside a network namespace this
# script creates (bridge 172.30.0.1/24 + tap; the host's namespace is not touched), boots
# QEMU microvm under TCG with a copy of rootfs.ext4 and checks:
#   1. the console shows BANGER-GUEST-READY,
#   2. the guest answers ping from the namespace,
#   3. `ssh -i id_ed25519 root@172.30.0.2` works and the guest's hostname is banger.name,
#      the guest reaches the bridge address, and git commits in a new repository there,
#   4. the guest stops cleanly (QEMU exits, the disk copy passes `e2fsck -fn` and keeps a
#      file written over ssh) — three boots: QMP system_powerdown (ACPI power button),
#      `poweroff` over ssh, and the Ctrl-Alt-Del path (SIGINT to init, then reboot, which
#      ends QEMU under -no-reboot). The kernel `ip=` form is used first, then the short form;
#      a fourth boot uses the extracted ELF vmlinux (QEMU boots it through its PVH note).
# Prints the time from QEMU start to the marker and to the first successful ssh.
# Needs root. Every wait is bounded; the namespace, QEMU and temp files are removed on exit.
#
# Environment: BANGER_KIT_DIR (as guest-kit.sh), QEMU (default qemu-system-x86_64),
# BANGER_SELFTEST_BOOT_TIMEOUT (seconds to the marker, default 120), BANGER_SELFTEST_TSC_KHZ
# (the guest's tsc_early_khz=, default the host's rate; empty: leave it out),
# BANGER_SELFTEST_KEEP=1 (keep the temp dir with console logs).
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
TIMINGS=()
TSC_KHZ=""
CONSOLE=""
T_MARKER=""
T_SSH=""
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
    [[ -n "$TMP" && -z "${BANGER_SELFTEST_KEEP:-}" ]] && rm -rf -- "$TMP"
}
trap cleanup EXIT

# host_tsc_khz — the host's TSC rate in kHz (from /proc/cpuinfo). Under TCG the guest's
# TSC counts at the host's rate; telling the guest kernel (`tsc_early_khz=`) skips its PIT
# calibration, which fails on a busy host and then hangs the boot before userspace.
host_tsc_khz() {
    awk -F: '/^cpu MHz/ { printf "%d\n", $2 * 1000; exit }' /proc/cpuinfo
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

in_ns() { ip netns exec "$NETNS" "$@"; }

ssh_guest() {
    in_ns ssh -i "$SSH_KEY" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
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
    # shellcheck source=/dev/null # sets KERNEL, VMLINUX, INITRD, ROOTFS, SSH_KEY, CMDLINE
    source "$KIT_DIR/kit.env"
    [[ -n "${KERNEL:-}" && -n "${VMLINUX:-}" && -n "${INITRD:-}" && -n "${ROOTFS:-}" && -n "${SSH_KEY:-}" && -n "${CMDLINE:-}" ]] ||
        fail "$KIT_DIR/kit.env lacks KERNEL, VMLINUX, INITRD, ROOTFS, SSH_KEY or CMDLINE"
    log "kernel $KERNEL_VERSION"

    TSC_KHZ="${BANGER_SELFTEST_TSC_KHZ-$(host_tsc_khz)}"
    [[ -z "$TSC_KHZ" || "$TSC_KHZ" =~ ^[0-9]+$ ]] || fail "bad TSC rate '$TSC_KHZ' (BANGER_SELFTEST_TSC_KHZ)"
    log "guest kernel gets tsc_early_khz=${TSC_KHZ:-(none)}"
    TMP="$(mktemp -d "${TMPDIR:-/tmp}/banger-kit-selftest.XXXXXX")"

    ip netns add "$NETNS"
    in_ns ip link set lo up
    in_ns ip link add "$BRIDGE" type bridge
    in_ns ip addr add "$HOST_IP/24" dev "$BRIDGE"
    in_ns ip link set "$BRIDGE" up
    in_ns ip tuntap add dev "$TAP" mode tap
    in_ns ip link set "$TAP" master "$BRIDGE"
    in_ns ip link set "$TAP" up

    boot_and_check "$KERNEL" "ip=$GUEST_IP::$HOST_IP:255.255.255.0::eth0:off" acpi
    boot_and_check "$KERNEL" "ip=$GUEST_IP/24,$HOST_IP" poweroff
    boot_and_check "$KERNEL" "ip=$GUEST_IP/24,$HOST_IP" ctrl-alt-del
    # The ELF extracted for Firecracker boots in QEMU too (PVH entry point): proof it is whole.
    boot_and_check "$VMLINUX" "ip=$GUEST_IP::$HOST_IP:255.255.255.0::eth0:off" acpi
    log "timings (QEMU TCG; marker and ssh from QEMU start, stop from the request to QEMU's exit):"
    printf '  %s\n' "${TIMINGS[@]}" >&2
    log "all checks passed"
}

# boot_and_check KERNEL IP_ARG STOP — boots KERNEL and a fresh copy of the rootfs with IP_ARG on the kernel
# command line, checks marker, ping, ssh and hostname, then stops the guest the STOP way
# (acpi: QMP system_powerdown; poweroff: `poweroff` over ssh; ctrl-alt-del: the SIGINT the
# kernel sends init on Ctrl-Alt-Del) and checks a clean shutdown. Sets T_MARKER and T_SSH.
boot_and_check() {
    local kernel="$1" ip_arg="$2" stop="$3" start deadline i guest_host cad tsc_arg="" stop_start
    log "boot $(basename -- "$kernel") with $ip_arg, stop by $stop"
    CONSOLE="$TMP/console-$(basename -- "$kernel")-$stop.log"
    rm -f -- "$TMP/rootfs.ext4" "$TMP/qmp.sock"
    cp --sparse=always -- "$ROOTFS" "$TMP/rootfs.ext4"

    if [[ -n "$TSC_KHZ" ]]; then tsc_arg=" tsc_early_khz=$TSC_KHZ"; fi

    start="$(now)"
    # Not through in_ns: `ip netns exec` execs QEMU, so $! is QEMU's own PID.
    ip netns exec "$NETNS" "$QEMU" -M microvm -accel tcg -cpu max -m 256 -smp 1 \
        -nodefaults -no-user-config -nographic -no-reboot \
        -serial "file:$CONSOLE" \
        -qmp "unix:$TMP/qmp.sock,server=on,wait=off" \
        -kernel "$kernel" -initrd "$INITRD" \
        -append "$CMDLINE $ip_arg banger.name=$GUEST_NAME$tsc_arg" \
        -drive "id=root,file=$TMP/rootfs.ext4,format=raw,if=none" \
        -device virtio-blk-device,drive=root \
        -netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no" \
        -device "virtio-net-device,netdev=n0,mac=$GUEST_MAC" \
        </dev/null >"$TMP/qemu.out" 2>&1 &
    QEMU_PID=$!

    deadline=$((SECONDS + BOOT_TIMEOUT))
    until grep -q '^BANGER-GUEST-READY' -- "$CONSOLE" 2>/dev/null; do
        kill -0 "$QEMU_PID" 2>/dev/null || fail "QEMU exited before the marker: $(cat -- "$TMP/qemu.out")"
        ((SECONDS < deadline)) || fail "no BANGER-GUEST-READY within ${BOOT_TIMEOUT}s"
        sleep 0.1
    done
    T_MARKER="$(elapsed "$start" "$(now)")"
    log "PASS console marker after ${T_MARKER}s"

    for ((i = 0; ; i++)); do
        if ssh_guest true; then break; fi
        ((i < 20)) || fail "ssh root@$GUEST_IP did not succeed after 20 attempts"
        sleep 0.5
    done
    T_SSH="$(elapsed "$start" "$(now)")"
    log "PASS ssh after ${T_SSH}s"

    in_ns busybox ping -c 2 -W 5 "$GUEST_IP" >/dev/null || fail "ping $GUEST_IP from the namespace"
    log "PASS ping $GUEST_IP"

    guest_host="$(ssh_guest hostname)"
    [[ "$guest_host" == "$GUEST_NAME" ]] || fail "guest hostname is '$guest_host', want '$GUEST_NAME'"
    ssh_guest busybox ping -c 1 -W 5 "$HOST_IP" >/dev/null || fail "guest cannot ping $HOST_IP"
    # ssh joins its arguments into one remote command line: pass exactly one string.
    ssh_guest "echo $stop >/root/persisted"
    log "PASS hostname $guest_host, guest reaches $HOST_IP"
    ssh_guest 'cd /tmp && rm -rf g && mkdir g && cd g && git init -q --template= && echo x >f && git add f && git -c user.name=t -c user.email=t@t commit -qm m && git log --format=%s' |
        grep -qx m || fail "git does not work in the guest"
    log "PASS git $(ssh_guest 'git --version')"

    stop_start="$(now)"
    case "$stop" in
        acpi) qmp '{"execute":"system_powerdown"}' >/dev/null || fail "QMP system_powerdown" ;;
        poweroff) ssh_guest poweroff 2>/dev/null || true ;;
        ctrl-alt-del)
            cad="$(ssh_guest cat /proc/sys/kernel/ctrl-alt-del)"
            [[ "$cad" == 0 ]] || fail "kernel.ctrl-alt-del is '$cad': Ctrl-Alt-Del would not reach init"
            ssh_guest 'kill -INT 1' 2>/dev/null || true
            ;;
        *) fail "unknown stop method $stop" ;;
    esac
    for ((i = 0; i < 300; i++)); do
        kill -0 "$QEMU_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$QEMU_PID" 2>/dev/null; then
        fail "guest did not stop within 30s after $stop"
    fi
    wait "$QEMU_PID" || true
    QEMU_PID=""
    TIMINGS+=("$(basename -- "$kernel") $stop: marker ${T_MARKER}s ssh ${T_SSH}s stop $(elapsed "$stop_start" "$(now)")s")
    if [[ "$stop" == ctrl-alt-del ]]; then
        grep -q 'banger-init: reboot' -- "$CONSOLE" || fail "QEMU exited without the guest's clean reboot"
    else
        grep -q 'banger-init: poweroff' -- "$CONSOLE" || fail "QEMU exited without the guest's clean power-off"
    fi
    e2fsck -fn -- "$TMP/rootfs.ext4" >"$TMP/fsck.out" 2>&1 || fail "rootfs not clean after $stop: $(cat -- "$TMP/fsck.out")"
    [[ "$(debugfs -R 'cat /root/persisted' -- "$TMP/rootfs.ext4" 2>/dev/null)" == "$stop" ]] ||
        fail "file written over ssh did not survive $stop"
    log "PASS $stop: clean shutdown, filesystem clean, data persisted"
}

main "$@"
