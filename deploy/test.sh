#!/usr/bin/env bash
# The whole understudy test suite: formatting and lints, then unit,
# scenario, and end-to-end tests with real processes. Installs its
# prerequisites first (deploy/prereqs.sh test).
#
# Nothing may depend on how long the machine has been up, so the suite also
# runs in Linux time namespaces (as root) where CLOCK_BOOTTIME and
# CLOCK_MONOTONIC read about 5 s (a machine just booted) and ten years:
#
#   deploy/test.sh                # whole suite; then unit + scenario tests under both clocks
#   deploy/test.sh --clocks all   # the whole suite under the real clock and both others
#   deploy/test.sh --clocks none  # the whole suite under the real clock only
#   deploy/test.sh -- ARGS        # ARGS go to every `cargo test` (e.g. a test name)
set -euo pipefail
cd "$(dirname "$0")/.."

clocks=scenario
while (($#)); do
  case "$1" in
    --clocks)
      clocks=${2:-}
      shift 2 || true
      ;;
    --clocks=*)
      clocks=${1#--clocks=}
      shift
      ;;
    --)
      shift
      break
      ;;
    -h | --help)
      sed -n '2,13p' "$0"
      exit 0
      ;;
    *)
      echo "unknown argument: $1 (try --help)" >&2
      exit 2
      ;;
  esac
done
case "$clocks" in
  scenario | all | none) ;;
  *)
    echo "--clocks must be scenario, all or none, not '$clocks'" >&2
    exit 2
    ;;
esac

deploy/prereqs.sh test

# The code is formatted and lint-free before anything is tested: a lint
# that does not fit the project is allowed by name, with the reason, in
# the crate that allows it.
echo "== cargo fmt --all --check" >&2
if ! cargo fmt --all --check; then
  echo "the code is not formatted: run cargo fmt --all" >&2
  exit 1
fi

# A fresh clone gains nothing from incremental compilation, and its cache
# doubles the size of the build (about 2.5 GB without it).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
if ((free_kib < 4 * 1024 * 1024)); then
  echo "warning: $((free_kib / 1024)) MiB free here; a build from scratch needs about 2.5 GB" \
    "and the tests' own data a few hundred MB more" >&2
fi
# End-to-end tests start the real binaries from this target directory.
cargo build --workspace --bins
echo "== cargo clippy --workspace --all-targets -- -D warnings" >&2
cargo clippy --workspace --all-targets -- -D warnings
echo "== the whole suite, real clock ($(cut -d' ' -f1 /proc/uptime) s since boot)" >&2
cargo test --workspace "$@"

[ "$clocks" = none ] && exit 0

if [ "$(id -u)" != 0 ] || ! unshare --time true 2>/dev/null; then
  echo "running tests as if just booted needs a time namespace (unshare --time, as root);" \
    "run as root, or pass --clocks none to skip those runs" >&2
  exit 1
fi

# Seconds since boot on each clock, whole.
boot_s=$(cut -d. -f1 /proc/uptime)
mono_s=$(awk '/^now at/ { print int($3 / 1e9); exit }' /proc/timer_list)
ten_years=$((10 * 36525 * 864)) # 10 × 365.25 days, in seconds

scope=(--workspace --exclude understudy-tests)
[ "$clocks" = all ] && scope=(--workspace)

in_clock() { # name, boottime offset, monotonic offset
  local name=$1 boot=$2 mono=$3
  shift 3
  echo "== $name: ${scope[*]} with CLOCK_BOOTTIME and CLOCK_MONOTONIC offset by $boot s and $mono s" >&2
  unshare --time --boottime "$boot" --monotonic "$mono" \
    sh -c 'echo "   (inside: $(cut -d" " -f1 /proc/uptime) s since boot)" >&2; exec "$@"' sh \
    cargo test "${scope[@]}" "$@"
}

# Never a positive offset for "just booted": on a machine up less than 5 s,
# the real clock is already the fresh one.
fresh() { local s=$1; ((s > 5)) && echo $((5 - s)) || echo 0; }
in_clock "just booted" "$(fresh "$boot_s")" "$(fresh "$mono_s")" "$@"
in_clock "up ten years" "$ten_years" "$ten_years" "$@"
