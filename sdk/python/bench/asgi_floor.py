#!/usr/bin/env python3
"""The least any ASGI server on uvloop does per request, with no I/O and no protocol:
a task per request, a scope, a ``receive`` and a ``send`` closure, and the hello app's
two ``send`` calls, 16 requests per pass of the loop (as worker_bench.py keeps in
flight). A floor to hold ferry_worker.asgi's cost against (its channel, the head's
decode and the response's encoding are on top of this):

    for n in 1000 5000; do
        valgrind --tool=callgrind --callgrind-out-file=/tmp/floor.$n python bench/asgi_floor.py $n
    done

and the difference of the two ``summary:`` lines over 4000 is the instructions per
request (about 25 400 with Python 3.11 and uvloop 0.23).
"""
import asyncio
import sys

import uvloop

START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"text/plain"), (b"content-length", b"14")]}
END = {"type": "http.response.body", "body": b"Hello, world!\n"}


async def app(scope, receive, send):
    await send(START)
    await send(END)


def call(sent):
    scope = {"type": "http", "asgi": None, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"",
             "root_path": "", "headers": [], "client": None, "server": None}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    return app(scope, receive, send)


async def one_pass():
    pass


def main():
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    loop = uvloop.new_event_loop()
    sent = []
    for _ in range(requests // 16):
        for _ in range(16):
            loop.create_task(call(sent))
        loop.run_until_complete(one_pass())
        assert len(sent) == 32
        sent.clear()
    loop.close()


if __name__ == "__main__":
    main()
