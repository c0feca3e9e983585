// node:http-style handlers: serveHttp((req, res) => ...), enough for an Express app
// to be passed in as is. `req` is a real http.IncomingMessage (a Readable fed from the
// request body under our credits) and `res` a real http.ServerResponse: frameworks
// such as Express swap their prototypes for ones derived from node:http's, so only
// genuine instances keep working. Their in-memory parts (header storage, setHeader,
// getHeader, ...) are node:http's own; what would touch a TCP socket (writeHead,
// write, end, req._read, ...) is replaced by own-property methods that speak to the
// Exchange, which survive the prototype swap. This module owns that translation.
import http from 'node:http';
import { EventEmitter } from 'node:events';
import { Session } from './session.js';
import * as c from './codec.js';

const kEx = Symbol('ferry.exchange');
const kRaw = Symbol('ferry.rawHeaders');
const kHeadSent = Symbol('ferry.headSent');

/** Stands in for the client's TCP socket: the address, and the "close" others watch. */
class PeerSocket extends EventEmitter {
  constructor(peer) {
    super();
    const colon = peer.lastIndexOf(':');
    let host = colon > 0 ? peer.slice(0, colon) : peer;
    const ipv6 = host.startsWith('[');
    if (ipv6) host = host.slice(1, -1);
    this.remoteAddress = host;
    this.remotePort = colon > 0 ? Number(peer.slice(colon + 1)) : undefined;
    this.remoteFamily = ipv6 ? 'IPv6' : 'IPv4';
    this.encrypted = false;
    this.readable = true;
    this.writable = true;
    this.destroyed = false;
    this.writableLength = 0;
    this.timeout = 0;
  }
  setTimeout(ms, cb) {
    if (cb) this.once('timeout', cb);
    return this;
  }
  setNoDelay() {
    return this;
  }
  setKeepAlive() {
    return this;
  }
  cork() {}
  uncork() {}
  ref() {
    return this;
  }
  unref() {
    return this;
  }
  address() {
    return {};
  }
  end() {
    return this.destroy();
  }
  /** Someone gave up on the client (res.destroy(), req.socket.destroy()). */
  destroy(err) {
    if (this.destroyed) return this;
    this.closed();
    const ex = this[kEx];
    if (ex !== undefined) ex.fail(err ? `destroyed: ${err.message}` : 'the response was destroyed');
    return this;
  }
  closed() {
    if (this.destroyed) return;
    this.destroyed = true;
    this.readable = false;
    this.writable = false;
    process.nextTick(() => this.emit('close', false));
  }
}

// ---------------------------------------------------------------- request side

function readBody() {
  const ex = this[kEx];
  for (;;) {
    let data;
    try {
      data = ex.take();
    } catch (e) {
      this.destroy(e);
      return;
    }
    if (data === undefined) {
      ex.onBody = () => {
        ex.onBody = null;
        this._read();
      };
      return;
    }
    if (data === null) {
      this.complete = true;
      if (ex.trailers.length > 0) {
        this.rawTrailers = ex.trailers;
        const t = {};
        for (let i = 0; i < ex.trailers.length; i += 2) this._addHeaderLine(ex.trailers[i], ex.trailers[i + 1], t);
        this.trailers = t;
      }
      this.push(null);
      return;
    }
    if (!this.push(data)) return;
  }
}

function destroyRequest(err, cb) {
  if (!this.readableEnded || !this.complete) {
    this.aborted = true;
    try {
      this.emit('aborted');
    } catch (e) {
      // Thrown inside the stream's _destroy, it would come back as an 'error' event
      // nobody listens for, and end the worker. The request is already answered.
      console.error(`ferry-worker: an 'aborted' listener of ${this.method} ${this.url} threw:`, e);
    }
  }
  // As node:http does: an abort is an 'error' only for those who listen for one.
  cb(err && this.listenerCount('error') > 0 ? err : null);
}

// ---------------------------------------------------------------- response side

function headerList(res) {
  const out = [];
  const h = res.getHeaders();
  for (const name in h) {
    const v = h[name];
    if (Array.isArray(v)) for (let i = 0; i < v.length; i++) out.push(name, String(v[i]));
    else out.push(name, String(v));
  }
  const raw = res[kRaw];
  if (raw !== null) for (let i = 0; i < raw.length; i++) out.push(raw[i]);
  return out;
}

function declaredLength(res) {
  const v = res.getHeader('content-length');
  if (v === undefined) return null;
  const n = Number(v);
  return Number.isSafeInteger(n) && n >= 0 ? n : null;
}

function headersSentError(what) {
  const e = new Error(`Cannot ${what} headers after they are sent to the client`);
  e.code = 'ERR_HTTP_HEADERS_SENT';
  return e;
}

function writeHead(statusCode, reason, headers) {
  if (this._header) throw headersSentError('write');
  if (typeof reason !== 'string') {
    headers = reason;
    reason = undefined;
  }
  statusCode |= 0;
  if (statusCode < 100 || statusCode > 999) {
    const e = new RangeError(`Invalid status code: ${statusCode}`);
    e.code = 'ERR_HTTP_INVALID_STATUS_CODE';
    throw e;
  }
  this.statusCode = statusCode;
  if (reason !== undefined) this.statusMessage = reason;
  if (headers) {
    if (Array.isArray(headers)) {
      // [[k, v], ...] or node's flat [k, v, k, v]: sent as given, repeats kept.
      // Checked as setHeader checks (node:http's own validators): CR, LF, NUL or a
      // character past U+00FF would otherwise reach the frame (SPEC.md 4.3).
      // All checked before any is kept: a throw leaves the response as it was.
      const checked = [];
      if (headers.length > 0 && Array.isArray(headers[0])) {
        for (const [k, v] of headers) pushChecked(checked, k, v);
      } else {
        for (let i = 0; i + 1 < headers.length; i += 2) pushChecked(checked, headers[i], headers[i + 1]);
      }
      const raw = (this[kRaw] ??= []);
      for (let i = 0; i < checked.length; i++) raw.push(checked[i]);
    } else {
      for (const k of Object.keys(headers)) if (headers[k] !== undefined) this.setHeader(k, headers[k]);
    }
  }
  // From here on headersSent is true, as in node:http; the head itself goes out with
  // the first body bytes or at end(), so a small response stays one inline frame.
  this._header = ' ';
  return this;
}

function pushChecked(list, name, value) {
  name = String(name);
  value = String(value);
  http.validateHeaderName(name);
  http.validateHeaderValue(name, value);
  list.push(name.toLowerCase(), value);
}

function implicitHeader() {
  this.writeHead(this.statusCode);
}

function toBytes(chunk, encoding) {
  if (typeof chunk === 'string') return Buffer.from(chunk, typeof encoding === 'string' ? encoding : 'utf8');
  if (chunk instanceof Uint8Array) return chunk;
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  throw new TypeError('The "chunk" argument must be of type string or an instance of Buffer or Uint8Array');
}

function startStream(res) {
  if (!res._header) res._implicitHeader();
  res[kHeadSent] = true;
  res[kEx].startStream(res.statusCode, headerList(res), declaredLength(res));
}

function write(chunk, encoding, cb) {
  if (typeof encoding === 'function') {
    cb = encoding;
    encoding = undefined;
  }
  if (this.finished) {
    const e = new Error('write after end');
    e.code = 'ERR_STREAM_WRITE_AFTER_END';
    process.nextTick(() => {
      if (cb) cb(e);
      this.emit('error', e);
    });
    return false;
  }
  const ex = this[kEx];
  if (!this[kHeadSent]) startStream(this);
  if (!this._hasBody) {
    if (cb) process.nextTick(cb);
    return true;
  }
  const ok = ex.write(toBytes(chunk, encoding));
  if (cb) {
    if (ok) process.nextTick(cb);
    else this.once('drain', cb);
  }
  return ok;
}

function end(chunk, encoding, cb) {
  if (typeof chunk === 'function') {
    cb = chunk;
    chunk = undefined;
  } else if (typeof encoding === 'function') {
    cb = encoding;
    encoding = undefined;
  }
  if (this.finished) {
    if (cb) process.nextTick(cb);
    return this;
  }
  const ex = this[kEx];
  // What can throw (a chunk that is not bytes, a statusCode out of range) throws
  // before the response counts as finished, as in node:http: the app's error handler
  // (Express's) then still sees headersSent false and can answer with a 500.
  const data = chunk === undefined || chunk === null || !this._hasBody ? null : toBytes(chunk, encoding);
  if (!this[kHeadSent] && !this._header) this._implicitHeader();
  if (cb) this.once('finish', cb);
  this.finished = true;
  if (!this[kHeadSent]) {
    this[kHeadSent] = true;
    ex.respond(this.statusCode, headerList(this), data, declaredLength(this));
  } else {
    if (data !== null) ex.write(data);
    ex.end(this._trailerList ?? undefined);
  }
  return this;
}

function addTrailers(headers) {
  const list = (this._trailerList ??= []);
  const entries = Array.isArray(headers) ? headers : Object.entries(headers);
  for (const [k, v] of entries) pushChecked(list, k, v);
}

function flushHeaders() {
  if (!this[kHeadSent]) startStream(this);
}

// ---------------------------------------------------------------- dispatch

/** The req/res pair for one exchange. */
export function toNodePair(ex) {
  const head = ex.head;
  const socket = new PeerSocket(head.peer);
  socket[kEx] = ex;
  const req = new http.IncomingMessage(socket);
  req[kEx] = ex;
  req.method = head.method;
  req.url = head.target;
  const v = c.HTTP_VERSIONS[head.version];
  req.httpVersion = v;
  req.httpVersionMajor = v.charCodeAt(0) - 48;
  req.httpVersionMinor = v.charCodeAt(2) - 48;
  const raw = head.headers;
  req.rawHeaders = raw;
  const headers = {};
  for (let i = 0; i < raw.length; i += 2) req._addHeaderLine(raw[i], raw[i + 1], headers);
  req.headers = headers;
  req._read = readBody;
  req._destroy = destroyRequest;
  if (head.bodyKind === c.BODY_INLINE) ex.inQueue = [head.body];
  else if (head.bodyKind === c.BODY_EMPTY) req.complete = true;

  const res = new http.ServerResponse(req);
  res[kEx] = ex;
  res[kRaw] = null;
  res[kHeadSent] = false;
  res.socket = socket;
  res.writeHead = writeHead;
  res._implicitHeader = implicitHeader;
  res.write = write;
  res.end = end;
  res.addTrailers = addTrailers;
  res.flushHeaders = flushHeaders;

  ex.onDrain = () => res.emit('drain');
  ex.onFinish = (ok) => {
    if (ok) res.emit('finish');
    socket.closed();
    process.nextTick(() => res.emit('close'));
  };
  ex.onCancel = () => {
    res.destroyed = true;
    req.destroy(connReset());
  };
  return [req, res];
}

function connReset() {
  const e = new Error('aborted');
  e.code = 'ECONNRESET';
  return e;
}

/** Runs one exchange through a (req, res) handler. */
export function handleHttp(ex, handler) {
  const [req, res] = toNodePair(ex);
  const result = handler(req, res);
  if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
    result.then(undefined, (e) => {
      console.error(`ferry-worker: handler failed (${req.method} ${req.url}):`, e);
      ex.error(`handler failed: ${e && e.message}`);
    });
  }
}

/**
 * Serves node:http-style requests: `handler(req, res)` as given to
 * http.createServer(), e.g. an Express app. Options: maxInFlight (default 64),
 * initialWindow (default 256 KiB).
 */
export function serveHttp(handler, options = {}) {
  if (typeof handler !== 'function') throw new TypeError('serveHttp() needs a function (req, res) => void');
  const session = new Session((ex) => handleHttp(ex, handler), options);
  return session.start();
}
