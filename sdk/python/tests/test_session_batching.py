"""session.py's batching of answers, in process with a socket that records each
write: answers to requests read together go out in one write; anything else written
meanwhile (a Pong) takes the held answers with it."""
from ferry_worker import codec as c
from ferry_worker.session import Session


class Sock:
    def __init__(self):
        self.writes = []
        self.reads = []                 # what recv returns, in turn
        self.log = []                   # "write" and "read", in order

    def recv(self, n):
        self.log.append("read")
        return self.reads.pop(0)

    def sendall(self, data):
        self.log.append("write")
        self.writes.append(bytes(data))

    def sendmsg(self, parts):
        data = b"".join(bytes(p) for p in parts)
        self.writes.append(data)
        return len(data)


def frames_of(data):
    return [c.decode_worker(bytes(b[s:e])) for b, s, e in c.FrameSplitter().feed(data)]


def session(handler):
    s = Session(handler, threads=4)
    s._sock = Sock()
    return s


def feed(s, *frames):
    for buf, start, end in c.FrameSplitter().feed(b"".join(frames)):
        s._dispatch(buf, start, end, True)


def head(rid, path="/"):
    return c.encode_request_head(rid, "GET", path, 2, [], "127.0.0.1:1")


def run_queued(s):
    s._done.set()               # _thread returns once the queue is empty
    s._thread()


def test_answers_to_requests_read_together_go_out_in_one_write():
    seen = []

    def handler(ex):
        seen.append(len(ex._session._sock.writes))
        ex.respond(200, [], b"hi %d" % ex.id)

    s = session(handler)
    feed(s, head(1), head(2), head(3))
    run_queued(s)
    assert seen == [0, 0, 0]
    assert len(s._sock.writes) == 1
    answers = frames_of(s._sock.writes[0])
    assert [(t, m.id, m.body) for t, m in answers] == [
        (c.RESPONSE_HEAD, i, (c.INLINE, b"hi %d" % i)) for i in (1, 2, 3)]
    assert not s._out and not s._table


def test_a_lone_request_is_answered_at_once():
    s = session(lambda ex: ex.respond(204, []))
    feed(s, head(1))
    run_queued(s)
    assert [[t for t, _ in frames_of(w)] for w in s._sock.writes] == [[c.RESPONSE_HEAD]]


def test_a_pong_takes_the_held_answers_with_it():
    def handler(ex):
        if ex.id == 2:                  # the master pings while request 2 runs
            feed(ex._session, c.encode_ping(9))
        ex.respond(200, [], b"x")

    s = session(handler)
    feed(s, head(1), head(2))
    run_queued(s)
    kinds = [[(t, getattr(m, "id", None)) for t, m in frames_of(w)] for w in s._sock.writes]
    assert kinds == [[(c.RESPONSE_HEAD, 1), (c.PONG, None)], [(c.RESPONSE_HEAD, 2)]]


def test_held_answers_go_out_before_a_handler_waits_on_the_master():
    def handler(ex):
        if ex.id == 2:
            assert ex.read_chunk() is None      # waits: reads the channel itself
        ex.respond(200, [], b"x")

    s = session(handler)
    s._sock.reads.append(c.encode_body_end(2, (), worker=False))
    feed(s, head(1), c.encode_request_head(2, "POST", "/", 2, [], "p", (c.STREAMED, None)))
    run_queued(s)
    assert s._sock.log == ["write", "read", "write"]
    assert [[m.id for _, m in frames_of(w)] for w in s._sock.writes] == [[1], [2]]


def test_a_streamed_body_goes_out_after_the_held_answers_in_order():
    def handler(ex):
        if ex.id == 1:
            ex.respond(200, [], b"a")
        else:
            ex.start(200, [], 3)
            ex.write(b"abc")
            ex.end()

    s = session(handler)
    s.response_window = 1 << 20
    feed(s, head(1), head(2), head(3))
    run_queued(s)
    order = [(t, m.id) for w in s._sock.writes for t, m in frames_of(w)]
    assert order == [(c.RESPONSE_HEAD, 1), (c.RESPONSE_HEAD, 2), (c.W_BODY_CHUNK, 2),
                     (c.W_BODY_END, 2), (c.RESPONSE_HEAD, 3), (c.W_BODY_CHUNK, 3),
                     (c.W_BODY_END, 3)]


def test_the_watchdog_sends_held_answers_within_a_tick():
    # An answer held while its thread went on to a slow handler: no one else writes,
    # and the watchdog's tick sends it.
    import threading
    import time

    s = session(lambda ex: None)
    feed(s, head(1))                    # in flight: the watchdog keeps ticking
    s._out.append(c.encode_response(1, 200, [], b"held"))
    s._token.acquire()                  # a reader is busy: the watchdog only ticks
    watchdog = threading.Thread(target=s._watchdog, daemon=True)
    watchdog.start()
    deadline = time.monotonic() + 5
    while not s._sock.writes and time.monotonic() < deadline:
        time.sleep(0.005)
    s._done.set()
    watchdog.join(5)
    assert [[(t, m.id) for t, m in frames_of(w)] for w in s._sock.writes] == [
        [(c.RESPONSE_HEAD, 1)]]
    assert s._sock.writes and not s._out
