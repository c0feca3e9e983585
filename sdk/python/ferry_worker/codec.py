"""The ferry wire protocol, version 1 (protocol/SPEC.md): encoders and decoders for
every message of both directions, and the splitting of a byte stream into frames.

This module owns the byte layout and nothing else: no sockets, no threads. It is the
only codec in the SDK (protocol/examples/worker.py uses it too), so the layout lives
in one place.

Written for speed, since it runs for every request:
- decoders read with ``struct.unpack_from`` at offsets into the received buffer (bytes
  or a memoryview of it): no payload is sliced to get at a field, and only the fields
  themselves are copied out (header names and values become ``bytes``);
- body chunk data is handed out as a ``memoryview`` of the received buffer, no copy;
- encoders return whole frames (length prefix included), built with one join.

Decoders check what SPEC.md section 4.2 requires (fields running past the end, trailing
bytes, unknown enum indices, option bytes, strict UTF-8) and raise ``ProtocolError``.
"""
import struct
from collections import namedtuple

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_SIZE = 1 << 20
DEFAULT_INITIAL_WINDOW = 256 * 1024
CHUNK_MAX = 64 * 1024
BODY_CHUNK_OVERHEAD = 9
LENGTH_PREFIX = 4

# Message types (SPEC 4.1). The high bit is the direction: set for master messages.
HELLO, RESPONSE_HEAD, W_BODY_CHUNK, W_BODY_END, W_CREDIT, REQUEST_FAILED, PONG, GOODBYE = range(1, 9)
WELCOME, REQUEST_HEAD, M_BODY_CHUNK, M_BODY_END, M_CREDIT, CANCEL, PING, DRAIN = range(0x81, 0x89)

# BodyKind variant indices (SPEC 4.3). A body is carried as a pair (kind, value):
# (EMPTY, None), (INLINE, bytes) or (STREAMED, length or None).
EMPTY, INLINE, STREAMED = 0, 1, 2
BODY_EMPTY = (EMPTY, None)

HTTP_VERSIONS = ("HTTP/0.9", "HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3")


class ProtocolError(ValueError):
    """A frame or payload that breaks SPEC.md: the channel cannot be trusted after it."""


# Worker -> master messages.
Hello = namedtuple("Hello", "protocol_version pid max_in_flight initial_window sdk_name sdk_version")
ResponseHead = namedtuple("ResponseHead", "id status headers body")
RequestFailed = namedtuple("RequestFailed", "id reason")
Pong = namedtuple("Pong", "nonce in_flight")
# last_id: only in the long form, which retires the worker (SPEC.md section 10).
Goodbye = namedtuple("Goodbye", "reason last_id", defaults=(None,))
# Both directions (the type byte says which).
BodyChunk = namedtuple("BodyChunk", "id data")
BodyEnd = namedtuple("BodyEnd", "id trailers")
Credit = namedtuple("Credit", "id bytes")
# Master -> worker messages.
Welcome = namedtuple("Welcome", "protocol_version worker_index max_frame_size max_in_flight initial_window")
RequestHead = namedtuple("RequestHead", "id method target version headers peer body")
Cancel = namedtuple("Cancel", "id")
Ping = namedtuple("Ping", "nonce")
Drain = namedtuple("Drain", "")
DRAIN_MSG = Drain()

_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")
_u64 = struct.Struct(">Q")
_u16_unpack = _u16.unpack_from
_u32_unpack = _u32.unpack_from
_u64_unpack = _u64.unpack_from
_pack_u32 = _u32.pack
_pack_u64 = _u64.pack

# Fixed-layout prefixes, packed in one call each.
_prefix_type = struct.Struct(">IB")                 # frame length, type
_prefix_type_id = struct.Struct(">IBQ")             # frame length, type, id
_head_fixed = struct.Struct(">IBQHQ")               # length, 0x02, id, status, header count
_credit = struct.Struct(">IBQI")
_pong = struct.Struct(">IBQI")
_id_u64 = struct.Struct(">BQ")
_hello_fixed = struct.Struct(">IBIIII")
_welcome = struct.Struct(">IBIIIII")
_kind_u32 = struct.Struct(">I")
_inline_kind = struct.Struct(">IQ")                 # variant 1, byte length
_streamed_some = struct.Struct(">IBQ")              # variant 2, option 1, length
_STREAMED_NONE = _kind_u32.pack(STREAMED) + b"\x00"
_EMPTY_KIND = _kind_u32.pack(EMPTY)
_NO_HEADERS = _pack_u64(0)

# ------------------------------------------------------------------ encoding


def _blob(b):
    return _pack_u64(len(b)) + b


def _text(s):
    b = s.encode("utf-8")
    return _pack_u64(len(b)) + b


def _header_parts(parts, headers):
    """Appends a list<Header> to ``parts``; returns the number of bytes appended."""
    size = 8
    parts.append(_pack_u64(len(headers)))
    for name, value in headers:
        parts.append(_pack_u64(len(name)))
        parts.append(name)
        parts.append(_pack_u64(len(value)))
        parts.append(value)
        size += 16 + len(name) + len(value)
    return size


def _frame(payload):
    return _pack_u32(len(payload)) + payload


def encode_hello(pid, max_in_flight, initial_window, sdk_name, sdk_version,
                 protocol_version=PROTOCOL_VERSION):
    rest = _text(sdk_name) + _text(sdk_version)
    return _hello_fixed.pack(17 + len(rest), HELLO, protocol_version, pid, max_in_flight,
                             initial_window) + rest


def _body_kind(body):
    kind, value = body
    if kind == EMPTY:
        return _EMPTY_KIND
    if kind == INLINE:
        return _inline_kind.pack(INLINE, len(value)) + value
    if kind == STREAMED:
        return _STREAMED_NONE if value is None else _streamed_some.pack(STREAMED, 1, value)
    raise ValueError("unknown body kind %r" % (kind,))


def encode_response_head(rid, status, headers, body=BODY_EMPTY):
    """ResponseHead; ``headers`` is a sequence of (bytes, bytes), ``body`` a (kind, value) pair."""
    parts = [None]
    size = _header_parts(parts, headers)
    del parts[1]                                    # the count goes into the fixed prefix
    kind = body[0]
    if kind == INLINE:
        data = body[1]
        parts.append(_inline_kind.pack(INLINE, len(data)))
        parts.append(data)
        tail = 12 + len(data)
    else:
        k = _body_kind(body)
        parts.append(k)
        tail = len(k)
    parts[0] = _head_fixed.pack(11 + size + tail, RESPONSE_HEAD, rid, status, len(headers))
    return b"".join(parts)


# Encoded response header fields, by the (name, value) pair the app gave. Apps send
# the same few fields again and again (content-type, server, ...): each is checked and
# laid out once. Bounded: cleared when it grows past _HEADER_CACHE_MAX entries.
_header_cache = {}
_HEADER_CACHE_MAX = 4096


def _as_bytes(x):
    if type(x) is bytes:
        return x
    if type(x) is str:
        return x.encode("latin-1")
    return bytes(x)


def header_field(pair):
    """One response header field as laid out in a list<Header>. The name is
    lowercased; str is taken as latin-1 (WSGI). CR, LF or NUL raise ValueError (SPEC
    4.3: a worker MUST NOT send them)."""
    name, value = pair
    name, value = _as_bytes(name).lower(), _as_bytes(value)
    if b"\r" in value or b"\n" in value or b"\0" in value or b"\r" in name \
            or b"\n" in name or b"\0" in name or not name:
        raise ValueError("invalid response header %r: empty, or contains CR, LF or NUL" % (pair,))
    return _pack_u64(len(name)) + name + _pack_u64(len(value)) + value


def _fields(parts, headers):
    cache = _header_cache
    size = 0
    for h in headers:
        try:
            e = cache[h]
        except KeyError:
            e = header_field(h)
            if len(cache) >= _HEADER_CACHE_MAX:
                cache.clear()
            cache[h] = e
        except TypeError:                       # an unhashable pair, e.g. a list
            e = header_field(h)
        parts.append(e)
        size += len(e)
    return size


def encode_response(rid, status, headers, data=b""):
    """A whole response in one frame: ResponseHead with an Empty body if ``data`` is
    empty, else Inline. ``headers``: (name, value) pairs of bytes or str (latin-1),
    normalised as ``header_field`` says. The caller checks the frame against the
    frame limit (and streams a large body instead)."""
    parts = [None]
    size = _fields(parts, headers)
    n = len(data)
    if n:
        parts.append(_inline_kind.pack(INLINE, n))
        parts.append(data)
        parts[0] = _head_fixed.pack(31 + size + n, RESPONSE_HEAD, rid, status, len(headers))
    else:
        parts.append(_EMPTY_KIND)
        parts[0] = _head_fixed.pack(23 + size, RESPONSE_HEAD, rid, status, len(headers))
    return b"".join(parts)


def encode_streamed_head(rid, status, headers, length=None):
    """ResponseHead with a Streamed body (of ``length`` bytes if known); headers as in
    ``encode_response``."""
    parts = [None]
    size = _fields(parts, headers)
    kind = _STREAMED_NONE if length is None else _streamed_some.pack(STREAMED, 1, length)
    parts.append(kind)
    parts[0] = _head_fixed.pack(19 + size + len(kind), RESPONSE_HEAD, rid, status, len(headers))
    return b"".join(parts)


def encode_inline_response(rid, status, headers, data):
    """ResponseHead with an Inline body (even an empty one)."""
    parts = [None]
    size = _fields(parts, headers)
    parts.append(_inline_kind.pack(INLINE, len(data)))
    parts.append(data)
    parts[0] = _head_fixed.pack(31 + size + len(data), RESPONSE_HEAD, rid, status, len(headers))
    return b"".join(parts)


def body_chunk_header(rid, n, worker=True):
    """The 13 bytes before the data of a BodyChunk frame carrying ``n`` data bytes:
    send them together with the data (e.g. ``sendmsg``) so the data is not copied."""
    return _prefix_type_id.pack(9 + n, W_BODY_CHUNK if worker else M_BODY_CHUNK, rid)


def encode_body_chunk(rid, data, worker=True):
    return body_chunk_header(rid, len(data), worker) + bytes(data)


def encode_body_end(rid, trailers=(), worker=True):
    t = W_BODY_END if worker else M_BODY_END
    if not trailers:
        return _prefix_type_id.pack(17, t, rid) + _NO_HEADERS
    parts = []
    size = _header_parts(parts, trailers)
    return _prefix_type_id.pack(9 + size, t, rid) + b"".join(parts)


def encode_credit(rid, n, worker=True):
    return _credit.pack(13, W_CREDIT if worker else M_CREDIT, rid, n)


def encode_request_failed(rid, reason):
    r = _text(reason)
    return _prefix_type_id.pack(9 + len(r), REQUEST_FAILED, rid) + r


def encode_pong(nonce, in_flight):
    return _pong.pack(13, PONG, nonce, in_flight)


def encode_goodbye(reason, last_id=None):
    r = _text(reason)
    if last_id is None:
        return _prefix_type.pack(1 + len(r), GOODBYE) + r
    return _prefix_type.pack(9 + len(r), GOODBYE) + r + _pack_u64(last_id)


# Master messages: the SDK never sends them, but tests (and fake masters) do.

def encode_welcome(worker_index=0, max_frame_size=DEFAULT_MAX_FRAME_SIZE, max_in_flight=64,
                   initial_window=DEFAULT_INITIAL_WINDOW, protocol_version=PROTOCOL_VERSION):
    return _welcome.pack(21, WELCOME, protocol_version, worker_index, max_frame_size,
                         max_in_flight, initial_window)


def encode_request_head(rid, method, target, version, headers, peer, body=BODY_EMPTY):
    """``version`` is an index into HTTP_VERSIONS (2 = HTTP/1.1)."""
    parts = [_id_u64.pack(REQUEST_HEAD, rid), _text(method), _text(target),
             _kind_u32.pack(version)]
    _header_parts(parts, headers)
    parts.append(_text(peer))
    parts.append(_body_kind(body))
    return _frame(b"".join(parts))


def encode_cancel(rid):
    return _prefix_type_id.pack(9, CANCEL, rid)


def encode_ping(nonce):
    return _prefix_type_id.pack(9, PING, nonce)


def encode_drain():
    return b"\x00\x00\x00\x01\x88"


def encode(msg, worker=None):
    """Any message namedtuple to its frame. ``worker`` picks the direction of the
    messages both sides send (BodyChunk, BodyEnd, Credit); it is required for them."""
    t = type(msg)
    if t in _BOTH:
        if worker is None:
            raise ValueError("%s exists in both directions: pass worker=True/False" % t.__name__)
        return _BOTH[t](*msg, worker=worker)
    return _ENCODERS[t](*msg)


_ENCODERS = {
    Hello: lambda v, pid, mif, win, name, ver: encode_hello(pid, mif, win, name, ver, v),
    ResponseHead: encode_response_head,
    RequestFailed: encode_request_failed,
    Pong: encode_pong,
    Goodbye: encode_goodbye,
    Welcome: lambda v, idx, mfs, mif, win: encode_welcome(idx, mfs, mif, win, v),
    RequestHead: encode_request_head,
    Cancel: encode_cancel,
    Ping: encode_ping,
    Drain: encode_drain,
}
_BOTH = {BodyChunk: encode_body_chunk, BodyEnd: encode_body_end, Credit: encode_credit}

# ------------------------------------------------------------------ decoding
#
# Every decoder takes (buf, pos, end): the payload is buf[pos:end], pos at the first
# byte after the type byte. ``buf`` is bytes or a memoryview; nothing is sliced until a
# field's own value is taken out.


def _short(what="field"):
    return ProtocolError("a %s runs past the end of the frame" % what)


def _trailing(pos, end):
    if pos != end:
        raise ProtocolError("%d trailing bytes after the message" % (end - pos))


def _take_bytes(buf, pos, end):
    if pos + 8 > end:
        raise _short()
    n = _u64_unpack(buf, pos)[0]
    pos += 8
    if n > end - pos:                               # checked before anything is taken
        raise _short("byte string")
    return bytes(buf[pos:pos + n]), pos + n


def _take_text(buf, pos, end):
    if pos + 8 > end:
        raise _short()
    n = _u64_unpack(buf, pos)[0]
    pos += 8
    if n > end - pos:
        raise _short("text")
    try:
        return str(buf[pos:pos + n], "utf-8"), pos + n
    except UnicodeDecodeError:
        raise ProtocolError("invalid UTF-8 in a text field") from None


def _take_headers(buf, pos, end):
    if pos + 8 > end:
        raise _short()
    count = _u64_unpack(buf, pos)[0]
    pos += 8
    # Each header takes at least 16 bytes: a count that cannot fit is refused at once,
    # rather than looped over.
    if count > (end - pos) >> 4:
        raise _short("header list")
    headers = []
    append = headers.append
    for _ in range(count):
        if pos + 8 > end:
            raise _short("header")
        n = _u64_unpack(buf, pos)[0]
        pos += 8
        if n > end - pos - 8:
            raise _short("header name")
        name = buf[pos:pos + n]
        pos += n
        m = _u64_unpack(buf, pos)[0]
        pos += 8
        if m > end - pos:
            raise _short("header value")
        append((bytes(name), bytes(buf[pos:pos + m])))
        pos += m
    return headers, pos


def _take_body_kind(buf, pos, end):
    if pos + 4 > end:
        raise _short()
    kind = _u32_unpack(buf, pos)[0]
    pos += 4
    if kind == EMPTY:
        return BODY_EMPTY, pos
    if kind == INLINE:
        data, pos = _take_bytes(buf, pos, end)
        return (INLINE, data), pos
    if kind == STREAMED:
        if pos >= end:
            raise _short()
        some = buf[pos]
        pos += 1
        if some == 0:
            return (STREAMED, None), pos
        if some != 1:
            raise ProtocolError("option byte %d is neither 0 nor 1" % some)
        if pos + 8 > end:
            raise _short()
        return (STREAMED, _u64_unpack(buf, pos)[0]), pos + 8
    raise ProtocolError("unknown BodyKind index %d" % kind)


def _fixed(fmt, make):
    s = struct.Struct(">" + fmt)
    size, unpack = s.size, s.unpack_from

    def decode(buf, pos, end):
        if end - pos != size:
            if end - pos < size:
                raise _short()
            _trailing(pos + size, end)
        return make(*unpack(buf, pos))
    return decode


_tuple_new = tuple.__new__
_u64_u64 = struct.Struct(">QQ").unpack_from


# RequestHead's fields are length-prefixed and each is followed by another length (or
# the version and header count): one struct call takes a field and what follows it,
# where a slice and an unpack took two (each call costs the interpreter more than the
# bytes it moves). One unpacker per length below _SMALL, made at import (0.6 ms,
# about 220 KB for the three tables); a longer field sends its head the plain way.
_SMALL = 256
_STR_U64 = tuple(struct.Struct(">%dsQ" % n).unpack_from for n in range(_SMALL))
_STR_U32_U64_U64 = tuple(struct.Struct(">%dsIQQ" % n).unpack_from for n in range(_SMALL))
_STR_U32 = tuple(struct.Struct(">%dsI" % n).unpack_from for n in range(_SMALL))


class _Slow(Exception):
    """The fast path leaves this head to the plain decoder."""


_SLOW = _Slow()


def decode_request_head(buf, pos, end):
    """The hot decoder (one per request). Its fast path takes a head whose fields are
    all shorter than _SMALL bytes, with one struct call per field; any other head, and
    every malformed one, goes to _decode_request_head, whose checks and errors are
    the codec's. Every length is checked against ``end`` before it is used: ``buf``
    holds the frames after this one too."""
    if type(buf) is not bytes:
        # A head is small and all of it is copied into fields anyway; bytes slices
        # decode fastest. (Body chunks, the large frames, stay zero-copy.)
        buf, end, pos = bytes(buf[pos:end]), end - pos, 0
    try:
        if pos + 16 > end:
            raise _SLOW
        rid, n = _u64_u64(buf, pos)
        p = pos + 16
        if n >= _SMALL or n + 8 > end - p:
            raise _SLOW
        method, m = _STR_U64[n](buf, p)
        p += n + 8
        if m >= _SMALL or m + 20 > end - p:
            raise _SLOW
        target, version, count, n = _STR_U32_U64_U64[m](buf, p)
        p += m + 20
        # Each header takes at least 16 bytes: a count that cannot fit is not looped over.
        if version > 4 or count > (end - p) >> 4:
            raise _SLOW
        headers = []
        append = headers.append
        for _ in range(count):
            # p: the header's name, n: its length.
            if n >= _SMALL or n + 8 > end - p:
                raise _SLOW
            name, m = _STR_U64[n](buf, p)
            p += n + 8
            if m >= _SMALL or m + 8 > end - p:
                raise _SLOW
            value, n = _STR_U64[m](buf, p)
            p += m + 8
            append((name, value))
        # p: the peer, n: its length.
        if n >= _SMALL or n + 4 > end - p:
            raise _SLOW
        peer, kind = _STR_U32[n](buf, p)
        p += n + 4
        if kind == EMPTY and p == end:
            body = BODY_EMPTY                   # the usual case, without a call
        else:
            body, p = _take_body_kind(buf, p - 4, end)
            _trailing(p, end)
        return _tuple_new(RequestHead, (rid, method.decode(), target.decode(), version,
                                        headers, peer.decode(), body))
    except (_Slow, UnicodeDecodeError):
        return _decode_request_head(buf, pos, end)


def _decode_request_head(buf, pos, end):
    """The plain decoder: any RequestHead, field by field."""
    if pos + 8 > end:
        raise _short()
    rid = _u64_unpack(buf, pos)[0]
    method, p = _take_text(buf, pos + 8, end)
    target, p = _take_text(buf, p, end)
    if p + 4 > end:
        raise _short()
    version = _u32_unpack(buf, p)[0]
    if version > 4:
        raise ProtocolError("unknown HttpVersion index %d" % version)
    headers, p = _take_headers(buf, p + 4, end)
    peer, p = _take_text(buf, p, end)
    body, p = _take_body_kind(buf, p, end)
    _trailing(p, end)
    return RequestHead(rid, method, target, version, headers, peer, body)


def decode_response_head(buf, pos, end):
    if pos + 10 > end:
        raise _short()
    rid, status = _u64_unpack(buf, pos)[0], _u16_unpack(buf, pos + 8)[0]
    headers, pos = _take_headers(buf, pos + 10, end)
    body, pos = _take_body_kind(buf, pos, end)
    _trailing(pos, end)
    return ResponseHead(rid, status, headers, body)


def decode_body_chunk(buf, pos, end):
    """The data is a memoryview of ``buf``: valid as long as ``buf`` is not reused."""
    if pos + 8 > end:
        raise _short()
    data = buf[pos + 8:end]
    return BodyChunk(_u64_unpack(buf, pos)[0], data if type(data) is memoryview else memoryview(data))


def decode_body_end(buf, pos, end):
    if pos + 8 > end:
        raise _short()
    trailers, p = _take_headers(buf, pos + 8, end)
    _trailing(p, end)
    return BodyEnd(_u64_unpack(buf, pos)[0], trailers)


def decode_hello(buf, pos, end):
    if pos + 16 > end:
        raise _short()
    v, pid, mif, win = struct.unpack_from(">IIII", buf, pos)
    name, pos = _take_text(buf, pos + 16, end)
    ver, pos = _take_text(buf, pos, end)
    _trailing(pos, end)
    return Hello(v, pid, mif, win, name, ver)


def decode_request_failed(buf, pos, end):
    if pos + 8 > end:
        raise _short()
    reason, p = _take_text(buf, pos + 8, end)
    _trailing(p, end)
    return RequestFailed(_u64_unpack(buf, pos)[0], reason)


def decode_goodbye(buf, pos, end):
    reason, p = _take_text(buf, pos, end)
    if end - p == 8:
        return Goodbye(reason, _u64_unpack(buf, p)[0])
    _trailing(p, end)
    return Goodbye(reason)


def decode_drain(buf, pos, end):
    _trailing(pos, end)
    return DRAIN_MSG


decode_welcome = _fixed("IIIII", Welcome)
decode_credit = _fixed("QI", Credit)
decode_cancel = _fixed("Q", Cancel)
decode_ping = _fixed("Q", Ping)
decode_pong = _fixed("QI", Pong)

MASTER_DECODERS = {
    WELCOME: decode_welcome, REQUEST_HEAD: decode_request_head, M_BODY_CHUNK: decode_body_chunk,
    M_BODY_END: decode_body_end, M_CREDIT: decode_credit, CANCEL: decode_cancel,
    PING: decode_ping, DRAIN: decode_drain,
}
WORKER_DECODERS = {
    HELLO: decode_hello, RESPONSE_HEAD: decode_response_head, W_BODY_CHUNK: decode_body_chunk,
    W_BODY_END: decode_body_end, W_CREDIT: decode_credit, REQUEST_FAILED: decode_request_failed,
    PONG: decode_pong, GOODBYE: decode_goodbye,
}


def decode_master(payload):
    """One master -> worker payload (type byte first) to (type, message)."""
    return _decode(MASTER_DECODERS, payload, "master")


def decode_worker(payload):
    """One worker -> master payload (type byte first) to (type, message)."""
    return _decode(WORKER_DECODERS, payload, "worker")


def _decode(table, payload, side):
    if not payload:
        raise ProtocolError("empty payload")
    t = payload[0]
    dec = table.get(t)
    if dec is None:
        raise ProtocolError("0x%02x is not a %s message type" % (t, side))
    return t, dec(payload, 1, len(payload))


# ------------------------------------------------------------------ framing


class FrameSplitter:
    """Cuts a byte stream into payloads. ``feed(data)`` returns a list of
    (buf, start, end) triples, one per complete frame (the type byte is buf[start]);
    a partial frame is kept for the next feed. Reassembly copies only the bytes of a
    frame that was split across reads.

    The length prefix is checked before anything is buffered for the payload: a zero
    or over-limit length raises ProtocolError (SPEC section 3).
    """

    __slots__ = ("max_frame", "_rest")

    def __init__(self, max_frame=DEFAULT_MAX_FRAME_SIZE):
        self.max_frame = max_frame
        self._rest = b""

    def pending(self):
        """Bytes still needed to complete the frame in progress (0: none in progress,
        or its length prefix is not complete yet)."""
        rest = self._rest
        if len(rest) < 4:
            return 0
        return 4 + _u32_unpack(rest, 0)[0] - len(rest)

    def feed(self, data):
        if self._rest:
            data = self._rest + data
            self._rest = b""
        frames = []
        pos, size, limit = 0, len(data), self.max_frame
        while size - pos >= 4:
            n = _u32_unpack(data, pos)[0]
            if n == 0 or n > limit:
                raise ProtocolError("frame length %d is %s" % (
                    n, "zero" if n == 0 else "over the limit of %d" % limit))
            if pos + 4 + n > size:
                break
            frames.append((data, pos + 4, pos + 4 + n))
            pos += 4 + n
        if pos < size:
            self._rest = data[pos:] if pos else data
        return frames
