"""WSGI (PEP 3333) on ferry: ``python -m ferry_worker.wsgi myapp:app [--threads N]``.

Owns the translation between an ``Exchange`` of the threaded session and a WSGI call:
the environ, ``wsgi.input`` (the request body, streamed under credits), and sending
the app's iterable back (inline when it is small and whole, streamed under the
master's window otherwise), with the app's ``Content-Length`` enforced: a body longer
or shorter than it fails that request only (RequestFailed), as the Rust SDK does,
because the master treats a streamed body that breaks its declared length as a
protocol violation and would kill the worker.
"""
import argparse
import io
import logging
import os
import sys
import traceback
from urllib.parse import unquote_to_bytes

from . import channel, loader
from .codec import EMPTY, INLINE
from .session import INLINE_MAX, RequestGone, Session

log = logging.getLogger("ferry_worker.wsgi")

_ERROR_500 = b"Internal Server Error\n"
_TEXT_PLAIN = [(b"content-type", b"text/plain")]
# Responses that carry no body whatever their headers say.
_BODILESS = frozenset([204, 304])


class StreamInput:
    """``wsgi.input`` for a streamed request body: reads pull chunks from the session,
    which credits the master as they are consumed."""

    def __init__(self, ex):
        self._ex = ex
        self._buf = b""
        self._eof = False

    def _more(self):
        if self._eof:
            return False
        chunk = self._ex.read_chunk()
        if chunk is None:
            self._eof = True
            return False
        self._buf = self._buf + chunk if self._buf else bytes(chunk)
        return True

    def read(self, size=-1):
        if size is None or size < 0:
            parts = [self._buf]
            while True:
                chunk = None if self._eof else self._ex.read_chunk()
                if chunk is None:
                    self._eof = True
                    break
                parts.append(chunk)
            self._buf = b""
            return b"".join(parts)
        while len(self._buf) < size and self._more():
            pass
        data, self._buf = self._buf[:size], self._buf[size:]
        return data

    def read1(self, size=-1):
        if not self._buf:
            self._more()
        if size is None or size < 0:
            size = len(self._buf)
        data, self._buf = self._buf[:size], self._buf[size:]
        return data

    def readline(self, size=-1):
        if size is None:
            size = -1
        while True:
            i = self._buf.find(b"\n")
            if i >= 0 or (0 <= size <= len(self._buf)) or not self._more():
                break
        end = len(self._buf) if i < 0 else i + 1
        if size >= 0:
            end = min(end, size)
        data, self._buf = self._buf[:end], self._buf[end:]
        return data

    def readlines(self, hint=-1):
        lines, total = [], 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def readable(self):
        return True

    def close(self):
        pass


class FileWrapper:
    """``wsgi.file_wrapper``: iterates a file in blocks (no sendfile: the body goes
    through the channel anyway)."""

    def __init__(self, filelike, blksize=65536):
        self.filelike, self.blksize = filelike, blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read, n = self.filelike.read, self.blksize
        while True:
            data = read(n)
            if not data:
                return
            yield data


class _Response:
    """What the app passed to start_response, and how far the response got."""

    __slots__ = ("status", "headers", "length", "left", "started")

    def __init__(self):
        self.status = None
        self.headers = None
        self.length = None       # the app's Content-Length, if it gave one
        self.left = None         # bytes still owed against it, once streaming
        self.started = False     # the head went out


class WSGIServer:
    """Runs a WSGI app on a threaded ``Session``."""

    def __init__(self, app, threads=4, initial_window=256 * 1024):
        self.app = app
        self.session = Session(self.handle, threads=threads, initial_window=initial_window)
        self._base = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": self.session.threads > 1,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
            "SCRIPT_NAME": "",
            "SERVER_SOFTWARE": "ferry-py",
        }
        # Header name (bytes, as received) -> environ key (None: dropped). Bounded by
        # the names clients send; cleared if it ever grows large.
        self._keys = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}

    def serve(self, sock=None):
        self.session.run(sock)

    # ------------------------------------------------------------ environ

    def _key(self, name):
        keys = self._keys
        if len(keys) > 1000:
            keys.clear()
            keys.update({b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"})
        n = name.decode("latin-1").lower()
        # A name with "_" would become the same key as one with "-": drop it so that a
        # client cannot pass for a header set by a proxy (as Gunicorn and nginx do).
        key = None if "_" in n else (
            "CONTENT_TYPE" if n == "content-type" else
            "CONTENT_LENGTH" if n == "content-length" else
            "HTTP_" + n.upper().replace("-", "_"))
        keys[name] = key
        return key

    def environ(self, ex):
        env = self._base.copy()
        path, _, query = ex.target.partition("?")
        # PATH_INFO is the decoded path, as bytes read as latin-1 (PEP 3333).
        if "%" in path:
            path = unquote_to_bytes(path).decode("latin-1")
        elif not path.isascii():
            path = path.encode("utf-8").decode("latin-1")
        env["REQUEST_METHOD"] = ex.method
        env["PATH_INFO"] = path
        env["QUERY_STRING"] = query
        env["SERVER_PROTOCOL"] = ex.version
        host, _, port = ex.peer.rpartition(":")
        env["REMOTE_ADDR"] = host.strip("[]")
        env["REMOTE_PORT"] = port
        keys = self._keys
        for name, value in ex.headers:
            key = keys.get(name, 0)
            if key == 0:
                key = self._key(name)
            if key is None:
                continue
            v = value.decode("latin-1")
            if key in env:
                env[key] += ("; " if key == "HTTP_COOKIE" else ",") + v
            else:
                env[key] = v
        hostport = env.get("HTTP_HOST")
        if hostport:
            if hostport.endswith("]") or ":" not in hostport:     # no port ([::1] too)
                env["SERVER_NAME"], env["SERVER_PORT"] = hostport, "80"
            else:
                h, _, p = hostport.rpartition(":")
                env["SERVER_NAME"], env["SERVER_PORT"] = h, p
        else:
            env["SERVER_NAME"], env["SERVER_PORT"] = "localhost", "80"
        kind, value = ex.body
        if kind == EMPTY:
            env["wsgi.input"] = io.BytesIO()
        elif kind == INLINE:
            env["wsgi.input"] = io.BytesIO(value)
            env.setdefault("CONTENT_LENGTH", str(len(value)))
        else:
            env["wsgi.input"] = StreamInput(ex)
            if value is not None:
                env.setdefault("CONTENT_LENGTH", str(value))
        return env

    # ------------------------------------------------------------ one request

    def handle(self, ex):
        env = self.environ(ex)
        resp = _Response()

        def start_response(status, headers, exc_info=None):
            if exc_info:
                try:
                    if resp.started:
                        raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None
            elif resp.status is not None:
                raise AssertionError("start_response called twice without exc_info")
            # PEP 3333: three digits, a space, the reason ("200 OK").
            code = int(status[:3]) if status[3:4] in (" ", "") else 0
            if not 100 <= code <= 999:
                raise ValueError("invalid status %r" % status)
            # The pairs go to the codec as they are: it encodes (latin-1), lowercases
            # and checks each distinct field once. Only Content-Length is read here.
            length = None
            for h in headers:
                name = h[0]
                if len(name) == 14 and name.lower() == "content-length":
                    try:
                        length = int(h[1])
                    except ValueError:
                        raise ValueError("invalid Content-Length %r" % (h[1],)) from None
            resp.status, resp.headers, resp.length = code, headers, length
            return write

        def write(data):
            # The legacy write() callable: the head goes out first, then the bytes.
            if resp.status is None:
                raise AssertionError("write() before start_response")
            if data:
                self._stream(ex, resp, data)

        try:
            result = self.app(env, start_response)
            try:
                self._send(ex, resp, result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except RequestGone:
            return
        except Exception:
            sys.stderr.write("ferry_worker.wsgi: error handling %s %s\n%s"
                             % (ex.method, ex.target, traceback.format_exc()))
            sys.stderr.flush()
            if ex.gone:
                return
            if resp.started:
                ex.fail("the application raised an exception")
            else:
                ex.respond(500, _TEXT_PLAIN, _ERROR_500)

    def _send(self, ex, resp, result):
        if resp.started:
            # write() was used: whatever the iterable adds streams after it.
            for data in result:
                if data:
                    self._stream(ex, resp, data)
            self._end(ex, resp)
            return
        if type(result) is list or type(result) is tuple:
            # The usual case (a framework's whole body): no iteration protocol at all.
            data = result[0] if len(result) == 1 else b"".join(result)
            self._whole(ex, resp, data)
            return
        it = iter(result)
        for first in it:
            if first:
                break
        else:
            self._whole(ex, resp, b"")
            return
        length = resp.length
        if length is not None and length <= INLINE_MAX:
            # A small body of announced size: gather it and send it in one frame. It
            # is safe to wait for the rest, since the app said how much is coming.
            parts, total = [first], len(first)
            for data in it:
                parts.append(data)
                total += len(data)
                if total > length:
                    break
            self._whole(ex, resp, b"".join(parts))
            return
        # Unknown or large: each block goes out as the app yields it (PEP 3333 forbids
        # holding blocks back, which matters for server-sent events and the like).
        self._stream(ex, resp, first)
        for data in it:
            if data:
                self._stream(ex, resp, data)
        self._end(ex, resp)

    def _bodiless(self, ex, resp):
        return ex.method == "HEAD" or resp.status in _BODILESS or resp.status < 200

    def _whole(self, ex, resp, data):
        if resp.status is None:
            raise AssertionError("the application returned without calling start_response")
        if self._bodiless(ex, resp):
            # The master keeps a bodiless response's Content-Length for the client.
            ex.respond(resp.status, resp.headers, b"")
            return
        if resp.length is not None and resp.length != len(data):
            self._broken(ex, "the response body is %d bytes but its Content-Length is %d"
                         % (len(data), resp.length))
            return
        ex.respond(resp.status, resp.headers, data)

    def _stream(self, ex, resp, data):
        if not resp.started:
            if self._bodiless(ex, resp):
                return                  # a HEAD (or 204/304) body is not sent
            ex.start(resp.status, resp.headers, resp.length)
            resp.started = True
            resp.left = resp.length
        elif resp.left is None and self._bodiless(ex, resp):
            return
        if resp.left is not None:
            if len(data) > resp.left:
                self._broken(ex, "the response body ran past its Content-Length %d"
                             % resp.length)
                raise RequestGone("the response broke its Content-Length")
            resp.left -= len(data)
        ex.write(data)

    def _end(self, ex, resp):
        if not resp.started:
            self._whole(ex, resp, b"")
        elif resp.left:
            self._broken(ex, "the response body ended %d bytes short of its Content-Length %d"
                         % (resp.left, resp.length))
        else:
            ex.end()

    def _broken(self, ex, reason):
        sys.stderr.write("ferry_worker.wsgi: %s %s: %s\n" % (ex.method, ex.target, reason))
        sys.stderr.flush()
        ex.fail(reason)


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m ferry_worker.wsgi",
        description="Run a WSGI application as a ferry worker: "
                    "ferry -- python -m ferry_worker.wsgi myapp:app")
    p.add_argument("app", help="module:attribute of the WSGI application (module:factory() to call a factory)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("FERRY_WSGI_THREADS", 4)),
                   help="handler threads, and so requests in flight (announced in Hello); default 4")
    p.add_argument("--initial-window", type=int, default=256 * 1024,
                   help="request-body bytes the master may send ahead of the app (default 262144)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(levelname)s: %(message)s")
    app = loader.load_or_exit(args.app, "wsgi")        # before the handshake, on purpose
    try:
        sock = channel.from_env()
    except channel.NotAWorker as e:
        sys.stderr.write("ferry_worker.wsgi: %s\n" % e)
        raise SystemExit(1)
    WSGIServer(app, threads=args.threads, initial_window=args.initial_window).serve(sock)


if __name__ == "__main__":
    main()
