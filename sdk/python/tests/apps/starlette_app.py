"""The Starlette app the black-box tests run under ferry + ferry_worker.asgi."""
import asyncio
import contextlib
import os

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

import ferry_worker

MARKS = os.environ.get("FERRY_TEST_DIR", "/tmp")
BLOCK = bytes(range(256)) * 256


def mark(name):
    with open(os.path.join(MARKS, name), "w"):
        pass


async def hello(request):
    return PlainTextResponse("Hello, world!\n")


async def pid(request):
    return PlainTextResponse(str(os.getpid()))


async def retire(request):
    ferry_worker.retire()
    return PlainTextResponse(str(os.getpid()))


async def echo(request):
    return Response(await request.body(), media_type="application/octet-stream")


async def echo_stream(request):
    return StreamingResponse(request.stream(), media_type="application/octet-stream")


async def download(request):
    n = int(request.query_params["n"])

    async def gen():
        left = n
        while left:
            k = min(left, len(BLOCK))
            yield BLOCK[:k]
            left -= k
    return StreamingResponse(gen(), media_type="application/octet-stream")


async def slow(request):
    tag = request.query_params.get("tag")
    if tag:
        mark("started-" + tag)
    await asyncio.sleep(float(request.query_params.get("t", "1")))
    return PlainTextResponse("done")


async def forever(request):
    tag = request.query_params["tag"]

    async def gen():
        try:
            while True:
                yield b"x" * 1024
                await asyncio.sleep(0.02)
        finally:
            mark("closed-" + tag)
    return StreamingResponse(gen(), media_type="text/plain")


async def boom(request):
    raise RuntimeError("boom for the test")


async def bigheader(request):
    return PlainTextResponse("small body", headers={"x-big": "b" * int(request.query_params["n"])})


async def boom_midway(request):
    async def gen():
        yield b"part"
        raise RuntimeError("boom midway for the test")
    return StreamingResponse(gen(), media_type="application/octet-stream")


async def badlength(request):
    mode = request.query_params["mode"]
    size, declared = {"long-small": (10, 5), "short-small": (5, 10),
                      "long-stream": (300000, 200000), "short-stream": (200000, 300000)}[mode]

    async def gen():
        left = size
        while left:
            k = min(left, 50000)
            yield b"z" * k
            left -= k
    return StreamingResponse(gen(), headers={"content-length": str(declared)})


async def spawn(request):
    import subprocess
    return PlainTextResponse(str(subprocess.Popen(["sleep", "60"]).pid))


@contextlib.asynccontextmanager
async def lifespan(app):
    mark("lifespan-startup-%d" % os.getpid())
    yield
    mark("lifespan-shutdown-%d" % os.getpid())


app = Starlette(lifespan=lifespan, routes=[
    Route("/hello", hello), Route("/pid", pid), Route("/retire", retire),
    Route("/echo", echo, methods=["POST"]), Route("/echo-stream", echo_stream, methods=["POST"]),
    Route("/download", download), Route("/slow", slow), Route("/forever", forever),
    Route("/boom", boom), Route("/boom-midway", boom_midway), Route("/bigheader", bigheader), Route("/badlength", badlength), Route("/spawn", spawn),
])
