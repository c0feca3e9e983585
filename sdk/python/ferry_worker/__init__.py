"""ferry_worker: write ferry workers in Python (protocol/SPEC.md).

Modules, one job each:
- ``codec``: the wire format, every message both ways, and frame splitting;
- ``channel``: the FERRY_FD socket, SIGTERM and the group kill on EOF;
- ``session``: the threaded session (handshake, reader loop, flow control, Cancel,
  Drain, Goodbye) that runs handlers on a thread pool;
- ``wsgi``: PEP 3333 on top of ``session`` (``python -m ferry_worker.wsgi app:app``);
- ``aio``: the same session for asyncio, one event loop for many requests;
- ``asgi``: ASGI 3 on top of ``aio`` (``python -m ferry_worker.asgi app:app``);
- ``loader``: importing ``module:attribute`` application paths.
"""
__version__ = "0.1.0"

# The session running in this process (threaded or asyncio), set when it starts.
_session = None


def retire():
    """Asks the master to retire this worker (SPEC.md section 10): it is sent no new
    requests, finishes those it has, then exits, while the master starts its
    replacement; requests already on their way run on another worker, never lost.
    For a worker that knows it should go (grown too big, holding a stale resource).
    Safe from any thread, more than once; does nothing outside a ferry worker."""
    s = _session
    if s is not None:
        s.retire()
