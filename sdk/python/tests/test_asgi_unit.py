"""asgi.py's pieces on their own, in process: the scope built from a RequestHead, and
the response messages an app sends turned into frames (read back with the codec)."""
import asyncio

import pytest

from ferry_worker import aio, asgi
from ferry_worker import codec as c
from ferry_worker.aio import AsyncExchange
from ferry_worker.asgi import ASGIServer, Lifespan


def scope(target, peer="127.0.0.1:5000", state=None):
    server = ASGIServer(None, lifespan="auto")
    if state:
        server.lifespan.state.update(state)
    head = c.RequestHead(1, "GET", target, 2, [(b"host", b"t")], peer, c.BODY_EMPTY)
    return server.scope(AsyncExchange(server.session, head))


def test_scope_of_a_plain_target():
    s = scope("/hello")
    assert (s["type"], s["method"], s["http_version"], s["scheme"]) == ("http", "GET", "1.1", "http")
    assert (s["path"], s["raw_path"], s["query_string"]) == ("/hello", b"/hello", b"")
    assert s["headers"] == [(b"host", b"t")]
    assert s["client"] == ("127.0.0.1", 5000)
    assert "state" not in s


def test_scope_splits_the_query_and_unescapes_only_the_path():
    s = scope("/caf%C3%A9/x%2Fy?q=1&r=%20")
    assert s["path"] == "/caf\u00e9/x/y"
    assert s["raw_path"] == b"/caf%C3%A9/x%2Fy"
    assert s["query_string"] == b"q=1&r=%20"
    s = scope("/a?")
    assert (s["path"], s["query_string"]) == ("/a", b"")


def test_scope_of_a_target_that_is_not_ascii():
    # The master passes the target as UTF-8 text: raw_path and the query carry it
    # as UTF-8 bytes.
    s = scope("/\u00e9t\u00e9?n=\u00e9")
    assert (s["path"], s["raw_path"], s["query_string"]) == (
        "/\u00e9t\u00e9", "/\u00e9t\u00e9".encode(), "n=\u00e9".encode())


@pytest.mark.parametrize("peer, client", [
    ("[::1]:8080", ("::1", 8080)),
    ("10.0.0.7:1", ("10.0.0.7", 1)),
    ("unix", None),                 # not host:port: no client, as ASGI allows
    ("", None),
])
def test_scope_client_from_the_peer(peer, client):
    assert scope("/", peer)["client"] == client
    assert scope("/", peer)["client"] == client       # the second time from the cache


def test_the_client_cache_is_bounded():
    asgi._clients.clear()
    for port in range(asgi._CLIENTS_MAX + 10):
        assert scope("/", "10.1.2.3:%d" % port)["client"] == ("10.1.2.3", port)
    assert len(asgi._clients) <= asgi._CLIENTS_MAX


def test_scope_state_is_a_copy_of_the_lifespan_state():
    s = scope("/", state={"db": "x"})
    assert s["state"] == {"db": "x"}
    s["state"]["db"] = "changed"
    assert scope("/", state={"db": "x"})["state"] == {"db": "x"}


class Transport:
    def __init__(self):
        self.out = []

    def write(self, data):
        self.out.append(bytes(data))

    def writelines(self, parts):
        self.out.extend(bytes(p) for p in parts)

    def is_closing(self):
        return False


def serve(app, *steps, on_loop=None):
    """Runs ``app`` on a session over a fake transport, feeding it each step's frames
    (bytes) with a few passes of the loop after each, and returns the frames it wrote
    after Hello, decoded. ``on_loop(loop)`` runs before the session starts."""
    async def main():
        s = ASGIServer(app, lifespan="off").session
        s.loop = asyncio.get_running_loop()
        if on_loop is not None:
            on_loop(s.loop)
        s._finished = s.loop.create_future()
        t = Transport()
        s.connection_made(t)
        s.data_received(c.encode_welcome(0, c.DEFAULT_MAX_FRAME_SIZE, 64, 1 << 20))
        for frames in steps:
            s.data_received(frames)
            for _ in range(20):
                await asyncio.sleep(0)
        out = c.FrameSplitter().feed(b"".join(t.out[1:]))
        return [c.decode_worker(bytes(b[s:e])) for b, s, e in out]
    return asyncio.run(main())


def run(app, method="GET"):
    """Serves one request with ``app`` and returns the frames it wrote, decoded."""
    return serve(app, c.encode_request_head(7, method, "/", 2, [], "127.0.0.1:1"))


def app_sending(*messages):
    async def app(scope, receive, send):
        for m in messages:
            await send(m)
    return app


START = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}


def test_each_request_runs_in_a_task_of_its_own_with_the_shared_name():
    tasks = []

    async def app(scope, receive, send):
        tasks.append(asyncio.current_task())
        await send(START)
        await send({"type": "http.response.body", "body": b"hello"})

    frames = serve(app, c.encode_request_head(1, "GET", "/", 2, [], "p")
                   + c.encode_request_head(2, "GET", "/", 2, [], "p"))
    assert [t for t, _ in frames] == [c.RESPONSE_HEAD, c.RESPONSE_HEAD]
    assert len(tasks) == 2 and tasks[0] is not tasks[1]
    assert [t.get_name() for t in tasks] == [aio.TASK_NAME] * 2


def test_a_task_factory_the_app_set_makes_the_request_tasks():
    made = []

    def factory(loop, coro, **kw):
        made.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kw)

    frames = serve(app_sending(START, {"type": "http.response.body", "body": b"hello"}),
                   c.encode_request_head(1, "GET", "/", 2, [], "p"),
                   on_loop=lambda loop: loop.set_task_factory(factory))
    assert [t for t, _ in frames] == [c.RESPONSE_HEAD]
    # (asyncio.run's own shutdown makes tasks through it too.)
    assert made.count("ASGIServer.handle") == 1, made


def test_a_whole_small_body_is_one_response_frame():
    frames = run(app_sending(START, {"type": "http.response.body", "body": b"hello"}))
    assert [t for t, _ in frames] == [c.RESPONSE_HEAD]
    head = frames[0][1]
    assert (head.id, head.status, head.body) == (7, 200, (c.INLINE, b"hello"))


def test_a_small_body_in_parts_is_gathered_into_one_frame():
    frames = run(app_sending(START, {"type": "http.response.body", "body": b"he", "more_body": True},
                             {"type": "http.response.body", "body": b"llo"}))
    assert [t for t, _ in frames] == [c.RESPONSE_HEAD]
    assert frames[0][1].body == (c.INLINE, b"hello")


def test_a_body_without_a_length_is_streamed_and_ended():
    start = {"type": "http.response.start", "status": 200, "headers": []}
    frames = run(app_sending(start, {"type": "http.response.body", "body": b"ab", "more_body": True},
                             {"type": "http.response.body", "body": b"cd"}))
    assert [t for t, _ in frames] == [c.RESPONSE_HEAD, c.W_BODY_CHUNK, c.W_BODY_CHUNK, c.W_BODY_END]
    assert frames[0][1].body[0] == c.STREAMED
    assert [bytes(m.data) for t, m in frames[1:3]] == [b"ab", b"cd"]


@pytest.mark.parametrize("body", [b"hell", b"hello!"])
def test_a_body_that_breaks_its_length_fails_the_request(body):
    frames = run(app_sending(START, {"type": "http.response.body", "body": body}))
    assert [t for t, _ in frames] == [c.REQUEST_FAILED]
    assert "Content-Length" in frames[0][1].reason


def test_head_gets_no_body():
    frames = run(app_sending(START, {"type": "http.response.body", "body": b"hello"}), method="HEAD")
    assert [t for t, _ in frames] == [c.RESPONSE_HEAD]
    assert frames[0][1].body[0] == c.EMPTY


def test_a_cancel_while_the_app_waits_for_the_body_is_http_disconnect():
    events = []

    async def app(scope, receive, send):
        events.append(await receive())
        events.append(await receive())

    frames = serve(app,
                   c.encode_request_head(3, "POST", "/", 2, [], "127.0.0.1:1", (c.STREAMED, None))
                   + c.encode_body_chunk(3, b"part", worker=False),
                   c.encode_cancel(3))
    assert events == [{"type": "http.request", "body": b"part", "more_body": True},
                      {"type": "http.disconnect"}]
    assert [(t, m.id, m.reason) for t, m in frames] == [(c.REQUEST_FAILED, 3, "cancelled")]


def lifespan_app(startup, shutdown="lifespan.shutdown.complete", after_startup=None):
    """A lifespan app answering startup and shutdown with the given message types;
    ``after_startup``: an exception it raises right after startup completed."""
    async def app(scope, receive, send):
        assert scope["type"] == "lifespan"
        await receive()
        if startup is None:
            raise RuntimeError("lifespan is not supported here")
        await send({"type": startup, "message": "no database"})
        if after_startup is not None:
            raise after_startup
        await receive()
        await send({"type": shutdown, "message": "could not flush"})
    return app


def test_a_failed_startup_is_an_error_with_the_apps_message():
    async def main():
        await Lifespan(lifespan_app("lifespan.startup.failed")).startup()
    with pytest.raises(RuntimeError, match="lifespan startup failed: no database"):
        asyncio.run(main())


def test_an_app_without_lifespan_is_served_in_auto_mode_and_refused_with_on():
    async def auto():
        span = Lifespan(lifespan_app(None))
        await span.startup()
        await span.shutdown()                 # nothing to shut down: returns at once
        return span.supported
    assert asyncio.run(auto()) is False

    async def on():
        await ASGIServer(lifespan_app(None), lifespan="on").serve()
    with pytest.raises(RuntimeError, match="--lifespan on"):
        asyncio.run(on())


def test_a_failed_shutdown_is_logged(caplog):
    async def main():
        span = Lifespan(lifespan_app("lifespan.startup.complete", "lifespan.shutdown.failed"))
        await span.startup()
        await span.shutdown()
    asyncio.run(main())
    assert "lifespan shutdown failed: could not flush" in caplog.text


def test_a_lifespan_task_that_fails_after_startup_is_logged_when_it_fails(caplog):
    async def main():
        span = Lifespan(lifespan_app("lifespan.startup.complete",
                                     after_startup=ValueError("lost the pool")))
        await span.startup()
        for _ in range(5):
            await asyncio.sleep(0)
        logged = caplog.text
        await span.shutdown()
        return logged
    logged = asyncio.run(main())
    assert "the lifespan task failed after startup" in logged and "lost the pool" in logged


def kinds(frames):
    return [t for t, _ in frames]


def test_an_exception_after_the_head_went_out_fails_the_request():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise ValueError("halfway")
    frames = run(app)
    assert kinds(frames) == [c.RESPONSE_HEAD, c.W_BODY_CHUNK, c.REQUEST_FAILED]
    assert frames[2][1].reason == "the application raised an exception"


def test_an_exception_before_the_head_is_a_500():
    async def app(scope, receive, send):
        raise ValueError("at once")
    frames = run(app)
    assert kinds(frames) == [c.RESPONSE_HEAD]
    assert (frames[0][1].status, frames[0][1].body) == (500, (c.INLINE, b"Internal Server Error\n"))


def test_an_app_that_returns_without_a_response_gets_a_500():
    async def app(scope, receive, send):
        pass
    frames = run(app)
    assert kinds(frames) == [c.RESPONSE_HEAD] and frames[0][1].status == 500


def test_an_app_that_returns_before_the_end_of_its_response_fails_it():
    frames = run(app_sending({"type": "http.response.start", "status": 200, "headers": []},
                             {"type": "http.response.body", "body": b"ab", "more_body": True}))
    assert kinds(frames) == [c.RESPONSE_HEAD, c.W_BODY_CHUNK, c.REQUEST_FAILED]
    assert frames[2][1].reason == "the application did not finish the response"


def test_a_gathered_small_body_that_runs_past_its_length_fails_the_request():
    frames = run(app_sending(START, {"type": "http.response.body", "body": b"hel", "more_body": True},
                             {"type": "http.response.body", "body": b"lo!!", "more_body": True},
                             {"type": "http.response.body", "body": b""}))
    assert kinds(frames) == [c.REQUEST_FAILED]
    assert "ran past its Content-Length 5" in frames[0][1].reason


@pytest.mark.parametrize("messages", [
    [{"type": "http.response.body", "body": b"x"}],                         # before start
    [START, START],                                                          # start twice
    [{"type": "http.response.push", "path": "/"}],                           # not ASGI HTTP
])
def test_messages_out_of_order_or_unknown_are_a_500(messages):
    frames = run(app_sending(*messages))
    assert kinds(frames) == [c.RESPONSE_HEAD] and frames[0][1].status == 500
