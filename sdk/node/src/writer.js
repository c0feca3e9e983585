// The channel's write side: frames from every request are encoded back to back into
// one slab and flushed once per event-loop turn, so under load one write(2) carries
// many frames. Large body data is not copied: it goes out as its own piece of a
// writev. This module owns frame encoding into buffers and the socket's write side.
import { payloadSize, writeFrame, W_BODY_CHUNK } from './codec.js';

const SLAB = 64 * 1024;
// Body data up to this size is copied into the slab (cheaper than a writev piece).
const COPY_MAX = 4096;
// Above this many bytes waiting in the socket, streamed bodies pause (channel backpressure).
const HIGH_WATER = 1024 * 1024;

export class Writer {
  constructor(socket) {
    this.socket = socket;
    this.slab = Buffer.allocUnsafe(SLAB);
    this.start = 0; // first byte of the slab not yet handed to the socket
    this.pos = 0; // end of what is encoded
    this.pieces = [];
    this.scheduled = false;
    this.maxFrameSize = 1 << 20;
    this.closed = false;
    this.flushBound = () => this.flush();
  }

  ensure(n) {
    if (this.slab.length - this.pos < n) {
      this.cut();
      // The old slab stays alive as long as the socket still holds pieces of it.
      this.slab = Buffer.allocUnsafe(Math.max(SLAB, n));
      this.start = this.pos = 0;
    }
  }

  cut() {
    if (this.pos > this.start) {
      this.pieces.push(this.slab.subarray(this.start, this.pos));
      this.start = this.pos;
    }
  }

  /** Queues one message. Throws (sending nothing) if it exceeds the frame limit. */
  frame(msg) {
    const size = payloadSize(msg);
    if (size > this.maxFrameSize) {
      throw new RangeError(`a ${size}-byte frame exceeds the channel's limit of ${this.maxFrameSize}`);
    }
    this.ensure(size + 4);
    this.pos = writeFrame(this.slab, this.pos, msg, size);
    this.schedule();
  }

  /** Queues a body chunk for request `id` (data already sized to fit a frame). */
  chunk(id, data) {
    this.ensure(13 + (data.length <= COPY_MAX ? data.length : 0));
    const slab = this.slab;
    let p = this.pos;
    slab.writeUInt32BE(9 + data.length, p);
    slab[p + 4] = W_BODY_CHUNK;
    slab.writeBigUInt64BE(id, p + 5);
    p += 13;
    if (data.length <= COPY_MAX) {
      slab.set(data, p);
      this.pos = p + data.length;
    } else {
      this.pos = p;
      this.cut();
      this.pieces.push(data);
    }
    this.schedule();
  }

  schedule() {
    if (!this.scheduled) {
      this.scheduled = true;
      // After the current I/O callback and its promise jobs: every response they
      // produced rides in the same write.
      setImmediate(this.flushBound);
    }
  }

  flush(callback) {
    this.scheduled = false;
    this.cut();
    const pieces = this.pieces;
    if (this.closed) return;
    if (pieces.length === 0) {
      if (callback) this.socket.write(Buffer.alloc(0), callback);
      return;
    }
    this.pieces = [];
    const socket = this.socket;
    if (pieces.length === 1) {
      socket.write(pieces[0], callback);
      return;
    }
    socket.cork();
    for (let i = 0; i < pieces.length - 1; i++) socket.write(pieces[i]);
    socket.write(pieces[pieces.length - 1], callback);
    socket.uncork();
  }

  /** Whether streamed bodies should wait for the socket's 'drain'. */
  get congested() {
    return this.socket.writableLength > HIGH_WATER;
  }
}
