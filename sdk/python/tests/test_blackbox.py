"""A Flask app (ferry_worker.wsgi) and a Starlette app (ferry_worker.asgi) under the
real ferry binary: every test runs against both."""
import concurrent.futures
import hashlib
import os
import signal
import socket
import threading
import time

import pytest

from conftest import PY, wait_path

BLOCK = bytes(range(256)) * 256

KINDS = {
    # 2 workers x 10 threads: 20 slow requests run at once.
    "flask": [PY, "-m", "ferry_worker.wsgi", "flask_app:app", "--threads", "10"],
    # The default loop (auto: uvloop, installed in the test venv) and asyncio's own.
    "starlette": [PY, "-m", "ferry_worker.asgi", "starlette_app:app"],
    "starlette-asyncio": [PY, "-m", "ferry_worker.asgi", "starlette_app:app", "--loop", "asyncio"],
}


@pytest.fixture(params=sorted(KINDS))
def kind(request):
    return request.param


@pytest.fixture
def marks(tmp_path):
    return str(tmp_path)


@pytest.fixture
def server(kind, start_ferry, marks):
    return start_ferry(KINDS[kind], env={"FERRY_TEST_DIR": marks})


def pattern(n):
    whole, rest = divmod(n, len(BLOCK))
    return BLOCK * whole + BLOCK[:rest]


def test_hello(server):
    status, headers, body = server.get("/hello")
    assert status == 200
    assert body == b"Hello, world!\n"
    assert headers["content-type"].startswith("text/plain")
    assert headers["content-length"] == "14"
    assert "sdk=ferry-py" in server.log()


@pytest.mark.parametrize("path", ["/echo", "/echo-stream"])
def test_echo_5mib_byte_exact(server, path):
    data = os.urandom(5 << 20)
    status, _, body = server.request("POST", path, body=data,
                                     headers={"content-type": "application/octet-stream"})
    assert status == 200
    assert len(body) == len(data)
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


def test_streamed_download(server):
    n = 3 * (1 << 20) + 12345           # several windows of the master's credit
    status, headers, body = server.get("/download?n=%d" % n)
    assert status == 200
    assert headers.get("transfer-encoding") == "chunked"
    assert body == pattern(n)


def test_20_concurrent_slow_requests_finish_together(server):
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: server.get("/slow?t=1"), range(20)))
    elapsed = time.monotonic() - t0
    assert [r[0] for r in results] == [200] * 20
    assert all(r[2] == b"done" for r in results)
    # Serially this would take 20 s; all in flight at once it takes about 1 s.
    assert elapsed < 3.5, elapsed


def test_client_disconnect_cancels(server, marks):
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"GET /forever?tag=gone HTTP/1.1\r\nhost: x\r\n\r\n")
    got = b""
    while b"xxxx" not in got:           # the stream is running
        got += s.recv(65536)
    s.close()
    # The master cancels the request; the worker stops the app's iterator (close()).
    wait_path(os.path.join(marks, "closed-gone"))
    # And the worker carries on.
    assert server.get("/hello")[0] == 200


def test_sighup_reload_with_zero_failures(server):
    pids_before = {server.get("/pid")[2] for _ in range(6)}
    failures, statuses, stop = [], [], threading.Event()

    def load():
        c = server.conn(timeout=10)
        while not stop.is_set():
            try:
                c.request("GET", "/hello")
                r = c.getresponse()
                body = r.read()
                statuses.append(r.status)
                if r.status != 200 or body != b"Hello, world!\n":
                    failures.append((r.status, body))
            except Exception as e:          # a dropped connection is a failure too
                failures.append(repr(e))
                c.close()
                c = server.conn(timeout=10)
        c.close()

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        server.signal(signal.SIGHUP)
        server.wait_for("reload complete")
        n = len(statuses)
        while len(statuses) < n + 50:       # and traffic keeps flowing afterwards
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert len(statuses) > 50
    pids_after = {server.get("/pid")[2] for _ in range(6)}
    assert not (pids_before & pids_after), "the workers were not replaced"
    assert "worker says goodbye: drained" in server.log()


def test_workers_that_retire_under_load_lose_no_request(kind, start_ferry, marks):
    # No retries of idempotent requests: what was on its way to a retiring worker
    # comes back by the retirement's own rule, POSTs too.
    server = start_ferry(KINDS[kind], env={"FERRY_TEST_DIR": marks},
                         extra=["--retry-idempotent", "false"])
    failures = []

    def load(client):
        c = server.conn(timeout=20)
        for i in range(60):
            if (client + i) % 30 == 0:
                c.request("GET", "/retire")
            elif i % 3 == 0:
                c.request("POST", "/echo", body=b"kept")
            else:
                c.request("GET", "/pid")
            r = c.getresponse()
            r.read()
            if r.status != 200:
                failures.append(r.status)
        c.close()

    threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == [], server.log()
    server.wait_for("worker says goodbye: retired", count=4)
    server.wait_for("recycling worker: it retires (retired)")
    assert "restarting in" not in server.log()


def test_handler_exception_is_500_and_the_worker_survives(kind, start_ferry, marks):
    f = start_ferry(KINDS[kind], workers=1, env={"FERRY_TEST_DIR": marks})
    pid = f.get("/pid")[2]
    status, _, body = f.get("/boom")
    assert status == 500
    f.wait_for("RuntimeError: boom for the test")   # the traceback is in the log
    assert "Traceback" in f.log()
    assert f.get("/pid")[2] == pid


@pytest.mark.parametrize("mode", ["long-small", "short-small", "long-stream", "short-stream"])
def test_wrong_content_length_fails_only_that_request(kind, start_ferry, marks, mode):
    f = start_ferry(KINDS[kind], workers=1, env={"FERRY_TEST_DIR": marks})
    pid = f.get("/pid")[2]
    try:
        status, _, body = f.get("/badlength?mode=" + mode)
    except Exception:
        status = None                   # the response was cut off after its head
    if mode.endswith("small"):
        assert status == 502            # caught before anything went out
    elif mode == "short-stream":
        assert status is None           # the head went out: the client sees it cut off
    # (long-stream: the client got the promised Content-Length bytes before the
    # overrun was caught, so it may see a whole response.)
    f.wait_for("Content-Length")        # the worker says why
    assert "protocol violation" not in f.log()
    assert f.get("/pid")[2] == pid      # the same worker carries on
    assert f.get("/hello")[0] == 200


def test_drain_on_sigterm(kind, start_ferry, marks):
    f = start_ferry(KINDS[kind], env={"FERRY_TEST_DIR": marks})
    result = {}

    def slow():
        result["r"] = f.get("/slow?t=1&tag=drain")
    t = threading.Thread(target=slow)
    t.start()
    wait_path(os.path.join(marks, "started-drain"))
    f.signal(signal.SIGTERM)
    t.join(15)
    assert result["r"][0] == 200 and result["r"][2] == b"done"
    assert f.wait_exit(15) == 0
    log = f.log()
    assert log.count("worker says goodbye: drained") == 2, log
    assert "exited with status 0" in log
    if kind.startswith("starlette"):
        assert any(n.startswith("lifespan-shutdown-") for n in os.listdir(marks))
