#!/usr/bin/env python3
"""CPU per request of one Python worker alone, driven by a fake master in this
process (no HTTP, no ferry): it keeps ``--in-flight`` hello requests in flight on the
channel and reads the worker's CPU time from /proc/PID/task/*/schedstat.

    python bench/worker_bench.py wsgi|asgi [--requests 50000] [--in-flight 16] [--profile out.prof]

``--wrap`` puts a command before the worker's (``--wrap "valgrind --tool=callgrind"``):
the difference of two such runs' instruction counts, divided by the difference of their
``--requests``, is the worker's instructions per request without its start-up, a
figure that, unlike CPU time on a shared host, repeats to within a fraction of a percent.
"""
import argparse
import os
import shlex
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ferry_worker import codec as c  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_ns(pid):
    total = 0
    for t in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
            total += int(f.read().split()[0])
    return total


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=("wsgi", "asgi"))
    p.add_argument("--requests", type=int, default=50000)
    p.add_argument("--in-flight", type=int, default=16)
    p.add_argument("--profile")
    p.add_argument("--wrap", default="", help="a command to run the worker under")
    p.add_argument("args", nargs="*")
    a, extra = p.parse_known_args()
    a.args += extra
    ours, theirs = socket.socketpair()
    app = "hello_wsgi:app" if a.kind == "wsgi" else "hello_asgi:app"
    cmd = shlex.split(a.wrap) + [sys.executable]
    if a.profile:
        cmd += ["-m", "cProfile", "-o", a.profile]
    cmd += ["-m", "ferry_worker." + a.kind, app] + a.args
    env = dict(os.environ, FERRY_FD=str(theirs.fileno()),
               PYTHONPATH=HERE + os.pathsep + os.path.dirname(HERE))
    proc = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], env=env, cwd=HERE)
    theirs.close()
    sp = c.FrameSplitter()
    frames = []
    while not frames:
        frames += sp.feed(ours.recv(65536))
    buf, s, e = frames[0]
    hello = c.decode_worker(bytes(buf[s:e]))[1]
    in_flight = min(a.in_flight, hello.max_in_flight)
    ours.sendall(c.encode_welcome(0, 1 << 20, 64, 262144))
    headers = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]
    heads = [c.encode_request_head(i, "GET", "/", 2, headers, "127.0.0.1:40000")
             for i in range(1, a.requests + 1)]
    sent = done = 0
    first = min(in_flight, a.requests)
    ours.sendall(b"".join(heads[:first]))
    sent = first
    t0, cpu0 = time.monotonic(), cpu_ns(proc.pid)
    while done < a.requests:
        data = ours.recv(1 << 20)
        n = 0
        for buf, s, e in sp.feed(data):
            if buf[s] in (c.RESPONSE_HEAD, c.REQUEST_FAILED):
                n += 1
        done += n
        more = min(n, a.requests - sent)
        if more:
            ours.sendall(b"".join(heads[sent:sent + more]))
            sent += more
    elapsed, cpu = time.monotonic() - t0, cpu_ns(proc.pid) - cpu0
    print("%s: %d requests, %d in flight, %.0f req/s, %.1f us worker CPU per request"
          % (a.kind, a.requests, in_flight, a.requests / elapsed, cpu / 1000 / a.requests))
    ours.sendall(c.encode_drain())
    proc.wait(30)


if __name__ == "__main__":
    main()
