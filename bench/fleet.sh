#!/usr/bin/env bash
# The long form of the deployment tests: two ferry instances behind nginx, each
# stopped (SIGTERM with --drain-delay) and restarted ROUNDS times under load, then
# ROUNDS master upgrades (SIGUSR2) under 64 connections; every one must lose nothing.
# CI runs one round of each (tests/fleet.rs, tests/upgrade.rs).
#   bash bench/fleet.sh [ROUNDS]      (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-10}"
export FERRY_FLEET_ROUNDS="$rounds"
cargo test --release -p ferry-blackbox --test fleet two_instances -- --nocapture
cargo test --release -p ferry-blackbox --test upgrade sigusr2 -- --nocapture
