#!/.banger/bin/sh
# banger's init for images it built (kernel argument init=/.banger/init), installed by
# scripts/guest-kit.sh as <kit>/guest-bits/init and by banger as /.banger/init of an
# image. Everything it uses lives in /.banger: a static busybox, and dropbear whose ELF
# interpreter and RPATH are /.banger/lib (its own loader and libraries: any image libc,
# or none, will do).
# /.banger/image.env (written when the image was built) says:
#   BANGER_IMAGE_INIT  the image's own init (exec'd after the set-up below), or empty:
#                      then this script stays PID 1 (reaps zombies, powers off cleanly)
#   BANGER_START_SSH   1: start banger's SSH server (dropbear on port 22)
# Set-up: /proc /sys /dev /dev/pts /run mounted, the network from ip=, the hostname from
# banger.name=, root's ~/.ssh modes (banger puts its key in the VM's disk).
# Prints BANGER-GUEST-READY on the console once the SSH server listens.
# SIGTERM/SIGPWR/SIGUSR1/SIGUSR2 and the ACPI power button: sync, unmount, power off.
B=/.banger
export PATH=$B/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umask 022
BANGER_IMAGE_INIT=""
BANGER_START_SSH=1
# shellcheck disable=SC1091 # written by banger when it built the image
[ -r $B/image.env ] && . $B/image.env

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

is_mounted /proc || mount -t proc proc /proc
is_mounted /sys || mount -t sysfs sysfs /sys
is_mounted /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
is_mounted /dev/pts || mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
is_mounted /run || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -o remount,rw / 2>/dev/null
exec </dev/console >/dev/console 2>&1

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
    addr="" gw="" prefix="" dev=eth0 dns0="" dns1=""
    case "$ip_arg" in
        '' | off | none) return 0 ;;
        *:*)
            old_ifs="$IFS"; IFS=:
            set -f
            # shellcheck disable=SC2086 # split on colons on purpose (globbing is off)
            set -- $ip_arg
            set +f
            IFS="$old_ifs"
            addr="${1:-}" gw="${3:-}" dev="${6:-eth0}" dns0="${8:-}" dns1="${9:-}"
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
    tries=100
    while [ ! -e "/sys/class/net/$dev" ] && [ "$tries" -gt 0 ]; do
        sleep 0.05
        tries=$((tries - 1))
    done
    ip link set "$dev" up || return 1
    ip addr add "$addr/$prefix" dev "$dev" || return 1
    if [ -n "$gw" ]; then ip route add default via "$gw" dev "$dev" || return 1; fi
    if [ -n "$dns0$dns1" ]; then
        rm -f /etc/resolv.conf
        for ns in "$dns0" "$dns1"; do
            if [ -n "$ns" ]; then echo "nameserver $ns" >>/etc/resolv.conf; fi
        done
    fi
    say "network: $dev $addr/$prefix gateway ${gw:-none}"
}

ip link set lo up
configure_network || say "network configuration failed"

case "$name" in
    '' | *[!A-Za-z0-9.-]*) [ -n "$name" ] && say "ignoring invalid banger.name=$name"; name=banger ;;
esac
hostname "$name"
echo "$name" >/etc/hostname
if ! grep -q "[[:space:]]$name\$" /etc/hosts 2>/dev/null; then
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$name" >>/etc/hosts
fi

if [ -d /root/.ssh ]; then
    chmod 0700 /root /root/.ssh
    [ -f /root/.ssh/authorized_keys ] && chmod 0600 /root/.ssh/authorized_keys
fi

if [ "$BANGER_START_SSH" = 1 ]; then
    mkdir -p $B/etc/dropbear
    hostkey=$B/etc/dropbear/dropbear_ed25519_host_key
    if [ ! -s "$hostkey" ]; then
        # On disk before anyone can pin it (a crash must not lose it).
        $B/sbin/dropbearkey -t ed25519 -f "$hostkey" >/dev/null 2>&1 ||
            say "dropbearkey failed"
        sync
    fi
    $B/sbin/dropbear -F -E -s -p 22 -r "$hostkey" \
        -P /run/banger-dropbear.pid </dev/null >>/run/banger-dropbear.log 2>&1 &
    # Wait (bounded) until port 22 (0x0016) is in LISTEN state (0A).
    tries=200
    while ! grep -q ':0016 0\{8,32\}:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null && [ "$tries" -gt 0 ]; do
        sleep 0.05
        tries=$((tries - 1))
    done
    [ "$tries" -gt 0 ] || say "dropbear is not listening on port 22 (see /run/banger-dropbear.log)"
fi

if [ -n "$BANGER_IMAGE_INIT" ]; then
    say "set-up done; handing over to the image's $BANGER_IMAGE_INIT"
    exec "$BANGER_IMAGE_INIT"
fi

trap 'shutdown_guest poweroff' TERM PWR USR1 USR2
trap 'shutdown_guest reboot' INT
# Ctrl-Alt-Del sends SIGINT to init instead of an immediate reboot without sync.
echo 0 >/proc/sys/kernel/ctrl-alt-del
if ls /dev/input/event* >/dev/null 2>&1; then
    acpid -c $B/etc/acpi -l /run/banger-acpid.log
fi

echo "BANGER-GUEST-READY" >/dev/console
if [ -c /dev/ttyS0 ] && ! grep -q 'console=ttyS0' /proc/cmdline; then
    echo "BANGER-GUEST-READY" >/dev/ttyS0 2>/dev/null
fi

# PID 1 only waits: every orphan is reparented here and reaped by `wait`.
while :; do
    wait
    sleep 1
done
