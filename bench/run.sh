#!/usr/bin/env bash
# Ferry's side-by-side benchmark: THE one command, from anywhere in the repository:
#
#     bash bench/run.sh [--quick] [--rounds N] [--duration SECS]
#
#   --quick           smoke test (1 round × 2 s): proves the pipeline, numbers not for quoting
#   --rounds N        interleaved rounds per (mode, workload, connections) [default 3]
#   --duration SECS   length of each wrk run [default 5]
#   (also --mode pinned|shared|both, --no-ipc, --no-sdks, --sdks-only, --results PATH:
#   see `--help`)
#
# It installs wrk, strace, taskset (util-linux) and nginx with apt-get if they are missing,
# builds the release binaries (`cargo build --release --workspace --bins`), makes a venv
# with Gunicorn, Granian and Uvicorn for the Python SDK rows, and runs
# the orchestrator, target/release/ferry-bench, which starts ferry, its direct-HTTP
# ceiling and (if `node` is installed; it is never installed here) a Node cluster
# baseline on loopback ports, drives them with wrk, prints a table and writes
# bench/RESULTS.md. Full run: about 10 minutes on an idle machine. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if ((${#missing[@]})); then
    echo "bench/run.sh: installing ${missing[*]}" >&2
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "bench/run.sh: apt-get not found; install ${missing[*]} yourself" >&2
    elif ! { "${sudo[@]}" apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"; }; then
        echo "bench/run.sh: could not install ${missing[*]}" >&2
    fi
fi
if ! command -v wrk >/dev/null 2>&1; then
    echo "bench/run.sh: wrk is required (apt-get install -y wrk)" >&2
    exit 1
fi
command -v strace >/dev/null 2>&1 || echo "bench/run.sh: no strace: syscall counts will be skipped" >&2
command -v taskset >/dev/null 2>&1 || echo "bench/run.sh: no taskset: pinned mode will be skipped" >&2
command -v node >/dev/null 2>&1 || echo "bench/run.sh: node not found: the node rows are skipped (install Node.js to include them)" >&2

cargo build --release --workspace --bins

target_dir="${CARGO_TARGET_DIR:-target}"
# The Python SDK rows need a venv with ferry_worker and the servers it is compared with
# (the Node rows need only node). Without network the rows are skipped with a warning.
if [[ " $* " != *" --no-sdks "* ]]; then
    venv="$target_dir/ferry-bench/venv"
    pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
    if { [ -x "$venv/bin/python" ] || python3 -m venv "$venv"; } &&
        "${pip[@]}" gunicorn granian 'uvicorn[standard]' &&
        "${pip[@]}" --no-deps --force-reinstall ./sdk/python; then
        export FERRY_BENCH_PYTHON="$venv/bin/python"
    else
        echo "bench/run.sh: could not make the Python venv: the Python SDK rows will be skipped" >&2
    fi
fi
FERRY_BENCH_COMMAND="bash bench/run.sh${*:+ $*}" exec "$target_dir/release/ferry-bench" "$@"
