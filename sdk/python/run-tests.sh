#!/bin/sh
# Runs the Python SDK's tests in a venv of their own: creates it (once), installs
# pytest, Flask and Starlette from PyPI and this package, then runs pytest.
# The black-box tests need the ferry binary: $FERRY_BIN, or target/debug/ferry.
#   sdk/python/run-tests.sh [pytest args...]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
venv=${FERRY_PY_VENV:-$here/.venv}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check pytest flask starlette uvloop
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$here"

# Run from outside the source tree, so the installed package is what gets tested.
cd "$here/tests"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" "$here/tests"
