"""Shared test helpers: locating the ferry binary, running it (always killed on
teardown, by process group), and a small HTTP client on 127.0.0.1."""
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(SDK))
APPS = os.path.join(HERE, "apps")
VECTORS = os.path.join(REPO, "protocol", "vectors")


def ferry_bin():
    path = os.environ.get("FERRY_BIN") or os.path.join(REPO, "target", "debug", "ferry")
    if not os.access(path, os.X_OK):
        pytest.fail("the ferry binary was not found at %s: build it (cargo build -p ferry) "
                    "or set FERRY_BIN" % path, pytrace=False)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ferry:
    """The real master running a Python worker command. Its log (stderr) is collected
    line by line, so tests wait for log lines instead of sleeping."""

    def __init__(self, worker_cmd, workers=2, extra=(), env=None, cwd=APPS):
        self.port = free_port()
        cmd = [ferry_bin(), "--listen", "127.0.0.1:%d" % self.port, "--workers", str(workers),
               *extra, "--", *worker_cmd]
        full_env = dict(os.environ, RUST_LOG="info", PYTHONUNBUFFERED="1")
        full_env.update(env or {})
        self.lines = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=full_env, cwd=cwd,
                                     start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stderr:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append(None)             # EOF marker
            self._cond.notify_all()

    def log(self):
        return "\n".join(l for l in self.lines if l is not None)

    def wait_for(self, needle, timeout=20, count=1, start=0):
        """Waits until ``count`` log lines from index ``start`` contain ``needle``;
        returns the index after the last of them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                seen = 0
                for i in range(start, len(self.lines)):
                    line = self.lines[i]
                    if line is not None and needle in line:
                        seen += 1
                        if seen == count:
                            return i + 1
                if self.lines and self.lines[-1] is None:
                    raise AssertionError("ferry exited before logging %r:\n%s" % (needle, self.log()))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting for %r in the log:\n%s" % (needle, self.log()))
                self._cond.wait(left)

    def wait_ready(self):
        self.wait_for("ferry listening")
        return self

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=30):
        return self.proc.wait(timeout)

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    # -------------------------------------------------------- HTTP

    def conn(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=30):
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)


@pytest.fixture
def start_ferry():
    """Starts ferry (ready to serve unless ready=False); every one is killed on teardown."""
    started = []

    def start(worker_cmd, ready=True, **kw):
        f = Ferry(worker_cmd, **kw)
        started.append(f)
        return f.wait_ready() if ready else f
    yield start
    for f in started:
        f.kill()


def wait_path(path, timeout=15):
    """Waits for a file an app writes as its signal (polling the file system)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise AssertionError("%s did not appear" % path)
        time.sleep(0.01)


PY = sys.executable
