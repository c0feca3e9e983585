"""The worker side of the protocol against a fake master in the test: the worker runs
as a real subprocess on one end of a socketpair, and the test checks every frame it
sends (handshake, flow control both ways, Ping during a handler, Cancel, Drain and
Goodbye, the group kill on EOF, bad frames, an app that does not import)."""
import os
import select
import socket
import subprocess
import time

import pytest

from conftest import APPS, PY
from ferry_worker import codec as c

KINDS = {
    "flask": [PY, "-m", "ferry_worker.wsgi", "flask_app:app", "--threads", "3"],
    "starlette": [PY, "-m", "ferry_worker.asgi", "starlette_app:app", "--max-in-flight", "3"],
}
GET = lambda rid, path: c.encode_request_head(rid, "GET", path, 2, [(b"host", b"t")], "127.0.0.1:1")


class FakeMaster:
    def __init__(self, cmd, marks):
        self.sock, theirs = socket.socketpair()
        env = dict(os.environ, FERRY_FD=str(theirs.fileno()), FERRY_TEST_DIR=marks,
                   PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], env=env, cwd=APPS,
                                     stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        theirs.close()
        self.splitter = c.FrameSplitter()
        self.frames = []

    def send(self, *frames):
        self.sock.sendall(b"".join(frames))

    def recv(self, timeout=10):
        """The next frame from the worker, decoded: (type, message); None on EOF."""
        deadline = time.monotonic() + timeout
        while not self.frames:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise AssertionError("no frame from the worker in %ss" % timeout)
            data = self.sock.recv(1 << 20)
            if not data:
                return None
            self.frames += [bytes(b[s:e]) for b, s, e in self.splitter.feed(data)]
        t, msg = c.decode_worker(self.frames.pop(0))
        if t == c.W_BODY_CHUNK:
            msg = c.BodyChunk(msg.id, bytes(msg.data))
        return t, msg

    def quiet(self, seconds=0.3):
        """Asserts that the worker sends nothing for a while (it is waiting for us)."""
        assert not self.frames
        r = select.select([self.sock], [], [], seconds)[0]
        assert not r, "the worker sent %r" % self.sock.recv(100)

    def handshake(self, window=c.DEFAULT_INITIAL_WINDOW, max_in_flight=64):
        t, hello = self.recv()
        assert t == c.HELLO
        self.send(c.encode_welcome(0, c.DEFAULT_MAX_FRAME_SIZE, max_in_flight, window))
        return hello

    def kill(self):
        try:
            os.killpg(self.proc.pid, 9)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self.sock.close()


@pytest.fixture(params=sorted(KINDS))
def kind(request):
    return request.param


@pytest.fixture
def master(kind, tmp_path):
    m = FakeMaster(KINDS[kind], str(tmp_path))
    yield m
    m.kill()


def test_hello(master):
    hello = master.handshake()
    assert hello.protocol_version == 1
    assert hello.pid == master.proc.pid
    assert hello.max_in_flight == 3
    assert hello.initial_window == 262144
    assert (hello.sdk_name, hello.sdk_version) == ("ferry-py", "0.1.0")


def test_inline_response(master):
    master.handshake()
    master.send(GET(1, "/hello"))
    t, head = master.recv()
    assert t == c.RESPONSE_HEAD
    assert (head.id, head.status, head.body) == (1, 200, (c.INLINE, b"Hello, world!\n"))


def test_ping_is_answered_while_a_handler_runs(master):
    master.handshake()
    master.send(GET(1, "/slow?t=2"))
    t0 = time.monotonic()
    master.send(c.encode_ping(42))
    t, pong = master.recv()
    assert t == c.PONG and pong == c.Pong(42, 1)
    assert time.monotonic() - t0 < 1.5
    t, head = master.recv(5)
    assert t == c.RESPONSE_HEAD and head.body == (c.INLINE, b"done")


def test_ping_is_answered_while_every_handler_thread_is_busy(master):
    master.handshake()
    master.send(GET(1, "/slow?t=2"), GET(2, "/slow?t=2"), GET(3, "/slow?t=2"))
    t0 = time.monotonic()
    master.send(c.encode_ping(43))
    t, pong = master.recv()
    assert t == c.PONG and pong == c.Pong(43, 3)
    assert time.monotonic() - t0 < 1.5
    master.send(c.encode_cancel(2))         # and Cancel is handled at once too
    assert master.recv(1.5) == (c.REQUEST_FAILED, c.RequestFailed(2, "cancelled"))
    ids = sorted(master.recv(5)[1].id for _ in range(2))
    assert ids == [1, 3]


def _switches(pid):
    """Context switches so far, over every thread of ``pid``: each wake-up is one."""
    total = 0
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/status" % (pid, t)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass                            # a thread that just ended
    return total


def test_an_idle_worker_does_not_wake_up_and_wakes_for_the_next_requests(master):
    master.handshake()
    master.send(GET(1, "/hello"))
    assert master.recv()[0] == c.RESPONSE_HEAD
    master.quiet(0.1)                       # past the watchdog's last tick
    before = _switches(master.proc.pid)
    master.quiet(1.0)
    woke = _switches(master.proc.pid) - before
    # A 10 ms tick would be about 100 wake-ups in that second.
    assert woke < 10, "an idle worker woke %d times in 1 s" % woke
    # And once requests come, reading goes on while every thread is busy.
    master.send(GET(2, "/slow?t=2"), GET(3, "/slow?t=2"), GET(4, "/slow?t=2"))
    t0 = time.monotonic()
    master.send(c.encode_ping(44))
    t, pong = master.recv()
    assert t == c.PONG and pong == c.Pong(44, 3)
    assert time.monotonic() - t0 < 1.5
    ids = sorted(master.recv(5)[1].id for _ in range(3))
    assert ids == [2, 3, 4]


def test_response_body_stays_within_the_window(master):
    master.handshake(window=1000)
    master.send(GET(1, "/download?n=5000"))
    t, head = master.recv()
    assert t == c.RESPONSE_HEAD and head.body == (c.STREAMED, None)
    got = b""
    while len(got) < 1000:
        t, chunk = master.recv()
        assert t == c.W_BODY_CHUNK and chunk.id == 1
        got += chunk.data
    assert len(got) == 1000                 # exactly the window, not a byte more
    master.quiet()
    master.send(c.encode_credit(1, 1500, worker=False))
    while len(got) < 2500:
        t, chunk = master.recv()
        assert t == c.W_BODY_CHUNK
        got += chunk.data
    assert len(got) == 2500
    master.quiet()
    master.send(c.encode_credit(1, 1 << 20, worker=False))
    while True:
        t, msg = master.recv()
        if t == c.W_BODY_END:
            break
        got += msg.data
    assert got == (bytes(range(256)) * 20)[:5000]


def test_request_body_is_credited_as_it_is_consumed(master):
    hello = master.handshake()
    window = hello.initial_window
    head = c.encode_request_head(1, "POST", "/echo", 2, [(b"host", b"t")], "127.0.0.1:1",
                                 (c.STREAMED, 1 << 20))
    master.send(head)
    data = os.urandom(1 << 20)
    sent, credits = 0, 0
    while sent < len(data):
        if window == 0:
            t, credit = master.recv()
            assert t == c.W_CREDIT and credit.id == 1
            window += credit.bytes
            credits += 1
            continue
        n = min(window, 65536, len(data) - sent)
        master.send(c.encode_body_chunk(1, data[sent:sent + n], worker=False))
        sent += n
        window -= n
    master.send(c.encode_body_end(1, (), worker=False))
    assert credits >= 3                     # batched: a few, not one per chunk
    echoed, t, head = b"", *master.recv()
    while t == c.W_CREDIT:                  # credits may still cross the end
        t, head = master.recv()
    assert t == c.RESPONSE_HEAD and head.status == 200
    assert head.body[0] == c.STREAMED
    master.send(c.encode_credit(1, 1 << 24, worker=False))
    while True:
        t, msg = master.recv()
        if t == c.W_BODY_END:
            break
        assert t == c.W_BODY_CHUNK
        echoed += msg.data
    assert echoed == data


def test_cancel_fails_the_request_and_later_frames_are_ignored(master):
    master.handshake()
    master.send(GET(1, "/slow?t=5"))
    master.send(c.encode_cancel(1))
    t, failed = master.recv(2)
    assert (t, failed) == (c.REQUEST_FAILED, c.RequestFailed(1, "cancelled"))
    # Frames crossing the terminal message are ignored silently, as are unknown ids.
    master.send(c.encode_credit(1, 100, worker=False), c.encode_cancel(1), c.encode_cancel(99))
    master.send(c.encode_ping(7))
    assert master.recv() == (c.PONG, c.Pong(7, 0))
    # The in-flight slot is free again: another request is served.
    master.send(GET(2, "/hello"))
    t, head = master.recv()
    assert t == c.RESPONSE_HEAD and head.id == 2


def test_drain_finishes_in_flight_then_goodbye_and_exit_0(master):
    master.handshake()
    master.send(GET(1, "/slow?t=0.5"))
    master.send(c.encode_drain())
    master.send(c.encode_ping(5))           # still answered while draining
    assert master.recv() == (c.PONG, c.Pong(5, 1))
    t, head = master.recv()
    assert t == c.RESPONSE_HEAD and head.body == (c.INLINE, b"done")
    assert master.recv() == (c.GOODBYE, c.Goodbye("drained"))
    assert master.recv() is None            # nothing after Goodbye
    assert master.proc.wait(10) == 0


def dead(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_eof_kills_the_whole_process_group(master):
    master.handshake()
    master.send(GET(1, "/spawn"))
    t, head = master.recv()
    child = int(head.body[1])
    assert not dead(child)
    master.sock.close()                     # the master is gone
    assert master.proc.wait(10) == -9       # killed with its group, at once
    deadline = time.monotonic() + 10
    while not dead(child):
        assert time.monotonic() < deadline, "the worker's child outlived it"
        time.sleep(0.01)


def test_sigterm_kills_the_whole_process_group(master):
    master.handshake()
    master.send(GET(1, "/spawn"))
    t, head = master.recv()
    child = int(head.body[1])
    master.send(GET(2, "/slow?t=5"))          # even while a handler runs
    master.proc.send_signal(15)
    assert master.proc.wait(10) == -9
    deadline = time.monotonic() + 10
    while not dead(child):
        assert time.monotonic() < deadline, "the worker's child outlived it"
        time.sleep(0.01)


def test_a_frame_that_does_not_decode_ends_the_worker(master):
    master.handshake()
    master.send(b"\x00\x00\x00\x02\x87\x00")  # a Ping too short for its nonce
    assert master.recv() is None
    assert master.proc.wait(10) != 0
    assert b"bad frame from the master" in master.proc.stderr.read()


def test_an_oversized_frame_ends_the_worker(master):
    master.handshake()
    master.send(b"\x7f\x00\x00\x00")
    assert master.recv() is None
    assert master.proc.wait(10) != 0
    assert b"over the limit" in master.proc.stderr.read()


def test_an_exception_after_the_head_went_out_fails_the_request_only(master):
    master.handshake()
    master.send(GET(1, "/boom-midway"))
    t, head = master.recv()
    assert (t, head.status, head.body[0]) == (c.RESPONSE_HEAD, 200, c.STREAMED)
    t, chunk = master.recv()
    assert (t, chunk.data) == (c.W_BODY_CHUNK, b"part")
    t, failed = master.recv()
    assert (t, failed.id) == (c.REQUEST_FAILED, 1)
    master.send(GET(2, "/hello"))
    t, head = master.recv()
    assert (t, head.id, head.status) == (c.RESPONSE_HEAD, 2, 200)


def test_a_response_head_too_big_for_a_frame_is_a_500_and_the_worker_serves_on(master):
    master.recv()
    master.send(c.encode_welcome(0, 4096, 64, c.DEFAULT_INITIAL_WINDOW))
    master.send(GET(1, "/bigheader?n=3000"))            # fits in 4096
    t, head = master.recv()
    assert (t, head.status) == (c.RESPONSE_HEAD, 200)
    assert dict(head.headers)[b"x-big"] == b"b" * 3000
    master.send(GET(2, "/bigheader?n=8000"))            # does not
    t, head = master.recv()
    assert (t, head.id, head.status) == (c.RESPONSE_HEAD, 2, 500)
    master.send(GET(3, "/hello"))
    t, head = master.recv()
    assert (t, head.id, head.status) == (c.RESPONSE_HEAD, 3, 200)


@pytest.mark.parametrize("path, status", [
    ("/twice", 500), ("/badstatus", 500), ("/badlength", 500), ("/nostart", 500),
    ("/replace", 503),
])
def test_wsgi_misuse_costs_that_request_only(path, status, tmp_path):
    m = FakeMaster([PY, "-m", "ferry_worker.wsgi", "raw_wsgi:app", "--threads", "2"], str(tmp_path))
    try:
        m.handshake()
        m.send(GET(1, path))
        t, head = m.recv()
        assert (t, head.id, head.status) == (c.RESPONSE_HEAD, 1, status)
        if status == 503:
            assert head.body == (c.INLINE, b"try later")
            assert (b"x-first", b"1") not in head.headers
        m.send(GET(2, "/"))
        t, head = m.recv()
        assert (t, head.id, head.status, head.body) == (c.RESPONSE_HEAD, 2, 200, (c.INLINE, b"ok"))
    finally:
        m.kill()


def test_wsgi_exc_info_after_the_body_started_fails_the_request(tmp_path):
    m = FakeMaster([PY, "-m", "ferry_worker.wsgi", "raw_wsgi:app"], str(tmp_path))
    try:
        m.handshake()
        m.send(GET(1, "/after"))
        assert m.recv()[0] == c.RESPONSE_HEAD
        t, chunk = m.recv()
        assert (t, chunk.data) == (c.W_BODY_CHUNK, b"part")
        t, failed = m.recv()
        assert (t, failed.reason) == (c.REQUEST_FAILED, "the application raised an exception")
    finally:
        m.kill()
    assert b"KeyError: 'too late'" in m.proc.stderr.read()


def test_a_head_for_an_id_still_in_flight_ends_the_worker(master):
    # Answering either head would put a second terminal message on that id.
    master.handshake()
    master.send(GET(1, "/slow?t=5"), GET(1, "/hello"))
    assert master.recv() is None
    assert master.proc.wait(10) != 0
    assert b"request 1, still in flight" in master.proc.stderr.read()


def test_a_head_over_the_limit_fails_alone_and_the_others_finish(master):
    master.handshake()                      # both apps announce 3 in flight
    master.send(*[GET(i, "/slow?t=0.5") for i in (1, 2, 3)], GET(4, "/hello"))
    t, failed = master.recv()
    assert (t, failed.id) == (c.REQUEST_FAILED, 4)
    assert "in-flight limit" in failed.reason
    answers = [master.recv() for _ in range(3)]
    assert sorted((t, m.id, m.status) for t, m in answers) == [
        (c.RESPONSE_HEAD, i, 200) for i in (1, 2, 3)]
    master.send(GET(5, "/hello"))           # and the worker serves on
    t, head = master.recv()
    assert (t, head.id, head.status) == (c.RESPONSE_HEAD, 5, 200)


def test_eof_during_the_handshake_kills_the_group(master):
    t, _ = master.recv()
    assert t == c.HELLO
    master.sock.close()
    assert master.proc.wait(10) == -9


@pytest.mark.parametrize("first, says", [
    (c.encode_ping(5), b"expected Welcome from the master, got type 0x87"),
    (c.encode_welcome(protocol_version=2), b"protocol version mismatch: ours 1, the master's 2"),
    (c.encode_welcome()[:-3] + b"", None),          # cut short: waits for the rest
])
def test_a_bad_handshake_ends_the_worker_with_what_was_wrong(master, first, says):
    assert master.recv()[0] == c.HELLO
    if says is None:
        # A Welcome frame whose length prefix promises more than arrives: then EOF.
        master.sock.sendall(first)
        master.quiet()
        master.sock.close()
        assert master.proc.wait(10) == -9
        return
    master.send(first)
    assert master.recv() is None
    assert master.proc.wait(10) == 70
    assert says in master.proc.stderr.read()


@pytest.mark.parametrize("frame, says", [
    (b"\x00\x00\x00\x03\x82\x00\x00", b"bad frame from the master"),   # a chunk cut in its id
    (b"\x00\x00\x00\x01\x01", b"0x01 is not a master message type"),
])
def test_a_frame_the_session_itself_refuses_ends_the_worker(master, frame, says):
    master.handshake()
    master.send(frame)
    assert master.recv() is None
    assert master.proc.wait(10) == 70
    assert says in master.proc.stderr.read()


def test_a_second_welcome_is_ignored(master):
    master.handshake()
    master.send(c.encode_welcome(), GET(1, "/hello"))
    t, head = master.recv()
    assert (t, head.id, head.status) == (c.RESPONSE_HEAD, 1, 200)
    master.kill()
    assert b"ignoring a second Welcome" in master.proc.stderr.read()


@pytest.mark.parametrize("module", ["ferry_worker.wsgi", "ferry_worker.asgi"])
@pytest.mark.parametrize("fd, says", [
    (None, b"FERRY_FD is not set"),
    ("three", b"is not a descriptor number"),
    ("0", b"is not a socket"),
])
def test_outside_ferry_the_worker_says_how_to_run_it(module, fd, says):
    env = dict(os.environ)
    env.pop("FERRY_FD", None)
    if fd is not None:
        env["FERRY_FD"] = fd
    app = "flask_app:app" if module.endswith("wsgi") else "starlette_app:app"
    p = subprocess.run([PY, "-m", module, app], env=env, cwd=APPS, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=30)
    assert p.returncode == 1
    assert says in p.stderr and b"Traceback" not in p.stderr


@pytest.mark.parametrize("module", ["ferry_worker.wsgi", "ferry_worker.asgi"])
def test_an_app_that_does_not_import_exits_before_the_handshake(module, tmp_path):
    m = FakeMaster([PY, "-m", module, "no_such_module_here:app"], str(tmp_path))
    try:
        assert m.recv() is None             # no Hello: EOF
        assert m.proc.wait(10) == 1
        err = m.proc.stderr.read()
        assert b"ModuleNotFoundError" in err and b"no_such_module_here" in err
    finally:
        m.kill()


def test_ferry_reports_the_import_error_as_a_start_failure(start_ferry):
    f = start_ferry([PY, "-m", "ferry_worker.wsgi", "no_such_module_here:app"], ready=False)
    assert f.wait_exit(30) == 1
    f.wait_for("failed to start")
    assert "No module named 'no_such_module_here'" in f.log()

