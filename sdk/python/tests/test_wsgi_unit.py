"""wsgi.py's pieces on their own: the environ built from a RequestHead, and
wsgi.input over a streamed body."""
from ferry_worker import codec as c
from ferry_worker.session import Exchange
from ferry_worker.wsgi import StreamInput, WSGIServer


class Chunks:
    """Stands in for an Exchange: hands out the given chunks, then the end."""

    def __init__(self, *chunks):
        self.chunks = list(chunks)

    def read_chunk(self):
        return memoryview(self.chunks.pop(0)) if self.chunks else None


def test_stream_input_reads_lines_and_sizes():
    s = StreamInput(Chunks(b"ab\ncd", b"ef\n", b"gh"))
    assert s.readline() == b"ab\n"
    assert s.readline(None) == b"cdef\n"
    assert s.readline(1) == b"g"
    assert s.read() == b"h"
    assert s.read() == b""
    s = StreamInput(Chunks(b"abc", b"def"))
    assert s.read(4) == b"abcd"
    assert s.read1() == b"ef"
    assert s.read(3) == b""
    assert list(StreamInput(Chunks(b"a\nb\n", b"c"))) == [b"a\n", b"b\n", b"c"]


def environ(target, headers, body=c.BODY_EMPTY, peer="[::1]:5000"):
    server = WSGIServer(lambda e, s: [], threads=2)
    head = c.RequestHead(1, "POST", target, 1, headers, peer, body)
    return server.environ(Exchange(server.session, head))


def test_environ():
    env = environ("/caf%C3%A9/x%2Fy?q=1&r=%20", [
        (b"host", b"example.com:8080"), (b"content-type", b"text/plain"),
        (b"x-a", b"1"), (b"x-a", b"2"), (b"cookie", b"a=1"), (b"cookie", b"b=2"),
        (b"x_spoof", b"no")], (c.INLINE, b"hello"))
    assert env["REQUEST_METHOD"] == "POST"
    assert env["PATH_INFO"] == "/caf\xc3\xa9/x/y"          # decoded bytes, read as latin-1
    assert env["QUERY_STRING"] == "q=1&r=%20"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "8080")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("::1", "5000")
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "5"
    assert env["HTTP_X_A"] == "1,2"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert "HTTP_X_SPOOF" not in env                        # "_" in a name: dropped
    assert env["wsgi.input"].read() == b"hello"
    assert env["wsgi.version"] == (1, 0) and env["wsgi.multithread"] is True


def test_environ_without_host_or_body():
    env = environ("/", [])
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("localhost", "80")
    assert "CONTENT_LENGTH" not in env
    assert env["wsgi.input"].read() == b""


def test_asgi_runs_on_uvloop_where_installed_as_uvicorn_does():
    import asyncio

    from ferry_worker import asgi
    assert asgi.parser().parse_args(["m:app"]).loop == "auto"
    for kind, module in (("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")):
        loop = asgi._new_loop(kind)
        try:
            assert type(loop).__module__.split(".")[0] == module, kind
        finally:
            loop.close()
