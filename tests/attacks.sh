#!/usr/bin/env bash
# The long forms of the attacks in tests/hardening.rs, as measurements (several
# minutes). Prints one `figure` line per scenario: probes of GET / answered within
# 2 s, their p99, the master's CPU and peak RSS. Everything runs on loopback.
#   bash tests/attacks.sh                  # this build
#   bash tests/attacks.sh /path/to/ferry   # this build, then that binary (before/after)
set -euo pipefail
cd "$(dirname "$0")/.."
run() {
    cargo test --release -q -p ferry-blackbox --test attacks -- --ignored --nocapture --test-threads 1 2>&1 \
        | grep -o 'figure |.*' || true
}
cargo build --release -q --workspace --bins
echo "== this build"
run
if [ $# -ge 1 ]; then
    echo "== $1"
    FERRY_MASTER="$1" run
fi
