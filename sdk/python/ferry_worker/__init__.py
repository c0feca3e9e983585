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
