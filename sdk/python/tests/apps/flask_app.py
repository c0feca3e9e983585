"""The Flask app the black-box tests run under ferry + ferry_worker.wsgi."""
import os
import time

from flask import Flask, Response, request

import ferry_worker

app = Flask(__name__)
MARKS = os.environ.get("FERRY_TEST_DIR", "/tmp")
BLOCK = bytes(range(256)) * 256          # 64 KiB of a known pattern


def mark(name):
    with open(os.path.join(MARKS, name), "w"):
        pass


@app.get("/hello")
def hello():
    return Response("Hello, world!\n", mimetype="text/plain")


@app.get("/pid")
def pid():
    return str(os.getpid())


@app.get("/retire")
def retire():
    ferry_worker.retire()
    return str(os.getpid())


@app.post("/echo")
def echo():
    return Response(request.get_data(), mimetype="application/octet-stream")


@app.post("/echo-stream")
def echo_stream():
    # Streams the body back as it arrives: flow control both ways at once.
    stream = request.stream

    def gen():
        while True:
            data = stream.read(65536)
            if not data:
                return
            yield data
    return Response(gen(), mimetype="application/octet-stream")


@app.get("/download")
def download():
    n = int(request.args["n"])

    def gen():
        left = n
        while left:
            k = min(left, len(BLOCK))
            yield BLOCK[:k]
            left -= k
    return Response(gen(), mimetype="application/octet-stream")


@app.get("/slow")
def slow():
    tag = request.args.get("tag")
    if tag:
        mark("started-" + tag)
    time.sleep(float(request.args.get("t", "1")))
    return "done"


@app.get("/forever")
def forever():
    tag = request.args["tag"]

    def gen():
        try:
            while True:
                yield b"x" * 1024
                time.sleep(0.02)
        finally:
            mark("closed-" + tag)
    return Response(gen(), mimetype="text/plain")


@app.get("/boom")
def boom():
    raise RuntimeError("boom for the test")


@app.get("/bigheader")
def bigheader():
    return Response("small body", headers={"x-big": "b" * int(request.args["n"])})


@app.get("/boom-midway")
def boom_midway():
    def gen():
        yield b"part"
        raise RuntimeError("boom midway for the test")
    return Response(gen(), mimetype="application/octet-stream")


@app.get("/badlength")
def badlength():
    mode = request.args["mode"]
    size, declared = {"long-small": (10, 5), "short-small": (5, 10),
                      "long-stream": (300000, 200000), "short-stream": (200000, 300000)}[mode]

    def gen():
        left = size
        while left:
            k = min(left, 50000)
            yield b"z" * k
            left -= k
    r = Response(gen(), mimetype="text/plain")
    r.headers["Content-Length"] = str(declared)
    return r


@app.get("/spawn")
def spawn():
    # A child process of the worker: it must not outlive the worker's group.
    import subprocess
    return str(subprocess.Popen(["sleep", "60"]).pid)
