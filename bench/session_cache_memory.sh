#!/usr/bin/env bash
# Resident memory of the session cache under a stream of distinct sessions (default one
# million): memory grows until the cache holds its capacity (100 000 sessions
# per process) and stays flat afterwards. Prints a markdown table; see bench/README.md.
#
#   bench/session_cache_memory.sh [SESSIONS] [CAPACITY]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release --locked --example session_cache_memory >&2)
fi
"$TARGET_DIR/release/examples/session_cache_memory" "$@"
echo
echo "(commit $(cd "$ROOT" && git rev-parse --short HEAD))"
