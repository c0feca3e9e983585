#!/usr/bin/env bash
# Every test of the project: the Rust workspace (unit, black-box, layout), then the
# Python and Node.js SDKs against the ferry binary it built. CI runs exactly this
# (.ci/run, after fmt and clippy). Python 3.9+ and Node 20+ must be installed; the
# SDK scripts create their own venv and node_modules from the package registries.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --workspace
cargo build --quiet -p ferry
export FERRY_BIN="$PWD/target/debug/ferry"
bash sdk/python/run-tests.sh
bash sdk/node/run-tests.sh
