#!/usr/bin/env bash
# guest-kit.sh — build banger's small real Linux guest from Debian packages.
#
# Outputs (in $BANGER_KIT_DIR, default <repo>/.cache/guest-kit/):
#   vmlinuz      Debian cloud kernel (bzImage), for QEMU `-kernel`
#   vmlinux      the uncompressed ELF kernel extracted from vmlinuz, for Firecracker
#   initrd.img   busybox-static initramfs: loads the virtio modules, mounts the root, switch_root
#   rootfs.ext4  ext4 root (made without mounting): busybox, dropbear, git, banger's /sbin/init
#   guest-bits/  what banger adds under /.banger of the images it builds (OCI images):
#                static busybox, banger's init (scripts/guest-bits-init.sh), dropbear
#                with its libraries and loader
#   kernel.release  the kernel's release (6.1.0-NN-cloud-amd64)
#   id_ed25519   SSH key whose public half is baked into the rootfs (kept across --force)
#   kit.env      KERNEL=, VMLINUX=, INITRD=, ROOTFS=, SSH_KEY=, KERNEL_VERSION=, CMDLINE=
#
# The kit directory is laid out as the daemon's guest directory (`banger daemon
# --guest-dir`): vmlinux + initrd.img are the default kernel, guest-bits/ the bits.
#
# Idempotent: each output is rebuilt only when missing or older than its inputs;
# `--force` rebuilds every output (the SSH key is kept). See docs/guest-kit.md.
#
# Environment:
#   BANGER_KIT_DIR         output directory
#   BANGER_KIT_KERNEL      kernel ABI to use, e.g. 6.1.0-56-cloud-amd64 (default: the one
#                          already in kit.env, else the newest linux-image-6.1.0-*-cloud-amd64)
#   BANGER_KIT_ROOTFS_MIB  size of rootfs.ext4 in MiB (default 64)
set -euo pipefail

SCRIPT_PATH="$(readlink -f -- "${BASH_SOURCE[0]}")"
REPO_ROOT="$(cd -- "$(dirname -- "$SCRIPT_PATH")/.." && pwd)"
KIT_DIR="${BANGER_KIT_DIR:-$REPO_ROOT/.cache/guest-kit}"
ROOTFS_MIB="${BANGER_KIT_ROOTFS_MIB:-64}"
FORCE=0

# Modules the guest needs, loaded with their dependencies (order derived from modules.dep).
# virtio_mmio/virtio_blk/virtio_net: disk and network; button/evdev: the ACPI power button,
# so that QEMU's `system_powerdown` reaches the guest's acpid.
WANTED_MODULES=(virtio_mmio virtio_blk virtio_net button evdev)
APT_PACKAGES=(busybox-static dropbear-bin git cpio lz4 e2fsprogs kmod patchelf)
BUSYBOX=/bin/busybox
GUEST_INIT="$(dirname -- "$SCRIPT_PATH")/guest-bits-init.sh"

log() { printf 'guest-kit: %s\n' "$*" >&2; }
die() {
    printf 'guest-kit: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    cat <<'EOF'
usage: scripts/guest-kit.sh [--force]

Builds vmlinuz, vmlinux, initrd.img, rootfs.ext4, id_ed25519 and kit.env into
$BANGER_KIT_DIR (default: <repo>/.cache/guest-kit). Outputs that are newer than
their inputs are kept; --force rebuilds them all (the SSH key is kept).
EOF
}

parse_args() {
    while (($# > 0)); do
        case "$1" in
            --force) FORCE=1 ;;
            -h | --help)
                usage
                exit 0
                ;;
            *) die "unknown argument: $1 (see --help)" ;;
        esac
        shift
    done
    if ! [[ "$ROOTFS_MIB" =~ ^[0-9]+$ ]] || ((ROOTFS_MIB < 16)); then
        die "BANGER_KIT_ROOTFS_MIB must be an integer >= 16, got: $ROOTFS_MIB"
    fi
}

# is_fresh OUT INPUT... — true when OUT exists and is newer than every INPUT (and no --force).
is_fresh() {
    local out="$1" input
    shift
    ((FORCE == 0)) || return 1
    [[ -s "$out" ]] || return 1
    for input in "$@"; do
        [[ "$out" -nt "$input" ]] || return 1
    done
}

# ---------------------------------------------------------------------------------------
# Host dependencies

ensure_packages() {
    local pkg missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
            missing+=("$pkg")
        fi
    done
    ((${#missing[@]} == 0)) && return 0
    ((EUID == 0)) || die "missing packages (install as root): ${missing[*]}"
    log "installing ${missing[*]}"
    if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
        apt-get update
        apt-get install -y --no-install-recommends "${missing[@]}"
    fi
}

# newest_kernel_abi — prints e.g. 6.1.0-56-cloud-amd64, the newest one apt knows about.
newest_kernel_abi() {
    local names
    names="$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' | awk '{print $1}')"
    if [[ -z "$names" ]]; then
        ((EUID == 0)) || die "apt-cache knows no linux-image-6.1.0-*-cloud-amd64; run apt-get update as root"
        log "apt lists are empty; running apt-get update"
        apt-get update >&2
        names="$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' | awk '{print $1}')"
    fi
    [[ -n "$names" ]] || die "no linux-image-6.1.0-*-cloud-amd64 package in the apt lists"
    printf '%s\n' "$names" | sort -V | tail -n 1 | sed 's/^linux-image-//'
}

# kernel_deb ABI — downloads (once) the kernel package into $KIT_DIR/debs and prints its path.
kernel_deb() {
    local abi="$1" deb dl
    deb="$(find "$KIT_DIR/debs" -maxdepth 1 -name "linux-image-${abi}_*_amd64.deb" -print -quit)"
    if [[ -n "$deb" ]]; then
        printf '%s\n' "$deb"
        return 0
    fi
    dl="$(mktemp -d "$KIT_DIR/debs/download.XXXXXX")"
    log "downloading linux-image-$abi"
    # apt's sandbox user cannot write into a root-owned temp dir; the download is a plain file.
    (cd "$dl" && apt-get download -o APT::Sandbox::User=root "linux-image-$abi" >&2)
    deb="$(find "$dl" -maxdepth 1 -name "linux-image-${abi}_*_amd64.deb" -print -quit)"
    [[ -n "$deb" ]] || die "apt-get download linux-image-$abi produced no .deb"
    mv -- "$deb" "$KIT_DIR/debs/"
    rmdir -- "$dl"
    printf '%s/%s\n' "$KIT_DIR/debs" "$(basename -- "$deb")"
}

# ---------------------------------------------------------------------------------------
# Kernel

# read_le BYTES OFFSET FILE — unsigned little-endian integer of BYTES (1 or 4) at OFFSET.
read_le() {
    od -An -v -t "u$1" --endian=little -j "$2" -N "$1" -- "$3" | tr -d ' \n'
}

# extract_vmlinux BZIMAGE OUT — the ELF kernel inside a bzImage (boot protocol >= 2.08):
# setup_sects at 0x1F1 (0 means 4), protected-mode code at (setup_sects+1)*512, the
# compressed payload at payload_offset (0x248) with payload_length (0x24C) inside it.
extract_vmlinux() {
    local bz="$1" out="$2" setup_sects pm_start payload_offset payload_length magic tmp expected_size
    [[ "$(od -An -c -j $((0x202)) -N 4 -- "$bz" | tr -d ' \n')" == HdrS ]] ||
        die "$bz: not a bzImage (no HdrS at 0x202)"
    setup_sects="$(read_le 1 $((0x1F1)) "$bz")"
    ((setup_sects != 0)) || setup_sects=4
    pm_start=$(((setup_sects + 1) * 512))
    payload_offset="$(read_le 4 $((0x248)) "$bz")"
    payload_length="$(read_le 4 $((0x24C)) "$bz")"
    ((payload_length > 0)) || die "$bz: payload_length is 0"
    tmp="$out.tmp"
    dd if="$bz" of="$tmp.payload" bs=64K iflag=skip_bytes,count_bytes \
        skip=$((pm_start + payload_offset)) count="$payload_length" status=none
    magic="$(od -An -v -t x1 -N 4 -- "$tmp.payload" | tr -d ' \n')"
    # Kbuild appends the uncompressed size (le32) after lz4/xz/zstd data (gzip has its own).
    expected_size="$(read_le 4 $((payload_length - 4)) "$tmp.payload")"
    case "$magic" in
        02214c18) head -c $((payload_length - 4)) -- "$tmp.payload" | lz4 -dc >"$tmp" ;;
        fd377a58) head -c $((payload_length - 4)) -- "$tmp.payload" | xz -dc >"$tmp" ;;
        28b52ffd) head -c $((payload_length - 4)) -- "$tmp.payload" | zstd -dc >"$tmp" ;;
        1f8b*) gzip -dc -- "$tmp.payload" >"$tmp" ;;
        *) die "$bz: unknown payload compression (magic $magic)" ;;
    esac
    rm -f -- "$tmp.payload"
    [[ "$(stat -c %s -- "$tmp")" == "$expected_size" ]] ||
        die "$bz: decompressed kernel is $(stat -c %s -- "$tmp") bytes, the image says $expected_size"
    [[ "$(od -An -v -t x1 -N 4 -- "$tmp" | tr -d ' \n')" == 7f454c46 ]] ||
        die "$bz: extracted payload is not an ELF file"
    mv -- "$tmp" "$out"
}

# module_load_order MODDIR NAME... — module paths (relative to MODDIR) in load order:
# each wanted module after its modules.dep dependencies (listed last-loaded-first there).
module_load_order() {
    local moddir="$1"
    shift
    awk -v wanted="$*" '
        BEGIN { n = split(wanted, want, " ") }
        {
            path = $1; sub(/:$/, "", path)
            name = path; sub(/.*\//, "", name); sub(/\.ko(\.[a-z]+)?$/, "", name)
            gsub(/-/, "_", name)
            deps[name] = ""
            for (i = NF; i >= 2; i--) deps[name] = deps[name] " " $i
            file[name] = path
        }
        END {
            for (w = 1; w <= n; w++) {
                if (!(want[w] in file)) { print "missing module " want[w] > "/dev/stderr"; exit 1 }
                k = split(deps[want[w]], d, " ")
                for (i = 1; i <= k; i++) if (!(d[i] in seen)) { seen[d[i]] = 1; print d[i] }
                if (!(file[want[w]] in seen)) { seen[file[want[w]]] = 1; print file[want[w]] }
            }
        }' "$moddir/modules.dep"
}

# install_busybox ROOT — busybox-static at /bin/busybox plus one symlink per applet.
install_busybox() {
    local root="$1" applet
    install -D -m 0755 -- "$BUSYBOX" "$root/bin/busybox"
    while IFS= read -r applet; do
        [[ "$applet" == bin/busybox ]] && continue
        mkdir -p -- "$root/$(dirname -- "$applet")"
        ln -sfn /bin/busybox "$root/$applet"
    done < <("$BUSYBOX" --list-full)
}

build_initrd() {
    local unpacked="$1" abi="$2" out="$3" stage moddir mod
    stage="$WORK/initrd"
    moddir="$unpacked/lib/modules/$abi"
    mkdir -p -- "$stage"/{proc,sys,dev,newroot,etc}
    install_busybox "$stage"
    rm -f -- "$stage/linuxrc"
    if ((EUID == 0)); then
        mknod -m 0600 "$stage/dev/console" c 5 1
    fi
    [[ -s "$moddir/modules.dep" ]] || depmod -b "$unpacked" "$abi"
    module_load_order "$moddir" "${WANTED_MODULES[@]}" >"$stage/etc/banger-modules"
    log "initramfs modules (load order): $(tr '\n' ' ' <"$stage/etc/banger-modules")"
    while IFS= read -r mod; do
        install -D -m 0644 -- "$moddir/$mod" "$stage/lib/modules/$abi/$mod"
    done <"$stage/etc/banger-modules"
    printf '%s\n' "$abi" >"$stage/etc/banger-kernel"
    write_initramfs_init >"$stage/init"
    chmod 0755 "$stage/init"
    (cd "$stage" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
        cpio --null --quiet -o -H newc -R 0:0 --reproducible) | gzip -9 -n >"$out.tmp"
    mv -- "$out.tmp" "$out"
}

write_initramfs_init() {
    cat <<'EOF'
#!/bin/busybox sh
# banger guest kit initramfs: load the virtio modules, mount the root disk, switch_root.
# Kernel command line: root=DEV (default /dev/vda), rootfstype=TYPE (default ext4),
# ro|rw (default rw), banger.rootwait=SECONDS (default 30), init=PATH (what runs on the
# root after switch_root, default /sbin/init; banger passes init=/.banger/init for
# images it added its guest bits to).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

fail() {
    echo "banger-initramfs: $*; powering off" >/dev/console
    sync
    poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

abi="$(cat /etc/banger-kernel)"
while IFS= read -r mod; do
    insmod "/lib/modules/$abi/$mod" || echo "banger-initramfs: insmod $mod failed"
done </etc/banger-modules

root=/dev/vda
fstype=ext4
mode=rw
rootwait=30
init=/sbin/init
set -f
# shellcheck disable=SC2013 # the command line is one line of words (globbing is off)
for word in $(cat /proc/cmdline); do
    case "$word" in
        root=/dev/*) root="${word#root=}" ;;
        rootfstype=*) fstype="${word#rootfstype=}" ;;
        ro | rw) mode="$word" ;;
        banger.rootwait=*) rootwait="${word#banger.rootwait=}" ;;
        init=/*) init="${word#init=}" ;;
    esac
done
set +f
case "$rootwait" in '' | *[!0-9]*) rootwait=30 ;; esac

tries=$((rootwait * 20))
while [ ! -b "$root" ] && [ "$tries" -gt 0 ]; do
    sleep 0.05
    tries=$((tries - 1))
done
[ -b "$root" ] || fail "root device $root did not appear within ${rootwait}s"
mount -t "$fstype" -o "$mode" "$root" /newroot || fail "cannot mount $root ($fstype, $mode)"
# -e or -L, not -x: the init may be an absolute symlink that resolves only in the root.
[ -e "/newroot$init" ] || [ -L "/newroot$init" ] || fail "$root has no $init"

mount --move /dev /newroot/dev || umount /dev
umount /sys
umount /proc
exec switch_root /newroot "$init"
EOF
}

# ---------------------------------------------------------------------------------------
# Root filesystem

# copy_with_libs ROOT BINARY... — copies each binary and the shared objects ldd names
# (the dynamic loader included) to the same paths inside ROOT.
copy_with_libs() {
    local root="$1" bin lib
    shift
    for bin in "$@"; do
        install -D -m 0755 -- "$bin" "$root$bin"
        while IFS= read -r lib; do
            [[ -e "$root$lib" ]] && continue
            install -D -m 0755 -- "$(readlink -f -- "$lib")" "$root$lib"
        done < <(ldd -- "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
    done
}

build_rootfs() {
    local out="$1" pubkey="$2" stage
    stage="$WORK/rootfs"
    mkdir -p -- "$stage"/{proc,sys,dev,run,mnt,var/log,etc/dropbear,etc/banger,etc/acpi/PWRF,root}
    install -d -m 1777 -- "$stage/tmp"
    chmod 0700 -- "$stage/root"
    install_busybox "$stage"
    rm -f -- "$stage/linuxrc" "$stage/sbin/init"
    # git: only the main binary (its builtins: status, diff, add, commit, log…), so
    # a Workspace's repository works in the guest and `banger workspace export` makes
    # its patch there. No helpers, templates or remote transports.
    copy_with_libs "$stage" /usr/sbin/dropbear /usr/bin/dropbearkey /usr/bin/git
    printf 'root:*:0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
    printf 'root:x:0:\n' >"$stage/etc/group"
    printf '/bin/sh\n/bin/ash\n' >"$stage/etc/shells"
    printf 'banger\n' >"$stage/etc/hostname"
    printf '127.0.0.1\tlocalhost\n' >"$stage/etc/hosts"
    install -m 0600 -- "$pubkey" "$stage/etc/banger/authorized_keys"
    write_acpi_power_action >"$stage/etc/acpi/PWRF/00000080"
    chmod 0755 -- "$stage/etc/acpi/PWRF/00000080"
    write_rootfs_init >"$stage/sbin/init"
    chmod 0755 -- "$stage/sbin/init"

    rm -f -- "$out.tmp"
    truncate -s "${ROOTFS_MIB}M" -- "$out.tmp"
    mkfs.ext4 -q -F -L banger-root -d "$stage" -- "$out.tmp" >&2
    if ((EUID != 0)); then
        chown_image_to_root "$stage" "$out.tmp"
    fi
    mv -- "$out.tmp" "$out"
}

# chown_image_to_root STAGE IMAGE — a non-root build leaves the builder's uid on every file;
# make every inode root-owned, as dropbear insists for /root/.ssh and authorized_keys.
chown_image_to_root() {
    local stage="$1" image="$2" path
    while IFS= read -r -d '' path; do
        path="${path#.}"
        printf 'set_inode_field "%s" uid 0\nset_inode_field "%s" gid 0\n' "${path:-/}" "${path:-/}"
    done < <(cd "$stage" && find . -print0) >"$WORK/debugfs.cmds"
    debugfs -w -f "$WORK/debugfs.cmds" -- "$image" >/dev/null 2>&1 ||
        die "debugfs could not chown the files in $image"
}

write_acpi_power_action() {
    cat <<'EOF'
#!/bin/sh
# ACPI power button (QEMU system_powerdown): ask init (PID 1) for a clean power-off.
kill -USR2 1
EOF
}

write_rootfs_init() {
    cat <<'EOF'
#!/bin/sh
# banger guest init (PID 1). Kernel command line it understands:
#   banger.name=NAME        hostname
#   ip=CLIENT::GW:NETMASK::DEV:off[:DNS0[:DNS1]]   (kernel nfsroot form; GW, DEV, DNS optional)
#   ip=ADDR/PREFIX[,GW]     (short form; device eth0)
# Prints BANGER-GUEST-READY on the console once sshd (dropbear, port 22) listens.
# SIGTERM/SIGPWR/SIGUSR1/SIGUSR2 (and `poweroff`, the ACPI power button): sync, power off.
# Ctrl-Alt-Del (SIGINT): sync, reboot (Firecracker and `qemu -no-reboot` then exit).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
umask 022

say() { echo "banger-init: $*" >/dev/console; }

is_mounted() { grep -q " $1 " /proc/mounts 2>/dev/null; }

shutdown_guest() {
    trap '' TERM PWR USR1 USR2 INT
    say "$1: stopping processes, syncing, unmounting"
    kill -TERM -1 2>/dev/null
    sleep 1
    kill -KILL -1 2>/dev/null
    sync
    umount -a -r 2>/dev/null
    mount -o remount,ro / 2>/dev/null
    sync
    if [ "$1" = reboot ]; then reboot -f; else poweroff -f; fi
    exit 0
}
trap 'shutdown_guest poweroff' TERM PWR USR1 USR2
trap 'shutdown_guest reboot' INT

is_mounted /proc || mount -t proc proc /proc
is_mounted /sys || mount -t sysfs sysfs /sys
is_mounted /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
is_mounted /dev/pts || mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -o remount,rw / 2>/dev/null
exec </dev/console >/dev/console 2>&1
# Ctrl-Alt-Del sends SIGINT to init instead of an immediate reboot without sync.
echo 0 >/proc/sys/kernel/ctrl-alt-del

name=""
ip_arg=""
set -f
# shellcheck disable=SC2013 # the command line is one line of words (globbing is off)
for word in $(cat /proc/cmdline); do
    case "$word" in
        banger.name=*) name="${word#banger.name=}" ;;
        ip=*) ip_arg="${word#ip=}" ;;
    esac
done
set +f

# mask_to_prefix 255.255.255.0 -> 24 (a plain number is taken as a prefix already)
mask_to_prefix() {
    case "$1" in
        *.*.*.*) ;;
        '' | *[!0-9]*) return 1 ;;
        *) echo "$1"; return 0 ;;
    esac
    bits=0
    old_ifs="$IFS"; IFS=.
    set -f
    # shellcheck disable=SC2086 # split on dots on purpose (globbing is off)
    set -- $1
    set +f
    IFS="$old_ifs"
    for octet in "$@"; do
        case "$octet" in
            255) bits=$((bits + 8)) ;; 254) bits=$((bits + 7)) ;; 252) bits=$((bits + 6)) ;;
            248) bits=$((bits + 5)) ;; 240) bits=$((bits + 4)) ;; 224) bits=$((bits + 3)) ;;
            192) bits=$((bits + 2)) ;; 128) bits=$((bits + 1)) ;; 0) ;;
            *) return 1 ;;
        esac
    done
    echo "$bits"
}

configure_network() {
    addr="" gw="" prefix="" dev=eth0 ip_host="" dns0="" dns1=""
    case "$ip_arg" in
        '' | off | none) return 0 ;;
        *:*)
            old_ifs="$IFS"; IFS=:
            set -f
            # shellcheck disable=SC2086 # split on colons on purpose (globbing is off)
            set -- $ip_arg
            set +f
            IFS="$old_ifs"
            addr="${1:-}" gw="${3:-}" ip_host="${5:-}" dev="${6:-eth0}" dns0="${8:-}" dns1="${9:-}"
            prefix="$(mask_to_prefix "${4:-255.255.255.0}")" || { say "bad netmask in ip=$ip_arg"; return 1; }
            ;;
        */*)
            addr="${ip_arg%%/*}"
            rest="${ip_arg#*/}"
            prefix="${rest%%,*}"
            case "$rest" in *,*) gw="${rest#*,}" ;; esac
            ;;
        *) say "unsupported ip=$ip_arg"; return 1 ;;
    esac
    [ -n "$addr" ] || { say "ip=$ip_arg has no address"; return 1; }
    [ -z "$name" ] && [ -n "$ip_host" ] && name="$ip_host"
    tries=100
    while [ ! -e "/sys/class/net/$dev" ] && [ "$tries" -gt 0 ]; do
        sleep 0.05
        tries=$((tries - 1))
    done
    ip link set "$dev" up || return 1
    ip addr add "$addr/$prefix" dev "$dev" || return 1
    if [ -n "$gw" ]; then ip route add default via "$gw" dev "$dev" || return 1; fi
    : >/etc/resolv.conf
    for ns in "$dns0" "$dns1"; do
        if [ -n "$ns" ]; then echo "nameserver $ns" >>/etc/resolv.conf; fi
    done
    say "network: $dev $addr/$prefix gateway ${gw:-none}"
}

ip link set lo up
configure_network || say "network configuration failed"

case "$name" in
    '' | *[!A-Za-z0-9.-]*) [ -n "$name" ] && say "ignoring invalid banger.name=$name"; name=banger ;;
esac
hostname "$name"
echo "$name" >/etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$name" >/etc/hosts

if ls /dev/input/event* >/dev/null 2>&1; then
    acpid -c /etc/acpi -l /var/log/acpid.log
fi

hostkey=/etc/dropbear/dropbear_ed25519_host_key
if [ ! -s "$hostkey" ]; then
    # On disk before anyone can pin it: a crash right after the first boot must not
    # lose the key (the next boot would make another one, which banger refuses).
    dropbearkey -t ed25519 -f "$hostkey" >/dev/null 2>&1 || say "dropbearkey failed"
    sync
fi
mkdir -p /root/.ssh
chmod 0700 /root /root/.ssh
if [ ! -s /root/.ssh/authorized_keys ]; then
    cp /etc/banger/authorized_keys /root/.ssh/authorized_keys
fi
chmod 0600 /root/.ssh/authorized_keys

dropbear -F -E -s -p 22 -r "$hostkey" -P /run/dropbear.pid </dev/null >>/var/log/dropbear.log 2>&1 &

# Wait (bounded) until port 22 (0x0016) is in LISTEN state (0A).
tries=100
while ! grep -q ':0016 0\{8,32\}:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null && [ "$tries" -gt 0 ]; do
    sleep 0.05
    tries=$((tries - 1))
done
[ "$tries" -gt 0 ] || say "dropbear is not listening on port 22"

echo "BANGER-GUEST-READY" >/dev/console
if [ -c /dev/ttyS0 ] && ! grep -q 'console=ttyS0' /proc/cmdline; then
    echo "BANGER-GUEST-READY" >/dev/ttyS0 2>/dev/null
fi

# A root shell on the console, respawned; init itself only waits (and reaps orphans).
(
    while :; do
        setsid cttyhack sh -l
        sleep 1
    done
) &
while :; do
    wait
done
EOF
}

# ---------------------------------------------------------------------------------------
# Guest bits: what banger adds under /.banger of an image it builds

# build_guest_bits OUT — static busybox with applet links, banger's init, the ACPI action,
# dropbear + dropbearkey with every library ldd names and the loader, all in lib/. The two
# binaries are patched (patchelf) to name /.banger/lib/ld-linux-x86-64.so.2 as their
# interpreter and /.banger/lib as their RPATH: they run as themselves (dropbear re-execs
# /proc/self/exe for each connection) and never load the image's libc.
build_guest_bits() {
    local out="$1" stage applet lib
    stage="$WORK/guest-bits"
    rm -rf -- "$stage"
    mkdir -p -- "$stage"/{bin,sbin,lib,etc/acpi/PWRF}
    install -m 0755 -- "$BUSYBOX" "$stage/bin/busybox"
    while IFS= read -r applet; do
        applet="${applet##*/}"
        [[ "$applet" == busybox || -e "$stage/bin/$applet" ]] && continue
        ln -s busybox "$stage/bin/$applet"
    done < <("$BUSYBOX" --list-full)
    install -m 0755 -- /usr/sbin/dropbear "$stage/sbin/dropbear"
    install -m 0755 -- /usr/bin/dropbearkey "$stage/sbin/dropbearkey"
    while IFS= read -r lib; do
        install -m 0755 -- "$(readlink -f -- "$lib")" "$stage/lib/$(basename -- "$lib")"
    done < <(for bin in /usr/sbin/dropbear /usr/bin/dropbearkey; do ldd -- "$bin"; done |
        awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' | sort -u)
    [[ -x "$stage/lib/ld-linux-x86-64.so.2" ]] ||
        die "guest bits: no ld-linux-x86-64.so.2 among dropbear's libraries"
    for bin in "$stage/sbin/dropbear" "$stage/sbin/dropbearkey"; do
        patchelf --set-interpreter /.banger/lib/ld-linux-x86-64.so.2 \
            --force-rpath --set-rpath /.banger/lib "$bin"
    done
    install -m 0755 -- "$GUEST_INIT" "$stage/init"
    # The image may have no /bin/sh: the action runs on the bits' own shell.
    printf '#!/.banger/bin/sh\n# ACPI power button: ask init (PID 1) for a clean power-off.\n/.banger/bin/kill -USR2 1\n' \
        >"$stage/etc/acpi/PWRF/00000080"
    chmod 0755 -- "$stage/etc/acpi/PWRF/00000080"
    rm -rf -- "$out.tmp"
    mv -- "$stage" "$out.tmp"
    rm -rf -- "$out"
    mv -- "$out.tmp" "$out"
}

# ---------------------------------------------------------------------------------------
# SSH key

ensure_ssh_key() {
    local key="$KIT_DIR/id_ed25519"
    if [[ -s "$key" && -s "$key.pub" ]]; then
        return 0
    fi
    rm -f -- "$key" "$key.pub"
    if command -v ssh-keygen >/dev/null; then
        ssh-keygen -q -t ed25519 -N '' -C banger-guest-kit -f "$key"
    else
        dropbearkey -t ed25519 -f "$key.dropbear" >/dev/null
        dropbearkey -y -f "$key.dropbear" | grep '^ssh-ed25519 ' >"$key.pub"
        dropbearconvert dropbear openssh "$key.dropbear" "$key" >/dev/null
        rm -f -- "$key.dropbear"
    fi
    chmod 0600 -- "$key"
    log "generated SSH key $key"
}

# env_line KEY VALUE — KEY=VALUE, single-quoted when VALUE has characters other than
# [A-Za-z0-9_./:=+-], so that kit.env is both shell-sourceable and trivial to parse.
env_line() {
    local key="$1" value="$2"
    if [[ "$value" =~ ^[A-Za-z0-9_./:=+-]*$ ]]; then
        printf '%s=%s\n' "$key" "$value"
    elif [[ "$value" != *"'"* ]]; then
        printf "%s='%s'\n" "$key" "$value"
    else
        die "kit.env: $key contains a single quote: $value"
    fi
}

write_kit_env() {
    local abi="$1" out="$KIT_DIR/kit.env"
    {
        printf '# Generated by scripts/guest-kit.sh: the banger guest kit (docs/guest-kit.md).\n'
        env_line KERNEL_VERSION "$abi"
        env_line KERNEL "$KIT_DIR/vmlinuz"
        env_line VMLINUX "$KIT_DIR/vmlinux"
        env_line INITRD "$KIT_DIR/initrd.img"
        env_line ROOTFS "$KIT_DIR/rootfs.ext4"
        env_line SSH_KEY "$KIT_DIR/id_ed25519"
        printf '# Base kernel command line; append ip=... and banger.name=...\n'
        env_line CMDLINE "console=ttyS0 root=/dev/vda rw panic=1"
    } >"$out.tmp"
    mv -- "$out.tmp" "$out"
}

# ---------------------------------------------------------------------------------------

main() {
    parse_args "$@"
    mkdir -p -- "$KIT_DIR/debs"
    KIT_DIR="$(cd -- "$KIT_DIR" && pwd)"
    ensure_packages
    [[ -x "$BUSYBOX" ]] || die "$BUSYBOX missing (package busybox-static)"

    local abi="${BANGER_KIT_KERNEL:-}"
    if [[ -z "$abi" && -s "$KIT_DIR/kit.env" ]]; then
        abi="$(sed -n 's/^KERNEL_VERSION=//p' "$KIT_DIR/kit.env")"
    fi
    [[ -n "$abi" ]] || abi="$(newest_kernel_abi)"
    [[ "$abi" =~ ^[0-9][A-Za-z0-9.+-]*$ ]] || die "invalid kernel version: $abi"
    log "kernel $abi, output $KIT_DIR"

    local deb
    deb="$(kernel_deb "$abi")"

    WORK="$(mktemp -d "${TMPDIR:-/tmp}/banger-guest-kit.XXXXXX")"
    trap 'rm -rf -- "$WORK"' EXIT

    local unpacked="$WORK/kernel"
    if ! is_fresh "$KIT_DIR/vmlinuz" "$deb" || ! is_fresh "$KIT_DIR/initrd.img" "$deb" "$SCRIPT_PATH" "$BUSYBOX"; then
        log "unpacking $(basename -- "$deb")"
        dpkg -x "$deb" "$unpacked"
    fi

    if is_fresh "$KIT_DIR/vmlinuz" "$deb"; then
        log "vmlinuz is up to date"
    else
        install -m 0644 -- "$unpacked/boot/vmlinuz-$abi" "$KIT_DIR/vmlinuz.tmp"
        mv -- "$KIT_DIR/vmlinuz.tmp" "$KIT_DIR/vmlinuz"
        log "built vmlinuz"
    fi

    if is_fresh "$KIT_DIR/vmlinux" "$KIT_DIR/vmlinuz" "$SCRIPT_PATH"; then
        log "vmlinux is up to date"
    else
        extract_vmlinux "$KIT_DIR/vmlinuz" "$KIT_DIR/vmlinux"
        log "built vmlinux (ELF, $(stat -c %s -- "$KIT_DIR/vmlinux") bytes)"
    fi

    if is_fresh "$KIT_DIR/initrd.img" "$deb" "$SCRIPT_PATH" "$BUSYBOX"; then
        log "initrd.img is up to date"
    else
        build_initrd "$unpacked" "$abi" "$KIT_DIR/initrd.img"
        log "built initrd.img"
    fi

    ensure_ssh_key
    if is_fresh "$KIT_DIR/rootfs.ext4" "$SCRIPT_PATH" "$BUSYBOX" /usr/sbin/dropbear /usr/bin/git "$KIT_DIR/id_ed25519.pub"; then
        log "rootfs.ext4 is up to date"
    else
        build_rootfs "$KIT_DIR/rootfs.ext4" "$KIT_DIR/id_ed25519.pub"
        log "built rootfs.ext4 (${ROOTFS_MIB} MiB)"
    fi

    if is_fresh "$KIT_DIR/guest-bits/init" "$SCRIPT_PATH" "$GUEST_INIT" "$BUSYBOX" /usr/sbin/dropbear &&
        is_fresh "$KIT_DIR/guest-bits/sbin/dropbear" "$SCRIPT_PATH" /usr/sbin/dropbear; then
        log "guest-bits are up to date"
    else
        build_guest_bits "$KIT_DIR/guest-bits"
        log "built guest-bits ($(du -sh -- "$KIT_DIR/guest-bits" | cut -f1))"
    fi
    printf '%s\n' "$abi" >"$KIT_DIR/kernel.release"

    write_kit_env "$abi"
    log "done: $KIT_DIR/kit.env"
}

main "$@"
