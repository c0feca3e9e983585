// One worker's life on its channel: the handshake, the reader that dispatches every
// master message, heartbeats, Drain/Goodbye, EOF, and the table of requests in
// flight. Each request is an Exchange: the protocol state of one id (its request
// body under our credits, its response body under the master's window, Cancel).
// Framework adapters (fetch.js, http.js) drive Exchanges; they never see frames.
//
// The table is the arbiter of the protocol's one rule for a worker: every request id
// gets exactly one terminal message and nothing after it. An Exchange leaves the table
// in the same step that queues its terminal message (Exchange#finish), and every
// later call on it is a no-op, so a handler that keeps writing after a Cancel, or
// writes twice, can never put a stray frame on the wire.
import * as c from './codec.js';
import { Writer } from './writer.js';
import { openChannel, installSigterm, dieWithGroup } from './channel.js';

const SDK_NAME = 'ferry-worker-node';
const SDK_VERSION = '0.1.0';
const INLINE_MAX = 64 * 1024;

const HANDLING = 0;
const STREAMING = 1;
const FINISHED = 2;

const EMPTY_HEADERS = [];

export class Exchange {
  constructor(session, head) {
    this.session = session;
    this.id = head.id;
    this.head = head;
    this.state = HANDLING;
    this.cancelled = false;
    /** Called once when the master cancels this request (client gone, timeout). */
    this.onCancel = null;
    /** Called when a write() that returned false has gone out (window and channel). */
    this.onDrain = null;
    /** Called when request-body data, its end, or an error arrives. */
    this.onBody = null;
    /** Called once with the terminal message's success (false: RequestFailed). */
    this.onFinish = null;

    // Request body (master -> worker), streamed only.
    this.inQueue = null;
    this.inEnded = head.bodyKind !== c.BODY_STREAMED;
    this.inError = null;
    this.trailers = EMPTY_HEADERS;
    this.uncredited = 0;

    // Response body (worker -> master).
    this.window = session.window;
    this.left = -1; // declared bytes still owed, -1 when no length was declared
    this.declared = null;
    this.outQueue = null;
    this.outQueued = 0;
    this.pendingEnd = null;
    this.needDrain = false;
  }

  get finished() {
    return this.state === FINISHED;
  }
  get headSent() {
    return this.state !== HANDLING;
  }

  // ---------------------------------------------------------- request body

  /**
   * Takes the next request-body chunk: a Buffer, null at the end, or undefined when
   * nothing has arrived yet (onBody fires when something does). Throws the body's
   * error (cancelled, cut off). Taking is consuming: it is what earns the master
   * credit to send more (batched, a quarter of our window at a time).
   */
  take() {
    const q = this.inQueue;
    if (q !== null && q.length > 0) {
      const data = q.shift();
      this.uncredited += data.length;
      if (this.uncredited >= this.session.creditEvery && !this.inEnded && this.state !== FINISHED) {
        this.session.writer.frame({ type: c.W_CREDIT, id: this.id, bytes: this.uncredited });
        this.uncredited = 0;
      }
      return data;
    }
    if (this.inError !== null) throw this.inError;
    return this.inEnded ? null : undefined;
  }

  pushBody(data) {
    if (this.inEnded) return;
    if (this.inQueue === null) this.inQueue = [];
    this.inQueue.push(ownCopy(data));
    if (this.onBody !== null) callApp(this, this.onBody);
  }

  endBody(trailers) {
    if (this.inEnded) return;
    this.inEnded = true;
    this.trailers = trailers;
    if (this.onBody !== null) callApp(this, this.onBody);
  }

  // ---------------------------------------------------------- response

  /**
   * Answers with a whole response: body a Buffer/Uint8Array or null. Small bodies
   * ride inline in the head frame (one frame per request); larger ones are streamed.
   * `length`, when given, is the length the application declared (Content-Length):
   * a body that breaks it fails the request rather than the worker.
   */
  respond(status, headers, body, length = null) {
    if (this.state !== HANDLING) return;
    const n = body === null ? 0 : body.length;
    // A declared length the body breaks fails the request. An empty body with one is
    // the answer to HEAD (or a 304): its Content-Length describes the GET body.
    if (length !== null && length !== n && (n !== 0 || (this.head.method !== 'HEAD' && status !== 304))) {
      this.fail(`the response body is ${n} bytes but its declared length is ${length}`);
      return;
    }
    if (n === 0) {
      this.finish({ type: c.RESPONSE_HEAD, id: this.id, status, headers, bodyKind: c.BODY_EMPTY, body: null, bodyLength: null });
      return;
    }
    if (n <= INLINE_MAX) {
      const msg = { type: c.RESPONSE_HEAD, id: this.id, status, headers, bodyKind: c.BODY_INLINE, body, bodyLength: null };
      if (c.payloadSize(msg) <= this.session.maxFrameSize) {
        this.finish(msg);
        return;
      }
    }
    this.startStream(status, headers, n);
    this.write(body);
    this.end();
  }

  /** Sends a streamed response head. `length`: total body bytes if known, else null. */
  startStream(status, headers, length = null) {
    if (this.state !== HANDLING) return;
    const msg = {
      type: c.RESPONSE_HEAD,
      id: this.id,
      status,
      headers,
      bodyKind: c.BODY_STREAMED,
      body: null,
      bodyLength: length === null ? null : BigInt(length),
    };
    try {
      this.session.writer.frame(msg);
    } catch (e) {
      // Nothing went out yet: a 500, as for any other application fault.
      console.error(`ferry-worker: response ${this.id} could not be sent: ${e.message}`);
      this.error(e.message);
      return;
    }
    this.state = STREAMING;
    this.declared = length;
    this.left = length === null ? -1 : length;
  }

  /**
   * Sends body data under the master's window. Returns true if it all went out,
   * false if some waits for credit or for the channel (onDrain fires when it has).
   * Writing to a finished request (cancelled, failed) is silently dropped.
   */
  write(data) {
    if (this.state !== STREAMING || this.pendingEnd !== null) return true;
    if (data.length === 0) return this.outQueued === 0;
    if (this.left >= 0) {
      if (data.length > this.left) {
        this.fail(`the response body ran past its declared length ${this.declared}`);
        return true;
      }
      this.left -= data.length;
    }
    if (this.outQueue === null) this.outQueue = [];
    this.outQueue.push(data);
    this.outQueued += data.length;
    this.pump();
    if (this.outQueued > 0) {
      this.needDrain = true;
      return false;
    }
    return true;
  }

  /** Ends a streamed body (after what is queued has gone out). */
  end(trailers = EMPTY_HEADERS) {
    if (this.state !== STREAMING || this.pendingEnd !== null) return;
    if (this.left > 0) {
      this.fail(`the response body ended ${this.left} bytes short of its declared length ${this.declared}`);
      return;
    }
    this.pendingEnd = trailers;
    this.pump();
  }

  /** Gives up on the request: RequestFailed (the master answers 5xx or aborts). */
  fail(reason) {
    this.finish({ type: c.REQUEST_FAILED, id: this.id, reason: String(reason).slice(0, 1000) });
  }

  /** A 500 if no head went out yet, else RequestFailed. */
  error(reason) {
    if (this.state === HANDLING) {
      this.finish(textResponse(this.id, 500, 'Internal Server Error\n'));
    } else {
      this.fail(reason);
    }
  }

  pump() {
    const session = this.session;
    const writer = session.writer;
    const q = this.outQueue;
    while (q !== null && q.length > 0 && this.window > 0) {
      if (writer.congested) {
        session.waitChannel(this);
        return;
      }
      let data = q[0];
      const n = Math.min(data.length, this.window, session.chunkMax);
      if (n === data.length) q.shift();
      else {
        q[0] = data.subarray(n);
        data = data.subarray(0, n);
      }
      this.window -= n;
      this.outQueued -= n;
      writer.chunk(this.id, data);
    }
    if (this.outQueued === 0) {
      if (this.pendingEnd !== null && this.state === STREAMING) {
        this.finish({ type: c.W_BODY_END, id: this.id, trailers: this.pendingEnd });
        return;
      }
      if (this.needDrain) {
        this.needDrain = false;
        if (this.onDrain !== null) callApp(this, this.onDrain);
      }
    }
  }

  credit(bytes) {
    this.window += bytes;
    this.pump();
  }

  finish(msg) {
    if (this.state === FINISHED) return false;
    this.state = FINISHED;
    this.outQueue = null;
    this.outQueued = 0;
    const session = this.session;
    session.table.delete(this.id);
    try {
      session.writer.frame(msg);
    } catch (e) {
      // Too large for a frame (a head's headers, trailers): the request still needs
      // its terminal message; a 500 if no head went out, as for any application fault.
      console.error(`ferry-worker: response ${this.id} could not be sent: ${e.message}`);
      session.writer.frame(
        msg.type === c.RESPONSE_HEAD
          ? textResponse(this.id, 500, 'Internal Server Error\n')
          : { type: c.REQUEST_FAILED, id: this.id, reason: 'the response exceeds the frame size' },
      );
    }
    if (this.needDrain && this.onDrain !== null) {
      // Wake a writer waiting for drain: its writes are now no-ops.
      this.needDrain = false;
      callApp(this, this.onDrain);
    }
    if (this.onFinish !== null) callApp(this, this.onFinish, msg.type !== c.REQUEST_FAILED);
    session.finished();
    return true;
  }

  cancel() {
    if (this.state === FINISHED) return;
    this.cancelled = true;
    this.inError = abortError();
    this.finish({ type: c.REQUEST_FAILED, id: this.id, reason: 'cancelled' });
    if (this.onBody !== null) callApp(this, this.onBody);
    if (this.onCancel !== null) callApp(this, this.onCancel);
  }
}

/**
 * Runs one of an exchange's callbacks. They reach application code synchronously
 * (a 'data', 'aborted', 'drain' or 'finish' listener), here inside the handling of
 * a frame from the master: a listener that throws fails its own request, not the
 * worker with every other request in flight.
 */
function callApp(ex, cb, arg) {
  try {
    cb(arg);
  } catch (e) {
    console.error(`ferry-worker: a listener of request ${ex.head.method} ${ex.head.target} threw:`, e);
    ex.finish({ type: c.REQUEST_FAILED, id: ex.id, reason: 'the application raised an exception' });
  }
}

/**
 * Body data handed to the application gets an ArrayBuffer of its own. The decoded
 * chunk is a view into the channel read, which also holds other requests' frames,
 * and `chunk.buffer` would expose them to this request's handler.
 */
export function ownCopy(data) {
  const copy = Buffer.allocUnsafeSlow(data.length);
  copy.set(data);
  return copy;
}

function abortError() {
  const e = new Error('the request was cancelled (the client left or it timed out)');
  e.name = 'AbortError';
  e.code = 'ABORT_ERR';
  return e;
}

export function textResponse(id, status, text) {
  return {
    type: c.RESPONSE_HEAD,
    id,
    status,
    headers: ['content-type', 'text/plain'],
    bodyKind: c.BODY_INLINE,
    body: Buffer.from(text),
    bodyLength: null,
  };
}

// The session running in this process, for retire().
let current = null;

/**
 * Asks the master to retire this worker: it is sent no new requests, finishes those
 * it has and exits, while requests already on their way run on another worker.
 * Does nothing outside a ferry worker.
 */
export function retire() {
  if (current !== null) current.retire();
}

export class Session {
  /**
   * onRequest(exchange) is called for every request, synchronously from the reader;
   * it must not throw for long work (start it and return). Options: maxInFlight
   * (announced in Hello, default 64), initialWindow (request-body bytes per request
   * before we grant more, default 256 KiB).
   */
  constructor(onRequest, options = {}) {
    this.onRequest = onRequest;
    this.maxInFlight = options.maxInFlight ?? 64;
    this.initialWindow = options.initialWindow ?? c.DEFAULT_INITIAL_WINDOW;
    this.creditEvery = Math.max(1, this.initialWindow >>> 2);
    this.sdkName = options.sdkName ?? SDK_NAME;
    this.table = new Map();
    this.welcome = null;
    this.window = 0;
    this.maxFrameSize = c.DEFAULT_MAX_FRAME_SIZE;
    this.chunkMax = c.CHUNK_MAX;
    this.limit = this.maxInFlight;
    this.draining = false;
    this.goneBye = false;
    this.retired = null; // the last id taken, once retire() said Goodbye
    this.lastId = 0n;
    this.channelWaiters = new Set();
    this.socket = null;
    this.writer = null;
  }

  /** Connects to the master and starts serving. Resolves once Welcome arrived. */
  start() {
    const socket = openChannel();
    this.socket = socket;
    current = this;
    installSigterm();
    const writer = new Writer(socket);
    this.writer = writer;
    writer.frame({
      type: c.HELLO,
      protocolVersion: c.PROTOCOL_VERSION,
      pid: process.pid,
      maxInFlight: this.maxInFlight,
      initialWindow: this.initialWindow,
      sdkName: this.sdkName,
      sdkVersion: SDK_VERSION,
    });
    writer.flush();
    const reader = new c.FrameReader((buf, s, e) => this.onFrame(buf, s, e));
    this.reader = reader;
    socket.on('data', (chunk) => {
      try {
        reader.push(chunk);
      } catch (e) {
        this.fatal(e);
      }
    });
    // EOF (or a reset) before we are done, even while draining: the master is gone
    // or ending us now. Nothing this worker started may outlive it (SPEC.md 10).
    const gone = () => {
      if (!this.goneBye) dieWithGroup(0);
    };
    socket.on('end', gone);
    socket.on('close', gone);
    socket.on('error', (e) => {
      if (e.code !== 'ECONNRESET' && e.code !== 'EPIPE') console.error(`ferry-worker: channel error: ${e.message}`);
      gone();
    });
    socket.on('drain', () => this.channelDrained());
    return new Promise((resolve) => {
      this.ready = resolve;
    });
  }

  fatal(e) {
    const what = e instanceof c.ProtocolError ? 'bad frame from the master' : 'error while handling a frame from the master';
    console.error(`ferry-worker: ${what}: ${e && e.stack ? e.stack : e}`);
    this.writer.closed = true;
    // Exit at once: master and worker disagree about the protocol, and going on
    // risks misrouting data between requests (SPEC.md 11).
    process.exit(1);
  }

  onFrame(buf, start, end) {
    const type = buf[start];
    if (this.welcome === null) {
      this.handshake(buf, start, end);
      return;
    }
    const msg = c.decodeMaster(buf, start, end);
    switch (type) {
      case c.REQUEST_HEAD:
        // Sent before the master read our retiring Goodbye: it runs elsewhere.
        if (this.retired !== null && msg.id > this.retired) break;
        this.lastId = msg.id;
        this.startRequest(msg);
        break;
      case c.M_BODY_CHUNK: {
        const ex = this.table.get(msg.id);
        if (ex !== undefined) ex.pushBody(msg.data);
        break;
      }
      case c.M_BODY_END: {
        const ex = this.table.get(msg.id);
        if (ex !== undefined) ex.endBody(msg.trailers);
        break;
      }
      case c.M_CREDIT: {
        const ex = this.table.get(msg.id);
        if (ex !== undefined) ex.credit(msg.bytes);
        break;
      }
      case c.CANCEL: {
        const ex = this.table.get(msg.id);
        if (ex !== undefined) ex.cancel();
        break;
      }
      case c.PING:
        this.writer.frame({ type: c.PONG, nonce: msg.nonce, inFlight: this.table.size });
        break;
      case c.DRAIN:
        this.draining = true;
        this.finished();
        break;
      case c.WELCOME:
        console.error('ferry-worker: ignoring a second Welcome from the master');
        break;
    }
  }

  handshake(buf, start, end) {
    // The version is read before anything else is trusted (SPEC.md 5).
    if (buf[start] !== c.WELCOME) {
      throw new c.ProtocolError(`expected Welcome from the master, got message type 0x${buf[start].toString(16)}`);
    }
    if (end - start >= 5) {
      const v = buf.readUInt32BE(start + 1);
      if (v !== c.PROTOCOL_VERSION) {
        console.error(`ferry-worker: protocol version mismatch: ours ${c.PROTOCOL_VERSION}, the master's ${v}`);
        process.exit(1);
      }
    }
    const w = c.decodeMaster(buf, start, end);
    this.welcome = w;
    this.maxFrameSize = w.maxFrameSize;
    this.reader.maxFrameSize = w.maxFrameSize;
    this.writer.maxFrameSize = w.maxFrameSize;
    this.window = w.initialWindow;
    this.chunkMax = Math.max(1, Math.min(c.CHUNK_MAX, w.maxFrameSize - c.BODY_CHUNK_OVERHEAD));
    this.limit = Math.max(1, Math.min(this.maxInFlight, w.maxInFlight));
    this.ready(w);
  }

  startRequest(head) {
    const id = head.id;
    if (this.table.has(id)) {
      // Its handler will answer that id: any answer to this head would be a second
      // terminal message (SPEC.md 6 lets a worker treat it as fatal).
      throw new c.ProtocolError(`a RequestHead for request ${id}, still in flight`);
    }
    if (this.table.size >= this.limit) {
      console.error(`ferry-worker: the master sent request ${id} over the announced limit`);
      this.writer.frame({ type: c.REQUEST_FAILED, id, reason: 'worker over its in-flight limit' });
      return;
    }
    if (head.body !== null) head.body = ownCopy(head.body);
    const ex = new Exchange(this, head);
    this.table.set(id, ex);
    try {
      this.onRequest(ex);
    } catch (e) {
      console.error(`ferry-worker: handler failed (${head.method} ${head.target}):`, e);
      ex.error(e && e.message);
    }
  }

  waitChannel(ex) {
    this.channelWaiters.add(ex);
  }

  channelDrained() {
    if (this.channelWaiters.size === 0) return;
    const waiters = [...this.channelWaiters];
    this.channelWaiters.clear();
    for (const ex of waiters) ex.pump();
  }

  /**
   * Says the retiring Goodbye (SPEC.md section 10): the master sends nothing new and
   * gives requests after the last one taken to another worker; this one finishes
   * its own, then exits.
   */
  retire() {
    if (this.retired !== null || this.goneBye || this.writer === null) return;
    this.retired = this.lastId;
    this.writer.frame({ type: c.GOODBYE, reason: 'retired', lastId: this.retired });
    this.draining = true;
    this.finished();
  }

  /** Called whenever a request finishes, and on Drain: says Goodbye once idle. */
  finished() {
    if (!this.draining || this.table.size > 0 || this.goneBye) return;
    this.goneBye = true;
    // A retired worker said its Goodbye already.
    if (this.retired === null) this.writer.frame({ type: c.GOODBYE, reason: 'drained' });
    // Exit once Goodbye is on the wire: after it the worker sends nothing more.
    this.writer.flush(() => process.exit(0));
  }
}
