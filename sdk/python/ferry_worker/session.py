"""One worker's life on its channel, for handlers that run on threads (WSGI).

Owns: the handshake, the threads that read the channel and run handlers (see
"threads" below: Ping, Credit, Cancel and Drain are answered whatever the handlers
are doing), and the table of requests in flight with their flow-control state. It is
the Python counterpart of crates/ferry-worker/src/session.rs and keeps its one rule:

    every request id gets exactly one terminal message, and nothing after it.

Frames for an id are written only while the id is in the table, checked under the
session lock, and whoever removes the id (the handler finishing, or a Cancel arriving)
writes the terminal message inside the same critical section. Writes happen under that
lock too, so frames of different requests never interleave.

Under load, answers go out in batches, as aio.py's do: a handler's terminal frame (or
streamed head) waits in ``_out`` while more requests are queued to run, and goes out
with the others when the queue empties, in one write instead of one each (each write
wakes the master: a tenth less CPU per hello request for the whole tree). Any
other write (Pong, Credit, a body chunk, Goodbye) and any wait on the master sends
what waits first, and the watchdog sends it every TICK, so an answer held behind a
slow handler is late by a tick at most.

Handlers get an ``Exchange``: the request's head, a blocking reader of its body (which
grants the master credit as the body is consumed) and the calls that send the
response (``respond`` for a whole body, or ``start``/``write``/``end`` to stream it
under the master's window). A request the master cancelled raises ``RequestGone``
from those calls; the handler thread cannot be killed, so it runs to its next call.
"""
import logging
import os
import socket
import threading
from collections import deque

import ferry_worker

from . import channel
from . import codec
from .codec import CHUNK_MAX, STREAMED, ProtocolError

__version__ = "0.1.0"
SDK_NAME = "ferry-py"

log = logging.getLogger("ferry_worker")

# A whole response rides inline in its head frame up to this size (as the Rust SDK).
INLINE_MAX = 64 * 1024
# Request heads and bodies are read with this much room per recv.
# Reads of up to 64 KiB: a larger fresh buffer is mmap'ed and munmap'ed by malloc on
# every read, three syscalls as costly as a small request's whole work.
READ_SIZE = 64 * 1024
# How often the main thread checks that someone reads the channel (seconds), while
# any handler runs. An idle worker does not tick at all.
TICK = 0.01


class RequestGone(ConnectionError):
    """The request ended (the master cancelled it: the client left or it timed out):
    nothing more can be sent for it, and its body will not arrive."""


class Exchange:
    """One request in flight, as its handler sees it."""

    __slots__ = ("id", "method", "target", "version", "headers", "peer", "body",
                 "_session", "_chunks", "_ended", "_cond", "_uncredited", "window",
                 "head_sent", "gone", "trailers")

    def __init__(self, session, head):
        self._session = session
        self.id, self.method, self.target, version, self.headers, self.peer, self.body = head
        self.version = codec.HTTP_VERSIONS[version]
        self._chunks = None
        self._ended = self.body[0] != STREAMED
        self._cond = None
        self._uncredited = 0
        self.window = session.response_window
        self.head_sent = False
        self.gone = False
        self.trailers = None

    # ------------------------------------------------------------ request body

    def read_chunk(self):
        """The next piece of a streamed request body (a memoryview), or None at its end.
        Consuming it is what lets the master send more (credits are batched)."""
        s = self._session
        with s._lock:
            while not self._chunks:
                if self._ended:
                    return None
                if self.gone:
                    raise RequestGone("the request was cancelled")
                s._await(self)
            data = self._chunks.popleft()
            self._uncredited += len(data)
            # Credit only while the body is still arriving and the id is ours: after
            # BodyEnd it is useless, after the terminal message it is a violation.
            if self._uncredited >= s.credit_every and not self._ended and not self.gone:
                s._write(codec.encode_credit(self.id, self._uncredited))
                self._uncredited = 0
            return data

    # ------------------------------------------------------------ response

    def respond(self, status, headers, data=b""):
        """The whole response: inline in one frame if it fits, else streamed with its
        length. ``headers``: (bytes, bytes) pairs, lowercase names."""
        frame = None
        if len(data) <= INLINE_MAX:
            frame = codec.encode_response(self.id, status, headers, data)
            if len(frame) - 4 > self._session.max_frame:
                frame = None
        if frame is None:
            self.start(status, headers, len(data))
            self.write(data)
            self.end()
            return
        if not self._session._finish(self, frame):
            raise RequestGone("the request was cancelled")

    def start(self, status, headers, length=None):
        """Sends a streamed response head; the body follows with ``write`` and ``end``.
        ``length``: the exact body size if known (the client's Content-Length)."""
        frame = codec.encode_streamed_head(self.id, status, headers, length)
        if len(frame) - 4 > self._session.max_frame:
            raise ValueError("the response head does not fit in a frame")
        s = self._session
        with s._lock:
            if self.gone:
                raise RequestGone("the request was cancelled")
            self.head_sent = True
            s._hold(frame)

    def write(self, data):
        """Sends body bytes in chunks, waiting for the master's credit when the window
        is spent. Raises RequestGone once the request was cancelled."""
        mv = memoryview(data)
        if mv.itemsize != 1 or mv.ndim != 1:
            mv = mv.cast("B")
        n, pos = len(mv), 0
        s = self._session
        lock, chunk_max = s._lock, s.chunk_max
        while pos < n:
            with lock:
                while self.window <= 0:
                    if self.gone:
                        raise RequestGone("the request was cancelled")
                    s._await(self)
                if self.gone:
                    raise RequestGone("the request was cancelled")
                k = min(n - pos, self.window, chunk_max)
                self.window -= k
                s._writev(codec.body_chunk_header(self.id, k), mv[pos:pos + k])
            pos += k

    def end(self, trailers=()):
        """Ends a streamed response body: the request's terminal message."""
        if not self._session._finish(self, codec.encode_body_end(self.id, trailers)):
            raise RequestGone("the request was cancelled")

    def fail(self, reason):
        """Gives up on the request (RequestFailed): the client gets an error, or its
        response is cut off if the head went out. Ignored if it already ended."""
        return self._session._finish(self, codec.encode_request_failed(self.id, reason))


class Session:
    """Runs ``handler(exchange)`` for every request, on a pool of ``threads`` threads.

    ``handler`` must end each exchange (respond / end / fail); if it returns without
    doing so, or raises, the session ends it: 500 if no head went out, else failed.
    """

    def __init__(self, handler, threads=4, initial_window=codec.DEFAULT_INITIAL_WINDOW,
                 sdk_name=SDK_NAME, sdk_version=__version__):
        self.handler = handler
        self.threads = max(1, int(threads))
        self.initial_window = initial_window
        self.sdk_name, self.sdk_version = sdk_name, sdk_version
        # A quarter of our window: the master never stalls, and credits stay few.
        self.credit_every = max(1, initial_window // 4)
        self.max_frame = codec.DEFAULT_MAX_FRAME_SIZE
        self.response_window = 0
        self.chunk_max = CHUNK_MAX
        self.max_in_flight = self.threads
        self.worker_index = None
        self._lock = threading.Lock()
        self._out = []                # frames held for the next write (under _lock)
        self._table = {}
        self._draining = False
        self._closed = False          # Goodbye sent: nothing more goes out
        self._retired = None          # the last id taken, once retire() said Goodbye
        self._last_id = 0
        self._sock = None
        self._splitter = codec.FrameSplitter()
        self._token = threading.Lock()          # held by the thread reading the channel
        self._work = deque()                    # requests read, not yet started
        self._idle = 0                          # threads asleep in _idle_cond
        self._idle_cond = threading.Condition(self._lock)
        self._waiters = set()                   # exchanges whose thread waits on the channel
        self._reads = 0
        self._done = threading.Event()
        self._asleep = False                    # the watchdog waits for _wake (idle)
        self._wake = threading.Event()

    # ------------------------------------------------------------ writing (under _lock)

    def _write(self, frame):
        if self._closed:
            return
        out = self._out
        if out:
            out.append(frame)
            self._flush()
        else:
            self._sock.sendall(frame)

    def _hold(self, frame):
        """Writes a handler's answer, or holds it while more requests wait to run."""
        if self._work and not self._closed:
            self._out.append(frame)
        else:
            self._write(frame)

    def _flush(self):
        out = self._out
        if out and not self._closed:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self._sock.sendall(data)

    def _writev(self, header, data):
        if self._closed:
            return
        self._flush()
        sent = self._sock.sendmsg((header, data))
        total = len(header) + len(data)
        if sent < total:              # a blocking send is cut short only by a signal
            rest = (header + bytes(data))[sent:]
            self._sock.sendall(rest)

    def _finish(self, ex, frame):
        """Writes ``ex``'s terminal message, unless something else already ended it."""
        with self._lock:
            if self._table.pop(ex.id, None) is None:
                return False
            ex.gone = True
            self._hold(frame)
            if self._draining and not self._table:
                self._goodbye()
            return True

    def retire(self):
        """Says the retiring Goodbye: requests after the last one taken go elsewhere."""
        with self._lock:
            if self._retired is not None or self._closed or self._sock is None:
                return
            self._retired = self._last_id
            self._write(codec.encode_goodbye("retired", self._retired))
            self._draining = True
            if not self._table:
                self._goodbye()

    def _goodbye(self):
        if self._retired is None:     # a retired worker said its Goodbye already
            self._write(codec.encode_goodbye("drained"))
        self._flush()
        self._closed = True
        # Wake the reader, blocked in recv, so that it sees the end and we exit.
        try:
            self._sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    # ------------------------------------------------------------ threads
    #
    # Every handler thread both reads the channel and runs handlers, one role at a
    # time (leader/followers): whoever holds ``_token`` reads; a thread that read
    # request heads runs them itself when it lets go of the token. Under load one
    # thread thus reads a batch of requests and answers them with no wake-up of
    # another thread at all (a hand-off per request cost more than the request).
    #
    # Reading must never stop for long, whatever handlers do (Ping, Cancel, Credit):
    # - a handler waiting on the channel (request body, credit) reads it itself if no
    #   one else is, and the reader wakes such a waiter when it lets go of the token;
    # - the main thread is a watchdog: every TICK it takes the token if no one has
    #   read since the last tick (every thread is busy in a handler), reading until a
    #   thread is free; and it wakes idle threads for requests that waited a tick
    #   (the reader went off to run a slow one). It ticks only while there is work:
    #   once every thread but the reader is idle and no request is in flight it
    #   sleeps until the next request head (an idle pool costs no CPU, as PHP-FPM's
    #   does not).

    def _await(self, ex):
        """Waits (``_lock`` held) until something arrives for ``ex``: by reading the
        channel itself if no one is, else by sleeping until the reader signals."""
        self._flush()                 # what we hold may be what the master waits for
        if self._token.acquire(False):
            self._lock.release()
            try:
                self._read_once(False)
            finally:
                self._lock.acquire()
                self._release_token()
            return
        if ex._cond is None:
            ex._cond = threading.Condition(self._lock)
        self._waiters.add(ex)
        try:
            ex._cond.wait()
        finally:
            self._waiters.discard(ex)

    def _release_token(self):
        """Lets go of the reader role (``_lock`` held), handing it to a thread blocked
        on the channel if there is one: it cannot make progress unless someone reads."""
        self._token.release()
        for ex in self._waiters:
            ex._cond.notify()
            break

    def _thread(self):
        work, lock, token = self._work, self._lock, self._token
        while True:
            if work:
                try:
                    ex = work.popleft()
                except IndexError:
                    continue
                self._run(ex)
                if not work and self._out:
                    with lock:
                        self._flush()
                continue
            if self._done.is_set():
                return
            if token.acquire(False):
                try:
                    self._read_once(True)
                finally:
                    with lock:
                        self._release_token()
                continue
            with lock:
                if work or not token.locked():
                    continue
                self._idle += 1
                try:
                    self._idle_cond.wait()
                finally:
                    self._idle -= 1

    def _run(self, ex):
        if ex.gone:
            return                  # cancelled while it waited for a thread
        try:
            self.handler(ex)
        except RequestGone:
            pass
        except BaseException:
            log.exception("handler failed for %s %s", ex.method, ex.target)
        if not ex.gone:
            # The handler neither answered nor failed: never leave the master waiting.
            if ex.head_sent:
                ex.fail("the handler did not finish the response")
            else:
                self._finish(ex, codec.encode_response(
                    ex.id, 500, [(b"content-type", b"text/plain")], b"Internal Server Error\n"))

    def _read_once(self, runner):
        """One read of the channel and the frames in it (``_token`` held). ``runner``:
        the caller runs the requests it reads; otherwise idle threads are woken."""
        want = self._splitter.pending()
        try:
            data = self._sock.recv(want if want > READ_SIZE else READ_SIZE)
        except ConnectionResetError:
            data = b""
        self._reads += 1
        if not data:
            if self._closed:
                self._done.set()        # drained: Goodbye went out
                self._wake.set()
                return
            channel.master_gone()
        try:
            for buf, start, end in self._splitter.feed(data):
                self._dispatch(buf, start, end, runner)
        except ProtocolError as e:
            channel.fatal("bad frame from the master: %s" % e)

    def _watchdog(self):
        lock, token, work = self._lock, self._token, self._work
        last_reads, last_head = -1, None
        while not self._done.wait(TICK):
            with lock:
                self._flush()               # answers held behind a slow handler
                head = work[0] if work else None
                if head is not None and head is last_head and self._idle:
                    self._idle_cond.notify(len(work))
                last_head = head
                # Idle: one thread blocked reading, the rest asleep, nothing in flight
                # (a cancelled handler still running keeps its thread out of _idle).
                quiet = (not work and not self._table and token.locked()
                         and self._idle == self.threads - 1)
                if quiet:
                    self._wake.clear()
                    self._asleep = True
            if quiet:
                self._wake.wait()           # set by the next request head, or the end
                last_reads, last_head = -1, None
                continue
            if self._reads == last_reads and token.acquire(False):
                try:
                    while not self._done.is_set():
                        self._read_once(False)
                        with lock:
                            if self._idle and not work:
                                break       # a thread is free: it reads from now on
                finally:
                    with lock:
                        self._release_token()
                        self._idle_cond.notify()
            last_reads = self._reads

    # ------------------------------------------------------------ the handshake

    def run(self, sock=None):
        """Handshake, then serve until drained (returns) or the master is gone (the
        process group is killed, or the process exits when it leads no group)."""
        sock = self._sock = sock or channel.from_env()
        ferry_worker._session = self
        sock.sendall(codec.encode_hello(os.getpid(), self.threads, self.initial_window,
                                        self.sdk_name, self.sdk_version))
        splitter = self._splitter
        frames = []
        while not frames:
            data = sock.recv(READ_SIZE)
            if not data:
                channel.master_gone()           # as after the handshake (SPEC 10)
            try:
                frames = splitter.feed(data)
            except ProtocolError as e:
                channel.fatal("bad frame from the master during the handshake: %s" % e)
        buf, start, end = frames.pop(0)
        if buf[start] != codec.WELCOME:
            channel.fatal("expected Welcome from the master, got type 0x%02x" % buf[start])
        if end - start >= 5:
            version = codec._u32_unpack(buf, start + 1)[0]
            if version != codec.PROTOCOL_VERSION:
                channel.fatal("protocol version mismatch: ours %d, the master's %d"
                              % (codec.PROTOCOL_VERSION, version))
        try:
            welcome = codec.decode_welcome(buf, start + 1, end)
        except ProtocolError as e:
            channel.fatal("bad Welcome from the master: %s" % e)
        self.worker_index = welcome.worker_index
        self.max_frame = splitter.max_frame = welcome.max_frame_size
        self.response_window = welcome.initial_window
        self.chunk_max = max(1, min(CHUNK_MAX, welcome.initial_window or 1,
                                    welcome.max_frame_size - codec.BODY_CHUNK_OVERHEAD))
        self.max_in_flight = max(1, min(self.threads, welcome.max_in_flight))
        try:
            for f in frames:
                self._dispatch(*f, False)
        except ProtocolError as e:
            channel.fatal("bad frame from the master: %s" % e)
        for _ in range(self.threads):
            threading.Thread(target=self._thread, name="ferry-handler", daemon=True).start()
        # The main thread watches; it also runs the SIGTERM handler at once.
        self._watchdog()

    def _dispatch(self, buf, start, end, runner):
        t = buf[start]
        if t == codec.REQUEST_HEAD:
            head = codec.decode_request_head(buf, start + 1, end)
            ex = Exchange(self, head)
            if ex._ended is False:
                ex._chunks = deque()
            with self._lock:
                if self._asleep:
                    self._asleep = False
                    self._wake.set()          # a request in flight: the watchdog ticks
                if self._retired is not None and head.id > self._retired:
                    return                # sent before the master read our Goodbye
                self._last_id = head.id
                table = self._table
                if head.id in table:
                    # Its handler will answer that id: any answer to this head would
                    # be a second terminal message (SPEC 6 lets us treat it as fatal).
                    raise ProtocolError("a RequestHead for request %d, still in flight"
                                        % head.id)
                if len(table) >= self.max_in_flight:
                    log.error("the master sent request %d over the announced limit", head.id)
                    self._write(codec.encode_request_failed(
                        head.id, "worker over its in-flight limit"))
                    return
                table[head.id] = ex
                self._work.append(ex)
                if not runner and self._idle:
                    self._idle_cond.notify()
        elif t == codec.M_BODY_CHUNK:
            if end - start < 9:
                raise ProtocolError("a body chunk shorter than its id")
            ex = self._table.get(codec._u64_unpack(buf, start + 1)[0])
            if ex is not None and not ex._ended:
                with self._lock:
                    ex._chunks.append(memoryview(buf)[start + 9:end])
                    if ex._cond is not None:
                        ex._cond.notify()
        elif t == codec.M_CREDIT:
            c = codec.decode_credit(buf, start + 1, end)
            ex = self._table.get(c.id)
            if ex is not None:
                with self._lock:
                    ex.window += c.bytes
                    if ex._cond is not None:
                        ex._cond.notify()
        elif t == codec.PING:
            p = codec.decode_ping(buf, start + 1, end)
            with self._lock:
                self._write(codec.encode_pong(p.nonce, len(self._table)))
        elif t == codec.M_BODY_END:
            e = codec.decode_body_end(buf, start + 1, end)
            ex = self._table.get(e.id)
            if ex is not None and not ex._ended:
                with self._lock:
                    ex._ended = True
                    ex.trailers = e.trailers
                    if ex._cond is not None:
                        ex._cond.notify()
        elif t == codec.CANCEL:
            c = codec.decode_cancel(buf, start + 1, end)
            with self._lock:
                ex = self._table.pop(c.id, None)
                if ex is not None:
                    ex.gone = True
                    self._write(codec.encode_request_failed(c.id, "cancelled"))
                    if ex._cond is not None:
                        ex._cond.notify_all()
                    if self._draining and not self._table:
                        self._goodbye()
        elif t == codec.DRAIN:
            codec.decode_drain(buf, start + 1, end)
            with self._lock:
                self._draining = True
                if not self._table and not self._closed:
                    self._goodbye()
        elif t == codec.WELCOME:
            log.warning("ignoring a second Welcome from the master")
        else:
            raise ProtocolError("0x%02x is not a master message type" % t)
