"""ASGI 3 on ferry: ``python -m ferry_worker.asgi myapp:app [--max-in-flight N]``.

Owns the translation between an ``AsyncExchange`` of aio.py and an ASGI HTTP call
(the scope, ``receive()`` and ``send()``), and the lifespan protocol: startup runs
before the handshake (a failed startup is a failed start, reported by ferry with our
stderr), shutdown runs when a drain has finished the last request.

Backpressure: ``receive()`` hands out request-body chunks as they arrive and credits
the master only for what was taken; ``send()`` of a body waits while the master's
window is spent. ``Cancel`` (the client left, or a timeout) turns into
``http.disconnect`` from ``receive()``, and ``send()`` raises ``ClientDisconnected``.
The body's ``Content-Length`` from the app is enforced as in wsgi.py.
"""
import argparse
import asyncio
import logging
import os
import sys
import traceback
from urllib.parse import unquote

from . import channel, loader
from .aio import AsyncSession
from .codec import EMPTY, INLINE
from .session import INLINE_MAX, RequestGone

log = logging.getLogger("ferry_worker.asgi")

# 2.4: send() raises an OSError once the client is gone (so Starlette need not
# listen for http.disconnect beside a streaming response, which would eat body chunks).
_ASGI = {"version": "3.0", "spec_version": "2.4"}
_HTTP_VERSIONS = ("1.0", "1.0", "1.1", "2", "3")
_ERROR_500 = b"Internal Server Error\n"
_TEXT_PLAIN = [(b"content-type", b"text/plain")]
_DISCONNECT = {"type": "http.disconnect"}
_BODILESS = frozenset([204, 304])


# A peer's parsed ("host", port) by its text: a connection's requests all carry the
# same peer. Bounded: emptied when full.
_clients = {}
_CLIENTS_MAX = 4096
_UNSEEN = object()


def _client(peer):
    host, _, port = peer.rpartition(":")
    try:
        client = (host.strip("[]"), int(port))
    except ValueError:
        client = None
    if len(_clients) >= _CLIENTS_MAX:
        _clients.clear()
    _clients[peer] = client
    return client


class ClientDisconnected(RequestGone):
    """``send()`` after the request was cancelled (an OSError, as ASGI asks)."""


class Lifespan:
    """The ``lifespan`` scope: startup before serving, shutdown after the drain."""

    def __init__(self, app):
        self.app = app
        self.state = {}
        self.supported = True
        self._inbox = None          # made on the loop: Python 3.9's Queue binds to the
        self._startup = None        # loop current when it is made, not when first used
        self._shutdown = None
        self._task = None
        self._stopping = False

    async def startup(self):
        loop = asyncio.get_running_loop()
        self._startup, self._shutdown = loop.create_future(), loop.create_future()
        self._inbox = asyncio.Queue()
        self._task = loop.create_task(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        ok, message = await self._startup
        if not ok:
            raise RuntimeError("lifespan startup failed: %s" % (message or "(no message)"))

    async def shutdown(self):
        if not self.supported or self._task is None or self._task.done():
            return
        self._stopping = True
        await self._inbox.put({"type": "lifespan.shutdown"})
        ok, message = await self._shutdown
        if not ok:
            log.error("lifespan shutdown failed: %s", message)

    async def _main(self):
        scope = {"type": "lifespan", "asgi": _ASGI, "state": self.state}
        try:
            await self.app(scope, self._inbox.get, self._send)
        except BaseException as e:
            if not self._startup.done():
                # An app that does not speak lifespan raises on the scope: carry on
                # without it, as Uvicorn's default ("auto") does.
                self.supported = False
                log.info("the application does not support lifespan (%s: %s)",
                         type(e).__name__, e)
                self._startup.set_result((True, None))
            elif not self._shutdown.done():
                if not self._stopping:
                    # Between startup and shutdown nobody waits for the result:
                    # say it now, or it is never said.
                    log.error("the lifespan task failed after startup", exc_info=True)
                self._shutdown.set_result((False, "%s: %s" % (type(e).__name__, e)))
        finally:
            for f in (self._startup, self._shutdown):
                if not f.done():
                    f.set_result((True, None))

    async def _send(self, message):
        t = message["type"]
        if t == "lifespan.startup.complete":
            self._startup.set_result((True, None))
        elif t == "lifespan.startup.failed":
            self._startup.set_result((False, message.get("message", "")))
        elif t == "lifespan.shutdown.complete":
            self._shutdown.set_result((True, None))
        elif t == "lifespan.shutdown.failed":
            self._shutdown.set_result((False, message.get("message", "")))


class ASGIServer:
    def __init__(self, app, max_in_flight=1024, initial_window=256 * 1024, lifespan="auto"):
        self.app = app
        self.lifespan = Lifespan(app) if lifespan != "off" else None
        self.lifespan_required = lifespan == "on"
        # The lifespan's state dict itself (filled by the app's startup), copied into
        # each request's scope when it is not empty.
        self._state = self.lifespan.state if self.lifespan is not None else {}
        self.session = AsyncSession(self.handle, max_in_flight=max_in_flight,
                                    initial_window=initial_window,
                                    on_drained=self.lifespan.shutdown if self.lifespan else None)

    async def serve(self, sock=None):
        if self.lifespan is not None:
            await self.lifespan.startup()
            if self.lifespan_required and not self.lifespan.supported:
                raise RuntimeError("--lifespan on, but the application does not support it")
        await self.session.serve(sock)

    def scope(self, ex):
        # The hottest lines of the adapter after the app itself (a tenth of the
        # worker's instructions per request before they were trimmed): the common
        # target has no query and no escapes, and a peer repeats for as long as its
        # connection stays open, so its parsed form is looked up, not parsed again.
        target = ex.target
        if "?" in target:
            raw, _, query = target.partition("?")
            query_string = query.encode("latin-1") if query.isascii() else query.encode("utf-8")
        else:
            raw, query_string = target, b""
        path = unquote(raw) if "%" in raw else raw
        raw_path = raw.encode("ascii") if raw.isascii() else raw.encode("utf-8")
        peer = ex.peer
        client = _clients.get(peer, _UNSEEN)
        if client is _UNSEEN:
            client = _client(peer)
        scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": _HTTP_VERSIONS[ex.version],
            "method": ex.method,
            "scheme": "http",
            "path": path,
            "raw_path": raw_path,
            "query_string": query_string,
            "root_path": "",
            "headers": ex.headers,
            "client": client,
            "server": None,
        }
        state = self._state
        if state:
            scope["state"] = state.copy()
        return scope

    async def handle(self, ex):
        scope = self.scope(ex)
        kind, value = ex.body
        # Response progress: [status, headers, content-length, bytes left, started,
        # trailers expected, trailers gathered, small body gathered]
        st = [None, None, None, None, False, False, None, None]
        sent_request = [False]

        async def receive():
            if ex.gone:
                return _DISCONNECT
            if kind == 2:                       # Streamed
                if not ex._ended or ex._chunks:
                    try:
                        data = await ex.read_body()
                    except RequestGone:         # cancelled while the app waited
                        return _DISCONNECT
                    if data is not None:
                        more = not ex._ended or bool(ex._chunks)
                        sent_request[0] = not more
                        return {"type": "http.request", "body": data, "more_body": more}
                if not sent_request[0]:
                    sent_request[0] = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            elif not sent_request[0]:
                sent_request[0] = True
                return {"type": "http.request", "body": value if kind == INLINE else b"",
                        "more_body": False}
            # The body is over: the next event is the disconnect, once the request ends.
            await ex.wait_done()
            return _DISCONNECT

        async def send(message):
            if ex.gone:
                raise ClientDisconnected("the request was cancelled")
            t = message["type"]
            if t == "http.response.body":
                data, more = message.get("body", b""), message.get("more_body", False)
                # Plain call first: a small whole body is answered without a
                # coroutine; only body bytes that go out under the window wait.
                rest = self._body(ex, st, data, more)
                if rest is not None:
                    await ex.write(rest)
                    if not more and not st[5]:
                        self._end(ex, st)
            elif t == "http.response.start":
                if st[0] is not None:
                    raise RuntimeError("http.response.start sent twice")
                status = int(message["status"])
                # The pairs go to the codec as they are: it lowercases, checks and
                # lays out each distinct field once. Only Content-Length is read here.
                headers = message.get("headers", ())
                length = None
                for h in headers:
                    name = h[0]
                    if len(name) == 14 and name.lower() == b"content-length":
                        length = int(h[1])
                st[0], st[1], st[2] = status, headers, length
                st[5] = bool(message.get("trailers", False))
            elif t == "http.response.trailers":
                trailers = [(bytes(n).lower(), bytes(v)) for n, v in message.get("headers", ())]
                st[6] = (st[6] or []) + trailers
                if not message.get("more_trailers", False):
                    self._end(ex, st)
            else:
                raise RuntimeError("unexpected ASGI message %r" % t)

        try:
            await self.app(scope, receive, send)
        except RequestGone:
            return
        except BaseException as e:
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            sys.stderr.write("ferry_worker.asgi: error handling %s %s\n%s"
                             % (ex.method, ex.target, traceback.format_exc()))
            sys.stderr.flush()
            if ex.gone:
                return
            if ex.head_sent:
                ex.fail("the application raised an exception")
            else:
                ex.respond(500, _TEXT_PLAIN, _ERROR_500)
            return
        if not ex.gone:
            # Never leave the master waiting: 500 if nothing went out, else a failure.
            if st[0] is None:
                log.error("%s %s: the application returned without a response", ex.method, ex.target)
            else:
                log.error("%s %s: the application returned before the end of its response",
                          ex.method, ex.target)
            if ex.head_sent:
                ex.fail("the application did not finish the response")
            else:
                ex.respond(500, _TEXT_PLAIN, _ERROR_500)

    def _body(self, ex, st, data, more):
        """Takes one http.response.body message. Returns the bytes left for the caller
        to write (under the window) before it ends the response, or None."""
        status = st[0]
        if status is None:
            raise RuntimeError("http.response.body before http.response.start")
        bodiless = ex.method == "HEAD" or status in _BODILESS or status < 200
        if not ex.head_sent:
            length = st[2]
            if length is not None and length <= INLINE_MAX and not bodiless and not st[5]:
                # A small body of announced size is gathered and sent in one frame,
                # as in wsgi.py: one frame instead of three, and a wrong length
                # fails the request before anything reached the client.
                if st[7] is not None:
                    st[7].append(data)
                    if more:
                        if sum(map(len, st[7])) > length:
                            self._broken(ex, "the response body ran past its Content-Length %d"
                                         % length)
                            raise ClientDisconnected("the response broke its Content-Length")
                        return
                    data = b"".join(st[7])
                elif more:
                    st[7] = [data]
                    return
            if not more and not st[5]:
                if bodiless:
                    ex.respond(status, st[1], b"")
                    return
                if st[2] is not None and st[2] != len(data):
                    self._broken(ex, "the response body is %d bytes but its Content-Length is %d"
                                 % (len(data), st[2]))
                    return
                if ex.respond(status, st[1], data):
                    return
            elif not data and more:
                return                          # nothing yet: the head can wait
            ex.start(status, st[1], None if bodiless else st[2])
            st[3] = None if bodiless else st[2]
            st[4] = True
        if data and not bodiless:
            left = st[3]
            if left is not None:
                if len(data) > left:
                    self._broken(ex, "the response body ran past its Content-Length %d" % st[2])
                    raise ClientDisconnected("the response broke its Content-Length")
                st[3] = left - len(data)
            return data
        if not more and not st[5]:
            self._end(ex, st)
        return None

    def _end(self, ex, st):
        if st[3]:
            self._broken(ex, "the response body ended %d bytes short of its Content-Length %d"
                         % (st[3], st[2]))
            return
        if not ex.head_sent:
            ex.start(st[0], st[1], st[2])
        ex.end(st[6] or ())

    def _broken(self, ex, reason):
        sys.stderr.write("ferry_worker.asgi: %s %s: %s\n" % (ex.method, ex.target, reason))
        sys.stderr.flush()
        ex.fail(reason)


def _new_loop(kind):
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
            return uvloop.new_event_loop()
        except ImportError:
            if kind == "uvloop":
                raise
    return asyncio.new_event_loop()


def parser():
    p = argparse.ArgumentParser(
        prog="python -m ferry_worker.asgi",
        description="Run an ASGI 3 application as a ferry worker: "
                    "ferry -- python -m ferry_worker.asgi myapp:app")
    p.add_argument("app", help="module:attribute of the ASGI application (module:factory() to call a factory)")
    p.add_argument("--max-in-flight", type=int, default=1024,
                   help="requests in flight at once on the event loop (announced in Hello; "
                        "the master's --concurrency also caps it); default 1024")
    p.add_argument("--initial-window", type=int, default=256 * 1024,
                   help="request-body bytes the master may send ahead of the app (default 262144)")
    p.add_argument("--lifespan", choices=("auto", "on", "off"), default="auto",
                   help="run the lifespan protocol: auto (if the app supports it), on, off")
    # As Uvicorn's default: uvloop where it is installed (uvicorn[standard] brings
    # it), a C event loop that costs about a tenth less CPU per request here.
    p.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                   help="event loop: auto (uvloop if installed, else asyncio; the default), "
                        "asyncio, or uvloop")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(levelname)s: %(message)s")
    app = loader.load_or_exit(args.app, "asgi")        # before the handshake, on purpose
    try:
        sock = channel.from_env()                       # before the app's startup runs
    except channel.NotAWorker as e:
        sys.stderr.write("ferry_worker.asgi: %s\n" % e)
        raise SystemExit(1)
    server = ASGIServer(app, max_in_flight=args.max_in_flight,
                        initial_window=args.initial_window, lifespan=args.lifespan)
    loop = _new_loop(args.loop)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(server.serve(sock))
    except RuntimeError as e:
        if "lifespan" in str(e):
            sys.stderr.write("ferry_worker.asgi: %s\n" % e)
            raise SystemExit(1)
        raise
    finally:
        loop.close()


if __name__ == "__main__":
    main()
