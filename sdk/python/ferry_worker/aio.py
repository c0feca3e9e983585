"""One worker's life on its channel, for handlers that are coroutines on one asyncio
event loop (ASGI).

Owns: the handshake, the channel as an asyncio ``Protocol`` (every read is split into
frames and handled at once, so Ping, Credit and Cancel never wait for handlers, as
long as no handler blocks the loop), the table of requests in flight, flow control in
both directions, Drain and Goodbye. It keeps the rule of session.py, and of the Rust
SDK: every request id gets exactly one terminal message and nothing after it. Here it
is simpler to keep: everything runs on the loop's thread, so the table check and the
write cannot be interleaved.

Frames written during one pass of the loop go out in one write: under load one
syscall carries the responses of many requests.
"""
import asyncio
import functools
import logging
import os
import sys
from collections import deque

import ferry_worker

from . import channel
from . import codec
from .codec import CHUNK_MAX, STREAMED, ProtocolError
from .session import INLINE_MAX, READ_SIZE, SDK_NAME, RequestGone, __version__

log = logging.getLogger("ferry_worker")

# The name of every request's task (asyncio's repr and debug output show it).
TASK_NAME = "ferry_worker request"


class AsyncExchange:
    """One request in flight, as its coroutine sees it."""

    __slots__ = ("id", "method", "target", "version", "headers", "peer", "body",
                 "_s", "_chunks", "_ended", "_waiter", "_uncredited", "window",
                 "head_sent", "gone", "trailers", "_done")

    def __init__(self, s, head):
        self._s = s
        self.id, self.method, self.target, self.version, self.headers, self.peer, self.body = head
        self._ended = self.body[0] != STREAMED
        self._chunks = None if self._ended else deque()
        self._waiter = None          # a future the coroutine waits on (body or credit)
        self._uncredited = 0
        self.window = s.response_window
        self.head_sent = False
        self.gone = False
        self.trailers = None
        self._done = None            # resolved when the request ends (for receive())

    def _wake(self):
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    async def _wait(self):
        # One future shared by every coroutine waiting on this request (an app may
        # have a body reader and a sender waiting at once).
        w = self._waiter
        if w is None:
            w = self._waiter = self._s.loop.create_future()
        await w

    async def wait_done(self):
        """Returns once the request has ended (answered, failed or cancelled)."""
        if not self.gone:
            if self._done is None:
                self._done = self._s.loop.create_future()
            await self._done

    # ------------------------------------------------------------ request body

    async def read_body(self):
        """Everything of a streamed request body that has arrived (waiting for some),
        as bytes, or None at its end. Reading is what earns the master more credit."""
        while not self._chunks:
            if self._ended:
                return None
            if self.gone:
                raise RequestGone("the request was cancelled")
            await self._wait()
        chunks = self._chunks
        data = bytes(chunks.popleft()) if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._uncredited += len(data)
        s = self._s
        if self._uncredited >= s.credit_every and not self._ended and not self.gone:
            s.write(codec.encode_credit(self.id, self._uncredited))
            self._uncredited = 0
        return data

    # ------------------------------------------------------------ response

    def respond(self, status, headers, data=b""):
        """A whole response in one frame if it fits. Returns False if it was too big
        (the caller streams it instead) ; raises RequestGone if the request ended."""
        if self.gone:
            raise RequestGone("the request was cancelled")
        if len(data) > INLINE_MAX:
            return False
        frame = codec.encode_response(self.id, status, headers, data)
        if len(frame) - 4 > self._s.max_frame:
            return False
        self._s.finish(self, frame)
        return True

    def start(self, status, headers, length=None):
        if self.gone:
            raise RequestGone("the request was cancelled")
        frame = codec.encode_streamed_head(self.id, status, headers, length)
        if len(frame) - 4 > self._s.max_frame:
            raise ValueError("the response head does not fit in a frame")
        self.head_sent = True
        self._s.write(frame)

    async def write(self, data):
        """Body bytes in chunks within the master's window, waiting for credit."""
        s = self._s
        mv = memoryview(data)
        n, pos = len(mv), 0
        while pos < n:
            while self.window <= 0 or s.paused:
                if self.gone:
                    raise RequestGone("the request was cancelled")
                if s.paused:
                    await s.wait_resumed()
                else:
                    await self._wait()
            if self.gone:
                raise RequestGone("the request was cancelled")
            k = min(n - pos, self.window, s.chunk_max)
            self.window -= k
            s.write(codec.body_chunk_header(self.id, k))
            s.write(mv[pos:pos + k] if k < n else data)
            pos += k

    def end(self, trailers=()):
        if not self._s.finish(self, codec.encode_body_end(self.id, trailers)):
            raise RequestGone("the request was cancelled")

    def fail(self, reason):
        return self._s.finish(self, codec.encode_request_failed(self.id, reason))


class AsyncSession(asyncio.Protocol):
    """Runs ``handler(exchange)`` (a coroutine function) as a task per request. The
    handler must end the exchange (respond / end / fail) and must not raise: asgi.py's
    does both, so no wrapper coroutine is needed per request.

    ``on_drained`` (a coroutine function) runs once a drain has finished every
    request, before Goodbye: ASGI's lifespan shutdown goes there.
    """

    def __init__(self, handler, max_in_flight=1024, initial_window=codec.DEFAULT_INITIAL_WINDOW,
                 on_drained=None, sdk_name=SDK_NAME, sdk_version=__version__):
        self.handler = handler
        self.on_drained = on_drained
        self.hello = codec.encode_hello(os.getpid(), max_in_flight, initial_window,
                                        sdk_name, sdk_version)
        self.max_in_flight = max_in_flight
        self.credit_every = max(1, initial_window // 4)
        self.max_frame = codec.DEFAULT_MAX_FRAME_SIZE
        self.response_window = 0
        self.chunk_max = CHUNK_MAX
        self.worker_index = None
        self.loop = None
        self.transport = None
        self.paused = False
        self._resumed = None
        self._splitter = codec.FrameSplitter()
        self._welcomed = False
        self._table = {}
        self._out = []
        self._flush_scheduled = False
        self._started = False           # data_received started tasks
        self._draining = False
        self._closed = False
        self._saying_goodbye = False
        self._retired = None            # the last id taken, once retire() said Goodbye
        self._last_id = 0
        self._finished = None        # resolved when the session is over

    # ------------------------------------------------------------ running

    async def serve(self, sock=None):
        """Handshake, then serve until drained (returns) or the master is gone."""
        self.loop = asyncio.get_running_loop()
        self._finished = self.loop.create_future()
        ferry_worker._session = self
        sock = sock or channel.from_env()
        sock.setblocking(False)
        await self.loop.create_unix_connection(lambda: self, sock=sock)
        await self._finished

    def connection_made(self, transport):
        self.transport = transport
        # asyncio's selector transport reads up to 256 KiB at once, and a fresh
        # buffer that size is mmap'ed and munmap'ed on every read (three syscalls per
        # read: as many as the work of a small request). 64 KiB stays on the heap.
        if getattr(transport, "max_size", 0) > READ_SIZE:
            transport.max_size = READ_SIZE
        if self.loop.get_task_factory() is not None:
            task = self.loop.create_task        # the app's factory (set by its startup) wins
        else:
            # A task per request, made directly (a C call through partial): the loop's
            # create_task would name each one "Task-N", a string formatted per request
            # (1 400 of the 11 000 instructions a task costs here); they share one name.
            task = functools.partial(asyncio.Task, loop=self.loop, name=TASK_NAME)
            if sys.version_info >= (3, 12):
                # Eager tasks (3.12+): a handler runs at once, in data_received, until
                # it first waits; most answer right there, with no pass of the loop.
                task = functools.partial(task, eager_start=True)
        self._create_task = task
        transport.write(self.hello)

    def connection_lost(self, exc):
        if not self._closed:
            channel.master_gone()
        if not self._finished.done():
            self._finished.set_result(None)

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        if self._resumed is not None:
            self._resumed.set_result(None)
            self._resumed = None

    async def wait_resumed(self):
        if self._resumed is None:
            self._resumed = self.loop.create_future()
        await self._resumed

    # ------------------------------------------------------------ writing

    def write(self, data):
        if self._closed:
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
        self._out.append(data)

    def _flush(self):
        self._flush_scheduled = False
        out, self._out = self._out, []
        if out and not self.transport.is_closing():
            self.transport.writelines(out)

    def finish(self, ex, frame):
        """Writes ``ex``'s terminal message unless it already ended."""
        if self._table.pop(ex.id, None) is None:
            return False
        ex.gone = True
        self.write(frame)
        if ex._done is not None and not ex._done.done():
            ex._done.set_result(None)
        if self._draining and not self._table:
            self.loop.create_task(self._goodbye())
        return True

    def retire(self):
        """Says the retiring Goodbye (from any thread): requests after the last one
        taken go elsewhere."""
        self.loop.call_soon_threadsafe(self._retire)

    def _retire(self):
        if self._retired is not None or self._closed or self._saying_goodbye:
            return
        self._retired = self._last_id
        self.write(codec.encode_goodbye("retired", self._retired))
        self._draining = True
        if not self._table:
            self.loop.create_task(self._goodbye())

    async def _goodbye(self):
        if self._saying_goodbye:
            return
        self._saying_goodbye = True
        if self.on_drained is not None:
            try:
                await self.on_drained()
            except Exception:
                log.exception("shutdown failed")
        if self._retired is None:       # a retired worker said its Goodbye already
            self.write(codec.encode_goodbye("drained"))
        self._flush()
        self._closed = True
        self.transport.close()

    # ------------------------------------------------------------ reading

    def data_received(self, data):
        try:
            frames = self._splitter.feed(data)
            for buf, start, end in frames:
                if self._welcomed:
                    self._dispatch(buf, start, end)
                else:
                    self._welcome(buf, start, end)
        except ProtocolError as e:
            channel.fatal("bad frame from the master: %s" % e)
        if self._started and not self._flush_scheduled:
            # Queued behind the first steps of the tasks just created: what they
            # answer at once goes out in this same pass of the loop, in one write.
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
        self._started = False

    def _welcome(self, buf, start, end):
        if buf[start] != codec.WELCOME:
            channel.fatal("expected Welcome from the master, got type 0x%02x" % buf[start])
        if end - start >= 5:
            version = codec._u32_unpack(buf, start + 1)[0]
            if version != codec.PROTOCOL_VERSION:
                channel.fatal("protocol version mismatch: ours %d, the master's %d"
                              % (codec.PROTOCOL_VERSION, version))
        w = codec.decode_welcome(buf, start + 1, end)
        self.worker_index = w.worker_index
        self.max_frame = self._splitter.max_frame = w.max_frame_size
        self.response_window = w.initial_window
        self.chunk_max = max(1, min(CHUNK_MAX, w.initial_window or 1,
                                    w.max_frame_size - codec.BODY_CHUNK_OVERHEAD))
        self.max_in_flight = max(1, min(self.max_in_flight, w.max_in_flight))
        self._welcomed = True

    def _dispatch(self, buf, start, end):
        t = buf[start]
        table = self._table
        if t == codec.REQUEST_HEAD:
            head = codec.decode_request_head(buf, start + 1, end)
            if self._retired is not None and head.id > self._retired:
                return                  # sent before the master read our Goodbye
            self._last_id = head.id
            if head.id in table:
                # Its handler will answer that id: any answer to this head would be
                # a second terminal message (SPEC 6 lets us treat it as fatal).
                raise ProtocolError("a RequestHead for request %d, still in flight" % head.id)
            if len(table) >= self.max_in_flight:
                log.error("the master sent request %d over the announced limit", head.id)
                self.write(codec.encode_request_failed(head.id, "worker over its in-flight limit"))
                return
            ex = AsyncExchange(self, head)
            table[head.id] = ex
            self._create_task(self.handler(ex))
            self._started = True
        elif t == codec.M_BODY_CHUNK:
            if end - start < 9:
                raise ProtocolError("a body chunk shorter than its id")
            ex = table.get(codec._u64_unpack(buf, start + 1)[0])
            if ex is not None and not ex._ended:
                ex._chunks.append(memoryview(buf)[start + 9:end])
                ex._wake()
        elif t == codec.M_CREDIT:
            c = codec.decode_credit(buf, start + 1, end)
            ex = table.get(c.id)
            if ex is not None:
                ex.window += c.bytes
                ex._wake()
        elif t == codec.PING:
            p = codec.decode_ping(buf, start + 1, end)
            self.write(codec.encode_pong(p.nonce, len(table)))
        elif t == codec.M_BODY_END:
            e = codec.decode_body_end(buf, start + 1, end)
            ex = table.get(e.id)
            if ex is not None and not ex._ended:
                ex._ended = True
                ex.trailers = e.trailers
                ex._wake()
        elif t == codec.CANCEL:
            c = codec.decode_cancel(buf, start + 1, end)
            ex = table.get(c.id)
            if ex is not None:
                self.finish(ex, codec.encode_request_failed(c.id, "cancelled"))
                ex._wake()
        elif t == codec.DRAIN:
            codec.decode_drain(buf, start + 1, end)
            self._draining = True
            if not table:
                self.loop.create_task(self._goodbye())
        elif t == codec.WELCOME:
            log.warning("ignoring a second Welcome from the master")
        else:
            raise ProtocolError("0x%02x is not a master message type" % t)
