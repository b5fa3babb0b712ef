#!/usr/bin/env bash
# Resident memory of the local rate limit store after 1 M and 2 M distinct keys (every key
# active: 1/h, burst 1), with the default cap of 1 M keys per limiter: the growth must stay at
# or under 64 MiB for 1 M keys, and stay flat beyond the cap. Prints a markdown table.
#
#   bench/ratelimit_memory.sh                 # release build, 1 M and 2 M keys
#   BENCH_KEYS="1000 2000" BENCH_PROFILE=debug BENCH_MAX_KEYS=1500 bench/ratelimit_memory.sh
set -euo pipefail

KEYS=${BENCH_KEYS:-"1000000 2000000"}
PROFILE=${BENCH_PROFILE:-release}
MAX_KEYS=${BENCH_MAX_KEYS:-1000000}
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/$PROFILE/examples/ratelimit_memory

if [[ $SKIP_BUILD != 1 ]]; then
    flag=()
    [[ $PROFILE == release ]] && flag=(--release)
    (cd "$ROOT" && cargo build "${flag[@]}" --locked --example ratelimit_memory >&2)
fi

echo "| distinct keys | keys held | evicted at the cap | RSS growth (MiB) |"
echo "| ---: | ---: | ---: | ---: |"
for n in $KEYS; do
    line=$("$BIN" "$n" "$MAX_KEYS")
    get() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" <<<"$line"; }
    printf '| %s | %s | %s | %s |\n' "$n" "$(get keys_held)" "$(get evicted)" "$(get rss_growth_mib)"
done
echo
echo "(one limiter, max_keys $MAX_KEYS, $PROFILE build, commit $(cd "$ROOT" && git rev-parse --short HEAD))"
