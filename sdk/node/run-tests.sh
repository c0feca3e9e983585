#!/usr/bin/env bash
# Installs the Node SDK's dev dependencies (Express, Hono) and runs its tests:
#     bash sdk/node/run-tests.sh
# The black-box tests need the ferry binary: $FERRY_BIN if set, else
# <repo>/target/debug/ferry (build it with `cargo build -p ferry`).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v node >/dev/null 2>&1; then
    echo "run-tests.sh: node is not installed (Node >= 20 is required)" >&2
    exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
    echo "run-tests.sh: Node $(node --version) is too old: Node >= 20 is required" >&2
    exit 1
fi
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund
else
    npm install --no-audit --no-fund
fi
npm test
