#!/usr/bin/env bash
# Every test of the project: the Rust workspace (unit, black-box, layout), then the
# Python and Node.js SDKs against the ferry binary it built. CI runs exactly this
# (.ci/run, after fmt and clippy). Python 3.9+ and Node 20+ must be installed; the
# SDK scripts create their own venv and node_modules from the package registries.
set -euo pipefail
cd "$(dirname "$0")"
# The deployment tests (tests/fleet.rs, tests/listen.rs) drive a real nginx, curl and
# systemd-socket-activate: installed with apt-get where missing. If that fails, those
# tests say they skipped and the rest runs.
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v systemd-socket-activate >/dev/null 2>&1 || missing+=(systemd)
if ((${#missing[@]})); then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo -n); fi
    echo "test.sh: installing ${missing[*]} for the deployment tests" >&2
    { "${sudo[@]}" apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"; } >/dev/null 2>&1 ||
        echo "test.sh: could not install ${missing[*]}: those tests will skip" >&2
fi
cargo test --workspace
cargo build --quiet -p ferry
export FERRY_BIN="$PWD/target/debug/ferry"
bash sdk/python/run-tests.sh
# The Python package promises 3.9 and later, and on 3.12 and later runs handlers as
# eager tasks: where such interpreters are installed (on PATH or under pyenv), the same
# tests run on 3.9 and on the newest of 3.13 and 3.12 too, each in a venv of its own.
python_for() {
    local p
    for p in "python$1" "${PYENV_ROOT:-$HOME/.pyenv}/versions/$1".*/bin/"python$1"; do
        if "$p" -c '' >/dev/null 2>&1; then echo "$p"; return; fi
    done
}
for versions in 3.9 "3.13 3.12"; do
    py=""
    for v in $versions; do
        py=$(python_for "$v")
        if [ -n "$py" ]; then break; fi
    done
    if [ -n "$py" ]; then
        FERRY_PY_VENV="$PWD/sdk/python/.venv$v" PYTHON="$py" bash sdk/python/run-tests.sh
    else
        echo "test.sh: no Python ${versions// / or } found: the Python SDK is not tested on it here" >&2
    fi
done
bash sdk/node/run-tests.sh
