"""protocol/examples/worker.py, the minimal worker written from SPEC.md with a codec of
its own (README shows it under ferry): its self-test against protocol/vectors/ and the
worker itself under the real ferry binary, so the example cannot drift from the
protocol unnoticed."""
import os
import signal
import subprocess
import sys

from conftest import REPO

EXAMPLE = os.path.join(REPO, "protocol", "examples", "worker.py")


def test_the_selftest_passes_against_the_vectors():
    r = subprocess.run([sys.executable, EXAMPLE, "--selftest"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 failed" in r.stdout and " 0 passed" not in r.stdout, r.stdout


def test_it_serves_under_ferry_and_drains(start_ferry):
    f = start_ferry([sys.executable, EXAMPLE])
    status, headers, body = f.get("/x?y=1")
    assert status == 200, body
    assert headers["content-type"] == "text/plain"
    assert body.decode().startswith("hello from pid ")
    assert body.decode().endswith(": GET /x?y=1 HTTP/1.1\n")
    status, _, body = f.request("POST", "/x", body=b"ignored")
    assert (status, body) == (405, b"method not allowed\n")
    f.signal(signal.SIGTERM)
    assert f.wait_exit(15) == 0
    assert f.log().count("worker says goodbye: drained") == 2, f.log()
