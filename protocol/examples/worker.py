#!/usr/bin/env python3
"""A minimal ferry worker in plain Python (standard library only), as described in
protocol/SPEC.md. It answers every request at once with an inline text response:
200 for GET/HEAD, 405 otherwise. It never reads request bodies (it answers before
they arrive, which the protocol allows), so it ignores BodyChunk, BodyEnd, Credit
and Cancel: by the time it reads them the request is already finished.

    python3 worker.py              run as a worker (started by the ferry master)
    python3 worker.py --selftest   check the encoders/decoders against ../vectors/*.hex
"""
import os
import socket
import struct
import sys

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_SIZE = 1 << 20
DEFAULT_INITIAL_WINDOW = 256 * 1024

# ------------------------------------------------------------------ encoding


def u16(n): return struct.pack(">H", n)
def u32(n): return struct.pack(">I", n)
def u64(n): return struct.pack(">Q", n)
def blob(b): return u64(len(b)) + b                      # bytes: u64 length + bytes
def text(s): return blob(s.encode("utf-8"))              # text: same, UTF-8
def headers(hs): return u64(len(hs)) + b"".join(blob(n) + blob(v) for n, v in hs)
def frame(payload): return u32(len(payload)) + payload


def hello(pid, max_in_flight=1, initial_window=DEFAULT_INITIAL_WINDOW,
          sdk_name="ferry-py", sdk_version="0.1.0"):
    return (b"\x01" + u32(PROTOCOL_VERSION) + u32(pid) + u32(max_in_flight)
            + u32(initial_window) + text(sdk_name) + text(sdk_version))


def response_inline(rid, status, hs, body):
    # BodyKind::Inline is variant 1: u32 index, then the bytes.
    return b"\x02" + u64(rid) + u16(status) + headers(hs) + u32(1) + blob(body)


def failed(rid, reason): return b"\x06" + u64(rid) + text(reason)
def pong(nonce, in_flight): return b"\x07" + u64(nonce) + u32(in_flight)
def goodbye(reason): return b"\x08" + text(reason)

# ------------------------------------------------------------------ decoding


class Reader:
    def __init__(self, b): self.b, self.i = b, 0

    def take(self, n):
        if n > len(self.b) - self.i:
            raise ValueError("payload ends early")   # never allocate a claimed length
        self.i += n
        return self.b[self.i - n:self.i]

    def u8(self): return self.take(1)[0]
    def u32(self): return struct.unpack(">I", self.take(4))[0]
    def u64(self): return struct.unpack(">Q", self.take(8))[0]
    def blob(self): return self.take(self.u64())
    def text(self): return self.blob().decode("utf-8")   # strict: bad UTF-8 raises
    def headers(self): return [(self.blob(), self.blob()) for _ in range(self.u64())]

    def body(self):
        kind = self.u32()
        if kind == 0:
            return ("empty",)
        if kind == 1:
            return ("inline", self.blob())
        if kind == 2:
            some = self.u8()
            if some > 1:
                raise ValueError("bad Option tag")
            return ("streamed", self.u64() if some else None)
        raise ValueError("unknown BodyKind %d" % kind)

    def end(self):
        if self.i != len(self.b):
            raise ValueError("trailing bytes")


HTTP_VERSIONS = ["HTTP/0.9", "HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3"]


def decode_master(p):
    """One master->worker payload (type byte first) -> (name, fields...)."""
    r = Reader(p[1:])
    t = p[0]
    if t == 0x83:                                   # BodyChunk: raw id + data
        return ("chunk", r.u64(), bytes(p[9:]))
    if t == 0x81:
        v = r.u32()                                 # version first, before anything else
        if v != PROTOCOL_VERSION:
            return ("welcome_version", v)
        m = ("welcome", v, r.u32(), r.u32(), r.u32(), r.u32())
    elif t == 0x82:
        rid, method, target, ver = r.u64(), r.text(), r.text(), r.u32()
        if ver >= len(HTTP_VERSIONS):
            raise ValueError("unknown HttpVersion %d" % ver)
        m = ("request", rid, method, target, HTTP_VERSIONS[ver], r.headers(), r.text(), r.body())
    elif t == 0x84:
        m = ("end", r.u64(), r.headers())
    elif t == 0x85:
        m = ("credit", r.u64(), r.u32())
    elif t == 0x86:
        m = ("cancel", r.u64())
    elif t == 0x87:
        m = ("ping", r.u64())
    elif t == 0x88:
        m = ("drain",)
    else:
        raise ValueError("unknown message type 0x%02x" % t)
    r.end()
    return m

# ------------------------------------------------------------------ the worker


def main():
    sock = socket.socket(fileno=int(os.environ.get("FERRY_FD", "3")))
    rf = sock.makefile("rb")
    max_frame = DEFAULT_MAX_FRAME_SIZE

    def read():
        prefix = rf.read(4)
        if len(prefix) < 4:
            sys.exit(0)                             # EOF: the master is gone
        n = struct.unpack(">I", prefix)[0]
        if n == 0 or n > max_frame:
            sys.exit("ferry-py: bad frame length %d" % n)
        payload = rf.read(n)
        if len(payload) < n:
            sys.exit(0)
        return decode_master(payload)

    def send(payload):
        if len(payload) > max_frame:
            raise ValueError("frame too large; stream the body instead")
        sock.sendall(frame(payload))

    send(hello(os.getpid()))
    w = read()
    if w[0] == "welcome_version":
        sys.exit("ferry-py: protocol version mismatch: ours %d, master's %d"
                 % (PROTOCOL_VERSION, w[1]))
    if w[0] != "welcome":
        sys.exit("ferry-py: expected Welcome, got %s" % w[0])
    max_frame = w[3]
    while True:
        m = read()
        if m[0] == "request":
            _, rid, method, target, version, hs, peer, body = m
            if method in ("GET", "HEAD"):
                text_ = "hello from pid %d: %s %s %s\n" % (os.getpid(), method, target, version)
                status = 200
            else:
                text_, status = "method not allowed\n", 405
            send(response_inline(rid, status, [(b"content-type", b"text/plain")],
                                 text_.encode()))
        elif m[0] == "ping":
            send(pong(m[1], 0))                      # nothing in flight between messages
        elif m[0] == "drain":
            send(goodbye("drained"))
            sys.exit(0)
        # chunk / end / credit / cancel: for requests already answered, ignored.

# ------------------------------------------------------------------ self-test


def selftest(vectors):
    def load(stem):
        with open(os.path.join(vectors, stem + ".hex")) as f:
            digits = "".join(line.split("#")[0] for line in f).split()
        return bytes.fromhex("".join(digits))

    def framed(stem):
        raw = load(stem)
        assert struct.unpack(">I", raw[:4])[0] == len(raw) - 4, stem
        return raw[4:]

    ok = 0

    def same(got, want, what):
        nonlocal ok
        assert got == want, "%s:\n got  %r\n want %r" % (what, got, want)
        ok += 1

    same(frame(hello(4242, 64, 65536, "ferry-worker", "0.1.0")), load("w01_hello"), "w01_hello")
    same(frame(response_inline(1, 200, [(b"content-type", b"text/plain")], b"Hello, world!\n")),
         load("w02_response_head_inline"), "w02_response_head_inline")
    same(frame(failed(6, "cancelled")), load("w06_failed"), "w06_failed")
    same(frame(pong(0x0102030405060708, 3)), load("w07_pong"), "w07_pong")
    same(frame(goodbye("max requests")), load("w08_goodbye"), "w08_goodbye")

    want = {
        "m81_welcome": ("welcome", 1, 0, 1 << 20, 64, 262144),
        "m82_request_head": ("request", 1, "GET", "/pid?x=1", "HTTP/1.1",
                             [(b"host", b"localhost"), (b"accept", b"*/*")],
                             "127.0.0.1:5000", ("empty",)),
        "m82_request_head_streamed": ("request", 2, "POST", "/echo", "HTTP/1.0", [],
                                      "[::1]:80", ("streamed", None)),
        "m83_body_chunk": ("chunk", 2, b"\x00\xff"),
        "m84_body_end": ("end", 2, []),
        "m85_credit": ("credit", 2, 1),
        "m86_cancel": ("cancel", 7),
        "m87_ping": ("ping", 99),
        "m88_drain": ("drain",),
    }
    for stem, value in want.items():
        same(decode_master(framed(stem)), value, stem)
    for bad in (b"\x87\x00", b"\x88\x00", b"\x07", b"\x82" + u64(1) + u64(1 << 62)):
        try:
            decode_master(bad)
        except (ValueError, struct.error):
            ok += 1
        else:
            raise AssertionError("decoded garbage %r" % bad)
    print("%d passed, 0 failed" % ok)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--selftest"]:
        here = os.path.dirname(os.path.abspath(__file__))
        selftest(sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "vectors"))
    else:
        main()
