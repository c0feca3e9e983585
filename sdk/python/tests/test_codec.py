"""The codec against protocol/vectors/*.hex, both ways: every vector decodes to the
message its comment names, and that message encodes back to the same bytes."""
import os
import struct

import pytest

from conftest import VECTORS
from ferry_worker import codec as c


def load(stem):
    with open(os.path.join(VECTORS, stem + ".hex")) as f:
        digits = "".join(line.split("#")[0] for line in f).split()
    return bytes.fromhex("".join(digits))


# Each vector file, the side that sends it, and the message it holds (as its comment says).
EXPECTED = {
    "m81_welcome": ("master", c.Welcome(1, 0, 1048576, 64, 262144)),
    "m82_request_head": ("master", c.RequestHead(
        1, "GET", "/pid?x=1", 2, [(b"host", b"localhost"), (b"accept", b"*/*")],
        "127.0.0.1:5000", (c.EMPTY, None))),
    "m82_request_head_streamed": ("master", c.RequestHead(
        2, "POST", "/echo", 1, [], "[::1]:80", (c.STREAMED, None))),
    "m83_body_chunk": ("master", c.BodyChunk(2, b"\x00\xff")),
    "m84_body_end": ("master", c.BodyEnd(2, [])),
    "m85_credit": ("master", c.Credit(2, 1)),
    "m86_cancel": ("master", c.Cancel(7)),
    "m87_ping": ("master", c.Ping(99)),
    "m88_drain": ("master", c.Drain()),
    "w01_hello": ("worker", c.Hello(1, 4242, 64, 65536, "ferry-worker", "0.1.0")),
    "w02_response_head_empty": ("worker", c.ResponseHead(
        3, 204, [(b"x-a", b"1"), (b"x-a", b"2")], (c.EMPTY, None))),
    "w02_response_head_inline": ("worker", c.ResponseHead(
        1, 200, [(b"content-type", b"text/plain")], (c.INLINE, b"Hello, world!\n"))),
    "w02_response_head_streamed": ("worker", c.ResponseHead(2, 200, [], (c.STREAMED, 1000))),
    "w03_body_chunk": ("worker", c.BodyChunk(2, b"abc")),
    "w04_body_end": ("worker", c.BodyEnd(2, [(b"x-checksum", b"9")])),
    "w05_credit": ("worker", c.Credit(5, 65536)),
    "w06_failed": ("worker", c.RequestFailed(6, "cancelled")),
    "w07_pong": ("worker", c.Pong(0x0102030405060708, 3)),
    "w08_goodbye": ("worker", c.Goodbye("max requests")),
    "w08_goodbye_retire": ("worker", c.Goodbye("retired", 7)),
}


def test_every_vector_is_covered():
    stems = sorted(f[:-4] for f in os.listdir(VECTORS) if f.endswith(".hex"))
    assert stems == sorted(EXPECTED)


def normalise(msg):
    # Body chunk data decodes as a memoryview (no copy); compare its bytes.
    if isinstance(msg, c.BodyChunk):
        return c.BodyChunk(msg.id, bytes(msg.data))
    return msg


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_decode(stem):
    side, want = EXPECTED[stem]
    raw = load(stem)
    assert struct.unpack(">I", raw[:4])[0] == len(raw) - 4
    frames = c.FrameSplitter().feed(raw)
    assert len(frames) == 1
    buf, start, end = frames[0]
    decode = c.decode_master if side == "master" else c.decode_worker
    t, msg = decode(buf[start:end])
    assert t == buf[start]
    assert normalise(msg) == want
    # And through the offset API on a memoryview, as the sessions call it.
    table = c.MASTER_DECODERS if side == "master" else c.WORKER_DECODERS
    assert normalise(table[t](memoryview(raw), 5, len(raw))) == want


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_encode(stem):
    side, msg = EXPECTED[stem]
    assert c.encode(msg, worker=(side == "worker")) == load(stem)


def test_fast_encoders_match():
    assert c.encode_inline_response(1, 200, [(b"content-type", b"text/plain")],
                                    b"Hello, world!\n") == load("w02_response_head_inline")
    hdr = c.body_chunk_header(2, 3)
    assert hdr + b"abc" == load("w03_body_chunk")
    assert c.encode_body_end(2, (), worker=False) == load("m84_body_end")


def test_splitter_reassembles_any_split():
    stream = b"".join(load(s) for s in sorted(EXPECTED) if s.startswith("m"))
    whole = [bytes(b[s:e]) for b, s, e in c.FrameSplitter().feed(stream)]
    assert len(whole) == 9
    for step in (1, 2, 3, 7, 13, 64):
        sp, got = c.FrameSplitter(), []
        for i in range(0, len(stream), step):
            got += [bytes(b[s:e]) for b, s, e in sp.feed(stream[i:i + step])]
        assert got == whole


@pytest.mark.parametrize("prefix", [b"\x00\x00\x00\x00", b"\x00\x10\x00\x01"])
def test_splitter_refuses_zero_and_oversized_lengths(prefix):
    with pytest.raises(c.ProtocolError):
        c.FrameSplitter().feed(prefix + b"\x87")


GARBAGE = {
    "truncated ping": b"\x87\x00",
    "drain with a field": b"\x88\x00",
    "unknown type": b"\x99",
    "worker type from the master": b"\x07" + bytes(12),
    "length past the end": b"\x82" + struct.pack(">QQ", 1, 1 << 62),
    "bad utf-8": b"\x82" + struct.pack(">QQ", 1, 1) + b"\xff",
    "trailing bytes": load("m86_cancel")[4:] + b"\x00",
    "unknown http version": load("m82_request_head")[4:][:1 + 8 + 11 + 16] + b"\x00\x00\x00\x09",
    "unknown body kind": load("m82_request_head")[4:-4] + b"\x00\x00\x00\x03",
    "bad option byte": load("m82_request_head_streamed")[4:-1] + b"\x02",
    "header count too big": b"\x84" + struct.pack(">QQ", 2, 1 << 40),
    "empty payload": b"",
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_is_refused(name):
    with pytest.raises(c.ProtocolError):
        c.decode_master(GARBAGE[name])


def test_every_truncation_of_every_vector_is_refused():
    for stem, (side, _) in EXPECTED.items():
        payload = load(stem)[4:]
        decode = c.decode_master if side == "master" else c.decode_worker
        for n in range(len(payload)):
            if stem.endswith("body_chunk") and n >= 9:
                continue                # a chunk's data may be any length
            if stem == "w08_goodbye_retire" and n == len(payload) - 8:
                assert decode(payload[:n])[1] == c.Goodbye("retired")
                continue                # the short form: last_id is optional
            with pytest.raises(c.ProtocolError):
                decode(payload[:n])


# decode_request_head has a fast path (every field shorter than codec._SMALL bytes) and
# a plain one (_decode_request_head) for the rest: they must agree on every head, and
# the fast path must hand every malformed head to the plain one's errors.

def _random_head(rng):
    def text(limit):
        return "".join(rng.choice("abcz/%?=é") for _ in range(rng.randrange(limit)))

    def raw(limit):
        return bytes(rng.randrange(256) for _ in range(rng.randrange(limit)))

    big = c._SMALL + 8
    limit = rng.choice((4, 40, big))
    headers = [(raw(limit).lower() or b"x", raw(limit)) for _ in range(rng.randrange(12))]
    body = rng.choice([(c.EMPTY, None), (c.INLINE, raw(limit)), (c.STREAMED, None),
                       (c.STREAMED, rng.randrange(1 << 40))])
    return c.RequestHead(rng.randrange(1 << 64), text(12) or "GET", text(limit) or "/",
                         rng.randrange(5), headers, text(limit) or "p", body)


def _outcome(decode, payload):
    try:
        return decode(payload, 1, len(payload))
    except c.ProtocolError:
        return "refused"


def test_request_head_fast_and_plain_decoders_agree():
    import random
    rng = random.Random(7)
    fast_taken = 0
    for _ in range(400):
        head = _random_head(rng)
        payload = c.encode(head, worker=False)[4:]
        assert c.decode_request_head(payload, 1, len(payload)) == head
        assert c._decode_request_head(payload, 1, len(payload)) == head
        fast_taken += all(len(f) < c._SMALL for f in
                          [head.method.encode(), head.target.encode(), head.peer.encode()]
                          + [x for h in head.headers for x in h])
        # Inside a larger buffer (as frames arrive: the next frame follows), and as a
        # memoryview.
        framed = b"\x00" + payload + bytes(64)
        assert c.decode_request_head(framed, 2, 1 + len(payload)) == head
        assert c.decode_request_head(memoryview(framed), 2, 1 + len(payload)) == head
        # Any byte changed, any truncation: the same answer from both, or a refusal.
        for _ in range(20):
            i = rng.randrange(1, len(payload))
            bad = bytearray(payload)
            bad[i] = rng.randrange(256)
            bad = bytes(bad)
            assert _outcome(c.decode_request_head, bad) == _outcome(c._decode_request_head, bad)
            cut = payload[:rng.randrange(1, len(payload))]
            assert _outcome(c.decode_request_head, cut) == "refused"
    assert 50 < fast_taken < 350                    # both paths were exercised


def test_request_head_with_long_fields_round_trips():
    long = "/" + "a" * (3 * c._SMALL)
    head = c.RequestHead(9, "PATCH", long, 2, [(b"cookie", b"c" * 5000), (b"x", b"")],
                         "[::1]:1", (c.INLINE, b"body"))
    payload = c.encode(head, worker=False)[4:]
    assert c.decode_request_head(payload, 1, len(payload)) == head
    for n in range(len(payload)):
        with pytest.raises(c.ProtocolError):
            c.decode_request_head(payload[:n], 1, n)
