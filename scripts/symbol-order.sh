#!/usr/bin/env bash
# Records cli/symbol-order.txt: the functions a `banger daemon` runs (then those the CLI
# runs), which cli/build.rs asks the linker to place first and together, so that the
# daemon's code sits in few pages (see cli/build.rs and BENCHMARKS.md, P5).
#
#   scripts/symbol-order.sh          record the list again (after a toolchain or
#                                    dependency update, or a large change)
#   scripts/symbol-order.sh --check  how many listed functions the release binary has
#
# Recording runs the release binary under valgrind's callgrind (Debian: valgrind), which
# names every function executed: a `--simulate` daemon applying, reconciling, listing,
# resyncing and deleting 300 VMs, the same state directory under a restarted daemon,
# and the CLI commands used meanwhile. The real runtime's host code (QEMU, taps, nft)
# is not run here and keeps the default layout. Takes about four minutes here (the
# release build included); touches nothing outside a temporary directory.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

order=cli/symbol-order.txt
bin="$PWD/target/release/banger"

text_symbols() { nm --defined-only "$1" | awk '$2 ~ /^[tT]$/ {print $3}' | sort -u; }

if [ "${1:-}" = "--check" ]; then
  [ -x "$bin" ] || { echo "symbol-order.sh: build first: cargo build --release -p banger" >&2; exit 2; }
  listed=$(grep -c . "$order")
  present=$(comm -12 <(sort -u "$order") <(text_symbols "$bin") | wc -l)
  echo "symbol-order.sh: $present of $listed listed functions are in $bin"
  [ "$present" -ge $((listed * 9 / 10)) ] || {
    echo "symbol-order.sh: fewer than 90% match: record the list again (scripts/symbol-order.sh)" >&2
    exit 1
  }
  exit 0
fi

command -v valgrind >/dev/null || { echo "symbol-order.sh: needs valgrind (apt-get install valgrind)" >&2; exit 2; }
cargo build --release -p banger

work=$(mktemp -d)
daemon_pid=
cleanup() {
  [ -n "$daemon_pid" ] && stop_daemon
  if [ "${keep:-}" = 1 ]; then echo "symbol-order.sh: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

mkdir -p "$work/specs" "$work/image"
mkdir -m 700 "$work/state"
printf simulated > "$work/image/vmlinuz"
printf simulated > "$work/image/rootfs.ext4"
cat > "$work/image.yaml" <<EOF
apiVersion: banger.dev/v1alpha1
kind: Image
metadata:
  name: sim
spec:
  kernel: "$work/image/vmlinuz"
  rootfs: "$work/image/rootfs.ext4"
EOF
vms=300
for i in $(seq -w 1 $vms); do
  [ "$i" = 001 ] || echo ---
  printf 'apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: vm-%s\nspec:\n  image: sim\n  memory: 256Mi\n  disk: 1Gi\n' "$i"
done > "$work/fleet.yaml"

sock="$work/sock"
grind() ( # OUT ARGS...: runs banger ARGS under callgrind, its profile in $work/OUT
  # A subshell that becomes valgrind: in the background, $! is the daemon's pid.
  out=$1
  shift
  exec valgrind -q --tool=callgrind --demangle=no --callgrind-out-file="$work/$out" "$bin" "$@"
)
start_daemon() { # OUT
  rm -f "$sock"
  grind "$1" --socket "$sock" daemon --specs-dir "$work/specs" --state-dir "$work/state" \
    --socket-group root --simulate --bridge-cidr 10.200.0.0/16 --resync 10s \
    >>"$work/daemon.log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 600); do
    "$bin" --socket "$sock" get vms >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  keep=1
  echo "symbol-order.sh: the daemon did not answer (log: $work/daemon.log)" >&2
  exit 1
}
stop_daemon() {
  # Debian's `valgrind` is a wrapper: signal the tool process itself, then wait for it.
  pkill -TERM -f -- "--callgrind-out-file=$work/daemon" || true
  for _ in $(seq 300); do
    pgrep -f -- "--callgrind-out-file=$work/daemon" >/dev/null || break
    sleep 0.2
  done
  wait "$daemon_pid" || true
  daemon_pid=
}
until_running() { # N
  for _ in $(seq 600); do
    [ "$("$bin" --socket "$sock" get vms | grep -c Running)" -ge "$1" ] && return 0
    sleep 1
  done
  keep=1
  echo "symbol-order.sh: the VMs did not come up (log: $work/daemon.log)" >&2
  exit 1
}

start_daemon daemon.1
grind cli.1 --socket "$sock" apply -f "$work/image.yaml" --wait --timeout 120s >/dev/null
grind cli.2 --socket "$sock" apply -f "$work/fleet.yaml" >/dev/null
until_running $vms
sleep 25 # two resync passes
grind cli.3 --socket "$sock" get vms >/dev/null
grind cli.4 --socket "$sock" get vms -o json >/dev/null
grind cli.5 --socket "$sock" describe vm vm-001 >/dev/null
grind cli.6 --socket "$sock" diff -f "$work/fleet.yaml" >/dev/null || true
grind cli.7 --socket "$sock" delete vm vm-001 --wait --timeout 120s >/dev/null
stop_daemon
start_daemon daemon.2
until_running $((vms - 1))
sleep 12 # a resync pass
stop_daemon

extract() { # FILES...: the function names in callgrind profiles
  sed -nE 's/^c?fn=\([0-9]+\) (.*)$/\1/p' "$@" | sort -u
}
text_symbols "$bin" > "$work/symbols"
extract "$work"/daemon.* | comm -12 - "$work/symbols" > "$work/daemon-fns"
extract "$work"/cli.* | comm -12 - "$work/symbols" | comm -23 - "$work/daemon-fns" > "$work/cli-fns"
cat "$work/daemon-fns" "$work/cli-fns" > "$order"
echo "symbol-order.sh: $order: $(wc -l < "$work/daemon-fns") daemon and $(wc -l < "$work/cli-fns") CLI-only functions"
