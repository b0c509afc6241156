#!/usr/bin/env bash
# Runs banger's coverage-guided fuzz targets (fuzz/, cargo-fuzz + libFuzzer) for a
# bounded time each: spec_parser (bytes of a spec file -> parse_document_set) and
# api_request (an API request body -> ApplyRequest/DeleteRequest -> parse_files).
#
#   scripts/fuzz.sh [SECONDS]      # per target, default 60
#   FUZZ_GROW=1 scripts/fuzz.sh 600   # keep what the run finds in fuzz/corpus/
#
# Installs cargo-fuzz with `cargo install --locked` when it is missing (the first run
# compiles it, and the first build of the targets compiles every dependency with
# sanitizer instrumentation: minutes). The checked-in corpus (fuzz/corpus/<target>/)
# seeds every run; new inputs go to a temporary directory unless FUZZ_GROW=1. A crash,
# a timeout (an input taking over 10 s), or an input pushing the process past 1 GiB
# of memory fails the run; libFuzzer leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
case "$seconds" in
  '' | *[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number, not '$seconds'" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz (first run only: it compiles for a few minutes)" >&2
  cargo install --locked cargo-fuzz
fi

# cargo-fuzz passes flags that only nightly compilers take (-Zsanitizer=address and
# the sancov passes). This machine has a stable toolchain only; RUSTC_BOOTSTRAP=1 lets
# stable rustc accept them (the sanitizer runtimes ship with stable's rust-std).
export RUSTC_BOOTSTRAP=1

cd fuzz
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in spec_parser api_request; do
  case "$target" in
    spec_parser) dict=spec.dict ;;
    api_request) dict=api.dict ;;
  esac
  if [ "${FUZZ_GROW:-0}" = 1 ]; then
    corpora=("corpus/$target")
  else
    mkdir -p "$scratch/$target"
    corpora=("$scratch/$target" "corpus/$target")
  fi
  echo "fuzz.sh: $target for ${seconds}s" >&2
  cargo fuzz run -O "$target" "${corpora[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -max_len=65536 \
    -dict="$dict" -print_final_stats=1
done
echo "fuzz.sh: no crash in ${seconds}s per target" >&2
# The closing line CI reads: each target is one check that passed.
echo "fuzz: 2 passed, 0 failed"
