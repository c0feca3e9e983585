#!/usr/bin/env python3
"""Microbenchmark of the codec's hot paths (one call each, microseconds):
decoding a RequestHead like the one a load generator's GET becomes, encoding the
whole-response frame of a hello app, body chunk headers, and frame splitting.

    python sdk/python/bench/codec_bench.py
"""
import os
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ferry_worker import codec as c  # noqa: E402

HEADERS = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]
HEAD = c.encode_request_head(1, "GET", "/", 2, HEADERS, "127.0.0.1:40000")
BROWSER = c.encode_request_head(
    1, "GET", "/api/items?page=2", 2,
    [(b"host", b"example.com"), (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"),
     (b"accept", b"text/html,application/xhtml+xml"), (b"accept-language", b"en-US,en;q=0.5"),
     (b"accept-encoding", b"gzip, deflate"), (b"cookie", b"session=0123456789abcdef"),
     (b"connection", b"keep-alive"), (b"upgrade-insecure-requests", b"1")],
    "203.0.113.9:52814")
RESP_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "14")]
BATCH = HEAD * 16


def us(fn, n=200000):
    return timeit.timeit(fn, number=n) / n * 1e6


def main():
    mv = memoryview(HEAD)
    rows = [
        ("decode RequestHead, 3 headers (bytes)", lambda: c.decode_request_head(HEAD, 5, len(HEAD))),
        ("decode RequestHead, 3 headers (memoryview)", lambda: c.decode_request_head(mv, 5, len(HEAD))),
        ("decode RequestHead, 8 browser headers", lambda: c.decode_request_head(BROWSER, 5, len(BROWSER))),
        ("encode whole response (WSGI str headers)",
         lambda: c.encode_response(1, 200, RESP_HEADERS, b"Hello, world!\n")),
        ("encode body chunk header", lambda: c.body_chunk_header(1, 65536)),
        ("encode Pong", lambda: c.encode_pong(1, 2)),
        ("split 16 frames from one read (per frame)", lambda: c.FrameSplitter().feed(BATCH)),
    ]
    for name, fn in rows:
        t = us(fn, 20000 if "split" in name else 200000)
        if "per frame" in name:
            t /= 16
        print("%-48s %6.2f us" % (name, t))


if __name__ == "__main__":
    main()
