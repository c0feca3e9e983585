// The wire codec of the ferry worker protocol, version 1 (protocol/SPEC.md): every
// message of both directions, encoded and decoded, plus the frame reassembler.
// This module owns the byte layout and nothing else: no I/O, no state beyond a
// partly received frame.
//
// Representation (chosen for speed, see SPEC.md section 4):
// - u64 fields that can exceed 2^53 (request ids, ping nonces, declared body lengths)
//   are BigInt; u16/u32 fields and u64 lengths/counts (bounded by the frame size)
//   are plain numbers.
// - Header lists are flat arrays [name0, value0, name1, value1, ...] of latin1
//   strings (one char per byte, so any byte sequence round-trips), the same shape as
//   node:http's rawHeaders. Encoders also accept Buffers in place of strings.
// - Bodies are Buffers. Decoded body data and inline bodies are views into the
//   received buffer (no copy).
// - A body is three fields: bodyKind (BODY_EMPTY / BODY_INLINE / BODY_STREAMED),
//   body (Buffer, inline only, else null) and bodyLength (BigInt or null, streamed).
import { isUtf8 } from 'node:buffer';

export const PROTOCOL_VERSION = 1;
export const DEFAULT_MAX_FRAME_SIZE = 1 << 20;
export const DEFAULT_INITIAL_WINDOW = 256 * 1024;
export const LENGTH_PREFIX = 4;
export const BODY_CHUNK_OVERHEAD = 9;
export const CHUNK_MAX = 64 * 1024;

// Message types (SPEC.md 4.1). The high bit is the direction: set for master messages.
export const HELLO = 0x01;
export const RESPONSE_HEAD = 0x02;
export const W_BODY_CHUNK = 0x03;
export const W_BODY_END = 0x04;
export const W_CREDIT = 0x05;
export const REQUEST_FAILED = 0x06;
export const PONG = 0x07;
export const GOODBYE = 0x08;
export const WELCOME = 0x81;
export const REQUEST_HEAD = 0x82;
export const M_BODY_CHUNK = 0x83;
export const M_BODY_END = 0x84;
export const M_CREDIT = 0x85;
export const CANCEL = 0x86;
export const PING = 0x87;
export const DRAIN = 0x88;

export const BODY_EMPTY = 0;
export const BODY_INLINE = 1;
export const BODY_STREAMED = 2;

export const HTTP_VERSIONS = ['0.9', '1.0', '1.1', '2.0', '3.0'];

export class ProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ProtocolError';
  }
}

// ------------------------------------------------------------------ decoding

// A cursor over one payload. Every read checks the bytes remaining in the frame
// before touching them, so a lying length never allocates or reads out of bounds.
class Cursor {
  constructor(buf, pos, end) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }
  need(n) {
    if (n > this.end - this.pos) throw new ProtocolError('a field runs past the end of the frame');
  }
  u8() {
    this.need(1);
    return this.buf[this.pos++];
  }
  u16() {
    this.need(2);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  u32() {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u64() {
    this.need(8);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }
  // A u64 length or count: bounded by the frame, so a plain number. `unit` is the
  // least number of bytes each counted item takes, to check a count up front.
  len(unit) {
    this.need(8);
    const hi = this.buf.readUInt32BE(this.pos);
    const lo = this.buf.readUInt32BE(this.pos + 4);
    this.pos += 8;
    if (hi !== 0 || lo * unit > this.end - this.pos) {
      throw new ProtocolError('a length runs past the end of the frame');
    }
    return lo;
  }
  bytes() {
    const n = this.len(1);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  latin1() {
    const n = this.len(1);
    const s = this.buf.toString('latin1', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
  text() {
    const n = this.len(1);
    const start = this.pos;
    this.pos += n;
    // Buffer#toString would silently replace bad sequences; the spec makes them errors.
    // Scanning for a high byte first keeps the common ASCII case cheap.
    const buf = this.buf;
    for (let i = start; i < this.pos; i++) {
      if (buf[i] >= 0x80) {
        if (!isUtf8(buf.subarray(start, this.pos))) throw new ProtocolError('invalid UTF-8 in a text field');
        return buf.toString('utf8', start, this.pos);
      }
    }
    return buf.toString('latin1', start, this.pos);
  }
  headers() {
    // Each header takes at least 16 bytes (two u64 lengths).
    const count = this.len(16);
    const out = new Array(count * 2);
    for (let i = 0; i < out.length; i += 2) {
      out[i] = this.latin1();
      out[i + 1] = this.latin1();
    }
    return out;
  }
  option64() {
    const tag = this.u8();
    if (tag === 0) return null;
    if (tag === 1) return this.u64();
    throw new ProtocolError(`invalid option byte ${tag}`);
  }
  // BodyKind: sets bodyKind/body/bodyLength on `msg`.
  bodyKind(msg) {
    const kind = this.u32();
    msg.bodyKind = kind;
    msg.body = null;
    msg.bodyLength = null;
    if (kind === BODY_INLINE) msg.body = this.bytes();
    else if (kind === BODY_STREAMED) msg.bodyLength = this.option64();
    else if (kind !== BODY_EMPTY) throw new ProtocolError(`unknown BodyKind variant ${kind}`);
  }
  done() {
    if (this.pos !== this.end) throw new ProtocolError(`${this.end - this.pos} trailing bytes after the message`);
  }
}

function idAt(buf, pos, end) {
  if (end - pos < 9) throw new ProtocolError('a field runs past the end of the frame');
  return buf.readBigUInt64BE(pos + 1);
}

/**
 * Decodes one payload (the bytes after the length prefix) of either direction.
 * `buf[start..end)` is the payload. Throws ProtocolError on anything the spec calls
 * an error. Body chunk data is a view into `buf`.
 */
export function decode(buf, start = 0, end = buf.length) {
  if (end <= start) throw new ProtocolError('zero-length frame');
  const type = buf[start];
  // Body chunks have the raw layout (SPEC.md 4.2): id, then data to the end.
  if (type === M_BODY_CHUNK || type === W_BODY_CHUNK) {
    return { type, id: idAt(buf, start, end), data: buf.subarray(start + 9, end) };
  }
  const c = new Cursor(buf, start + 1, end);
  let msg;
  switch (type) {
    case HELLO:
      msg = {
        type,
        protocolVersion: c.u32(),
        pid: c.u32(),
        maxInFlight: c.u32(),
        initialWindow: c.u32(),
        sdkName: c.text(),
        sdkVersion: c.text(),
      };
      break;
    case RESPONSE_HEAD:
      msg = { type, id: c.u64(), status: c.u16(), headers: c.headers() };
      c.bodyKind(msg);
      break;
    case W_BODY_END:
    case M_BODY_END:
      msg = { type, id: c.u64(), trailers: c.headers() };
      break;
    case W_CREDIT:
    case M_CREDIT:
      msg = { type, id: c.u64(), bytes: c.u32() };
      break;
    case REQUEST_FAILED:
      msg = { type, id: c.u64(), reason: c.text() };
      break;
    case PONG:
      msg = { type, nonce: c.u64(), inFlight: c.u32() };
      break;
    case GOODBYE:
      // The long form (retiring) adds the last accepted id after the reason.
      msg = { type, reason: c.text() };
      if (c.end - c.pos === 8) msg.lastId = c.u64();
      break;
    case WELCOME:
      msg = {
        type,
        protocolVersion: c.u32(),
        workerIndex: c.u32(),
        maxFrameSize: c.u32(),
        maxInFlight: c.u32(),
        initialWindow: c.u32(),
      };
      break;
    case REQUEST_HEAD:
      msg = {
        type,
        id: c.u64(),
        method: c.text(),
        target: c.text(),
        version: c.u32(),
        headers: null,
        peer: null,
      };
      if (msg.version > 4) throw new ProtocolError(`unknown HttpVersion variant ${msg.version}`);
      msg.headers = c.headers();
      msg.peer = c.text();
      c.bodyKind(msg);
      break;
    case CANCEL:
      msg = { type, id: c.u64() };
      break;
    case PING:
      msg = { type, nonce: c.u64() };
      break;
    case DRAIN:
      msg = { type };
      break;
    default:
      throw new ProtocolError(`unknown message type 0x${type.toString(16).padStart(2, '0')}`);
  }
  c.done();
  return msg;
}

/** Decodes a payload that must be a master message (what a worker receives). */
export function decodeMaster(buf, start = 0, end = buf.length) {
  if (end > start && buf[start] < 0x80) {
    throw new ProtocolError(`worker message type 0x${buf[start].toString(16).padStart(2, '0')} from the master`);
  }
  return decode(buf, start, end);
}

/** Decodes a payload that must be a worker message (what the master receives). */
export function decodeWorker(buf, start = 0, end = buf.length) {
  if (end > start && buf[start] >= 0x80) {
    throw new ProtocolError(`master message type 0x${buf[start].toString(16)} from a worker`);
  }
  return decode(buf, start, end);
}

/**
 * Reassembles frames from a byte stream. push(chunk) calls onFrame(buf, start, end)
 * for every complete payload, in order. Frames wholly inside one chunk are handed
 * out as ranges of that chunk (no copy); only a frame split across reads is joined.
 * A length prefix of 0 or over maxFrameSize throws before anything is buffered.
 */
export class FrameReader {
  constructor(onFrame, maxFrameSize = DEFAULT_MAX_FRAME_SIZE) {
    this.onFrame = onFrame;
    this.maxFrameSize = maxFrameSize;
    this.parts = []; // pieces of an incomplete frame
    this.have = 0; // bytes in parts
  }
  push(chunk) {
    if (this.have > 0) {
      this.parts.push(chunk);
      this.have += chunk.length;
      if (this.have < 4) return;
      if (this.parts[0].length < 4) this.parts = [Buffer.concat(this.parts, this.have)];
      const n = this.check(this.parts[0].readUInt32BE(0));
      if (this.have < n + 4) return;
      chunk = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.have);
      this.parts = [];
      this.have = 0;
    }
    let pos = 0;
    const len = chunk.length;
    while (len - pos >= 4) {
      const n = this.check(chunk.readUInt32BE(pos));
      if (len - pos - 4 < n) break;
      this.onFrame(chunk, pos + 4, pos + 4 + n);
      pos += 4 + n;
    }
    if (pos < len) {
      this.parts.push(pos === 0 ? chunk : chunk.subarray(pos));
      this.have = len - pos;
    }
  }
  check(n) {
    if (n === 0) throw new ProtocolError('zero-length frame');
    if (n > this.maxFrameSize) {
      throw new ProtocolError(`frame length ${n} exceeds the maximum frame size ${this.maxFrameSize}`);
    }
    return n;
  }
}

// ------------------------------------------------------------------ encoding

function strLen(s, latin1) {
  if (typeof s !== 'string') return s.length;
  return latin1 ? s.length : Buffer.byteLength(s, 'utf8');
}

function headersLen(hs) {
  let n = 8;
  for (let i = 0; i < hs.length; i++) n += 8 + strLen(hs[i], true);
  return n;
}

function writeLen(buf, pos, n) {
  buf.writeUInt32BE(0, pos);
  buf.writeUInt32BE(n, pos + 4);
  return pos + 8;
}

function writeBlob(buf, pos, s, latin1) {
  if (typeof s !== 'string') {
    pos = writeLen(buf, pos, s.length);
    buf.set(s, pos);
    return pos + s.length;
  }
  if (latin1) {
    pos = writeLen(buf, pos, s.length);
    return pos + buf.write(s, pos, 'latin1');
  }
  const n = buf.write(s, pos + 8, 'utf8');
  writeLen(buf, pos, n);
  return pos + 8 + n;
}

function writeHeaders(buf, pos, hs) {
  if (hs.length % 2 !== 0) throw new TypeError('a header list must hold name/value pairs');
  pos = writeLen(buf, pos, hs.length / 2);
  for (let i = 0; i < hs.length; i++) pos = writeBlob(buf, pos, hs[i], true);
  return pos;
}

function bodyKindLen(msg) {
  const kind = msg.bodyKind ?? BODY_EMPTY;
  if (kind === BODY_INLINE) return 4 + 8 + msg.body.length;
  if (kind === BODY_STREAMED) return msg.bodyLength == null ? 5 : 13;
  return 4;
}

function writeBodyKind(buf, pos, msg) {
  const kind = msg.bodyKind ?? BODY_EMPTY;
  buf.writeUInt32BE(kind, pos);
  pos += 4;
  if (kind === BODY_INLINE) return writeBlob(buf, pos, msg.body, false);
  if (kind === BODY_STREAMED) {
    if (msg.bodyLength == null) {
      buf[pos] = 0;
      return pos + 1;
    }
    buf[pos] = 1;
    buf.writeBigUInt64BE(BigInt(msg.bodyLength), pos + 1);
    return pos + 9;
  }
  return pos;
}

/** The payload size of `msg` (without the 4-byte length prefix). */
export function payloadSize(msg) {
  switch (msg.type) {
    case HELLO:
      return 17 + 8 + strLen(msg.sdkName) + 8 + strLen(msg.sdkVersion);
    case RESPONSE_HEAD:
      return 11 + headersLen(msg.headers) + bodyKindLen(msg);
    case W_BODY_CHUNK:
    case M_BODY_CHUNK:
      return 9 + msg.data.length;
    case W_BODY_END:
    case M_BODY_END:
      return 9 + headersLen(msg.trailers ?? []);
    case W_CREDIT:
    case M_CREDIT:
      return 13;
    case REQUEST_FAILED:
      return 9 + 8 + strLen(msg.reason);
    case PONG:
      return 13;
    case GOODBYE:
      return 1 + 8 + strLen(msg.reason) + (msg.lastId == null ? 0 : 8);
    case WELCOME:
      return 21;
    case REQUEST_HEAD:
      return (
        9 + 8 + strLen(msg.method) + 8 + strLen(msg.target) + 4 + headersLen(msg.headers) + 8 + strLen(msg.peer) + bodyKindLen(msg)
      );
    case CANCEL:
    case PING:
      return 9;
    case DRAIN:
      return 1;
    default:
      throw new TypeError(`unknown message type ${msg.type}`);
  }
}

/**
 * Writes `msg` as a whole frame (length prefix included) at `pos` of `buf`, which
 * must have payloadSize(msg) + 4 bytes free there. Returns the position after it.
 */
export function writeFrame(buf, pos, msg, size = payloadSize(msg)) {
  buf.writeUInt32BE(size, pos);
  const start = pos + 4;
  buf[start] = msg.type;
  pos = start + 1;
  switch (msg.type) {
    case HELLO:
      buf.writeUInt32BE(msg.protocolVersion ?? PROTOCOL_VERSION, pos);
      buf.writeUInt32BE(msg.pid, pos + 4);
      buf.writeUInt32BE(msg.maxInFlight, pos + 8);
      buf.writeUInt32BE(msg.initialWindow, pos + 12);
      pos = writeBlob(buf, pos + 16, msg.sdkName, false);
      pos = writeBlob(buf, pos, msg.sdkVersion, false);
      break;
    case RESPONSE_HEAD:
      buf.writeBigUInt64BE(msg.id, pos);
      buf.writeUInt16BE(msg.status, pos + 8);
      pos = writeHeaders(buf, pos + 10, msg.headers);
      pos = writeBodyKind(buf, pos, msg);
      break;
    case W_BODY_CHUNK:
    case M_BODY_CHUNK:
      buf.writeBigUInt64BE(msg.id, pos);
      buf.set(msg.data, pos + 8);
      pos += 8 + msg.data.length;
      break;
    case W_BODY_END:
    case M_BODY_END:
      buf.writeBigUInt64BE(msg.id, pos);
      pos = writeHeaders(buf, pos + 8, msg.trailers ?? []);
      break;
    case W_CREDIT:
    case M_CREDIT:
      buf.writeBigUInt64BE(msg.id, pos);
      buf.writeUInt32BE(msg.bytes, pos + 8);
      pos += 12;
      break;
    case REQUEST_FAILED:
      buf.writeBigUInt64BE(msg.id, pos);
      pos = writeBlob(buf, pos + 8, msg.reason, false);
      break;
    case PONG:
      buf.writeBigUInt64BE(msg.nonce, pos);
      buf.writeUInt32BE(msg.inFlight, pos + 8);
      pos += 12;
      break;
    case GOODBYE:
      pos = writeBlob(buf, pos, msg.reason, false);
      if (msg.lastId != null) {
        buf.writeBigUInt64BE(BigInt(msg.lastId), pos);
        pos += 8;
      }
      break;
    case WELCOME:
      buf.writeUInt32BE(msg.protocolVersion ?? PROTOCOL_VERSION, pos);
      buf.writeUInt32BE(msg.workerIndex, pos + 4);
      buf.writeUInt32BE(msg.maxFrameSize, pos + 8);
      buf.writeUInt32BE(msg.maxInFlight, pos + 12);
      buf.writeUInt32BE(msg.initialWindow, pos + 16);
      pos += 20;
      break;
    case REQUEST_HEAD:
      buf.writeBigUInt64BE(msg.id, pos);
      pos = writeBlob(buf, pos + 8, msg.method, false);
      pos = writeBlob(buf, pos, msg.target, false);
      buf.writeUInt32BE(msg.version, pos);
      pos = writeHeaders(buf, pos + 4, msg.headers);
      pos = writeBlob(buf, pos, msg.peer, false);
      pos = writeBodyKind(buf, pos, msg);
      break;
    case CANCEL:
      buf.writeBigUInt64BE(msg.id, pos);
      pos += 8;
      break;
    case PING:
      buf.writeBigUInt64BE(msg.nonce, pos);
      pos += 8;
      break;
    case DRAIN:
      break;
  }
  if (pos - start !== size) throw new Error(`codec bug: wrote ${pos - start} bytes of a ${size}-byte payload`);
  return pos;
}

/** Encodes `msg` as one whole frame (length prefix included) in a new Buffer. */
export function encode(msg) {
  const size = payloadSize(msg);
  const buf = Buffer.allocUnsafe(size + 4);
  writeFrame(buf, 0, msg, size);
  return buf;
}
