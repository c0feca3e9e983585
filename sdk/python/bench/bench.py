#!/usr/bin/env python3
"""Hello-world benchmark of ferry + ferry_worker against Gunicorn, Granian and Uvicorn.

Each server runs the same app on 127.0.0.1 with 2 workers; wrk drives it for a fixed
time. The headline is CPU time per request of the whole server process tree: the sum
of field 1 of /proc/PID/task/*/schedstat (nanoseconds on CPU) over every process of
the tree, read before and after the run; req/s is wrk's figure.

    sdk/python/.venv/bin/python sdk/python/bench/bench.py [--duration 10] [--only NAME,...]

Needs wrk, and gunicorn, granian and uvicorn in the interpreter's environment (they
are not test dependencies: pip install gunicorn granian 'uvicorn[standard]').
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
PY = sys.executable
BIN = os.path.dirname(PY)


def ferry_bin():
    return os.environ.get("FERRY_BIN") or os.path.join(REPO, "target", "release", "ferry")


def servers(port):
    listen = "127.0.0.1:%d" % port
    ferry = [ferry_bin(), "--listen", listen, "--workers", "2", "--"]
    return {
        "ferry+wsgi": ferry + [PY, "-m", "ferry_worker.wsgi", "hello_wsgi:app"],
        "gunicorn-sync": [os.path.join(BIN, "gunicorn"), "-w", "2", "-k", "sync", "-b", listen,
                          "--log-level", "warning", "hello_wsgi:app"],
        "gunicorn-gthread": [os.path.join(BIN, "gunicorn"), "-w", "2", "-k", "gthread",
                             "--threads", "4", "-b", listen, "--log-level", "warning", "hello_wsgi:app"],
        "granian-wsgi": [os.path.join(BIN, "granian"), "--interface", "wsgi", "--workers", "2",
                         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                         "hello_wsgi:app"],
        "ferry+asgi": ferry + [PY, "-m", "ferry_worker.asgi", "hello_asgi:app", "--lifespan", "off"],
        "ferry+asgi(uvloop)": ferry + [PY, "-m", "ferry_worker.asgi", "hello_asgi:app",
                                       "--lifespan", "off", "--loop", "uvloop"],
        "uvicorn": [os.path.join(BIN, "uvicorn"), "--workers", "2", "--host", "127.0.0.1",
                    "--port", str(port), "--log-level", "warning", "--no-access-log",
                    "--lifespan", "off", "hello_asgi:app"],
    }


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(root):
    """The pids of ``root`` and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_ns(pids):
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for t in tasks:
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError):
                pass
    return total


def wait_ready(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("the server did not come up on port %d" % port)


def wrk(port, duration, conns):
    out = subprocess.run(["wrk", "-t1", "-c%d" % conns, "-d%ds" % duration,
                          "http://127.0.0.1:%d/" % port],
                         capture_output=True, text=True, check=True).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock_errors = re.search(r"Socket errors: (.*)", out)
    return reqs, out, (errors.group(1) if errors else "0"), (sock_errors.group(1) if sock_errors else "")


def run(name, cmd, port, duration, conns):
    env = dict(os.environ, PYTHONPATH=HERE)
    proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_ready(port)
        wrk(port, 2, conns)                 # warm-up
        pids = tree(proc.pid)
        before = cpu_ns(pids)
        root_before = cpu_ns([proc.pid])
        t0 = time.monotonic()
        reqs, out, non2xx, sockerr = wrk(port, duration, conns)
        elapsed = time.monotonic() - t0
        after = cpu_ns(pids)
        root = cpu_ns([proc.pid]) - root_before
        return {"name": name, "reqs": reqs, "rps": reqs / elapsed,
                "us_per_req": (after - before) / 1000 / max(reqs, 1),
                "root_us": root / 1000 / max(reqs, 1),
                "procs": len(pids), "non2xx": non2xx, "sockerr": sockerr}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--only", default="", help="comma-separated server names")
    args = p.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed (apt-get install wrk)")
    only = [n for n in args.only.split(",") if n]
    results = []
    for name in servers(0):
        if only and name not in only:
            continue
        port = free_port()
        cmd = servers(port)[name]
        if not os.path.exists(cmd[0]):
            print("skipping %s: %s not found" % (name, cmd[0]), file=sys.stderr)
            continue
        r = run(name, cmd, port, args.duration, args.connections)
        results.append(r)
        print("%-20s %9.0f req/s %8.1f us CPU/req  (of which the root process %.1f; %d procs, non-2xx %s%s)" % (
            name, r["rps"], r["us_per_req"], r["root_us"], r["procs"], r["non2xx"],
            ", socket errors " + r["sockerr"] if r["sockerr"] else ""), flush=True)
    by = {r["name"]: r for r in results}

    def ratio(a, b):
        if a in by and b in by:
            print("CPU/req %s / %s = %.2fx less" % (b, a, by[b]["us_per_req"] / by[a]["us_per_req"]))
    ratio("ferry+wsgi", "gunicorn-sync")
    ratio("ferry+wsgi", "gunicorn-gthread")
    ratio("ferry+wsgi", "granian-wsgi")
    ratio("ferry+asgi", "uvicorn")
    ratio("ferry+asgi(uvloop)", "uvicorn")


if __name__ == "__main__":
    main()
