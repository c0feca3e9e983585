// The codec against protocol/vectors/*.hex, both ways (decode each vector to the
// message its comment describes, encode that message back to the same bytes), and
// the decoding errors SPEC.md section 4.2 and 11 require.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as c from '../src/codec.js';

const vectorsDir = fileURLToPath(new URL('../../../protocol/vectors/', import.meta.url));

function readVector(name) {
  const text = readFileSync(vectorsDir + name, 'utf8');
  const hex = text
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .join('')
    .replace(/\s+/g, '');
  return Buffer.from(hex, 'hex');
}

const B = (s) => Buffer.from(s, 'latin1');

// What each vector holds, transcribed from its first-line comment.
const expected = {
  'm81_welcome.hex': { type: c.WELCOME, protocolVersion: 1, workerIndex: 0, maxFrameSize: 1048576, maxInFlight: 64, initialWindow: 262144 },
  'm82_request_head.hex': {
    type: c.REQUEST_HEAD, id: 1n, method: 'GET', target: '/pid?x=1', version: 2,
    headers: ['host', 'localhost', 'accept', '*/*'], peer: '127.0.0.1:5000',
    bodyKind: c.BODY_EMPTY, body: null, bodyLength: null,
  },
  'm82_request_head_streamed.hex': {
    type: c.REQUEST_HEAD, id: 2n, method: 'POST', target: '/echo', version: 1,
    headers: [], peer: '[::1]:80', bodyKind: c.BODY_STREAMED, body: null, bodyLength: null,
  },
  'm83_body_chunk.hex': { type: c.M_BODY_CHUNK, id: 2n, data: Buffer.from([0x00, 0xff]) },
  'm84_body_end.hex': { type: c.M_BODY_END, id: 2n, trailers: [] },
  'm85_credit.hex': { type: c.M_CREDIT, id: 2n, bytes: 1 },
  'm86_cancel.hex': { type: c.CANCEL, id: 7n },
  'm87_ping.hex': { type: c.PING, nonce: 99n },
  'm88_drain.hex': { type: c.DRAIN },
  'w01_hello.hex': { type: c.HELLO, protocolVersion: 1, pid: 4242, maxInFlight: 64, initialWindow: 65536, sdkName: 'ferry-worker', sdkVersion: '0.1.0' },
  'w02_response_head_empty.hex': {
    type: c.RESPONSE_HEAD, id: 3n, status: 204, headers: ['x-a', '1', 'x-a', '2'],
    bodyKind: c.BODY_EMPTY, body: null, bodyLength: null,
  },
  'w02_response_head_inline.hex': {
    type: c.RESPONSE_HEAD, id: 1n, status: 200, headers: ['content-type', 'text/plain'],
    bodyKind: c.BODY_INLINE, body: B('Hello, world!\n'), bodyLength: null,
  },
  'w02_response_head_streamed.hex': {
    type: c.RESPONSE_HEAD, id: 2n, status: 200, headers: [],
    bodyKind: c.BODY_STREAMED, body: null, bodyLength: 1000n,
  },
  'w03_body_chunk.hex': { type: c.W_BODY_CHUNK, id: 2n, data: B('abc') },
  'w04_body_end.hex': { type: c.W_BODY_END, id: 2n, trailers: ['x-checksum', '9'] },
  'w05_credit.hex': { type: c.W_CREDIT, id: 5n, bytes: 65536 },
  'w06_failed.hex': { type: c.REQUEST_FAILED, id: 6n, reason: 'cancelled' },
  'w07_pong.hex': { type: c.PONG, nonce: 72623859790382856n, inFlight: 3 },
  'w08_goodbye.hex': { type: c.GOODBYE, reason: 'max requests' },
  'w08_goodbye_retire.hex': { type: c.GOODBYE, reason: 'retired', lastId: 7n },
};

test('every vector file is covered', () => {
  const files = readdirSync(vectorsDir).filter((f) => f.endsWith('.hex')).sort();
  assert.deepEqual(files, Object.keys(expected).sort());
});

for (const [name, msg] of Object.entries(expected)) {
  test(`vector ${name}: decodes`, () => {
    const frame = readVector(name);
    assert.equal(frame.readUInt32BE(0), frame.length - 4, 'length prefix');
    const decode = name.startsWith('m') ? c.decodeMaster : c.decodeWorker;
    const got = decode(frame, 4, frame.length);
    assert.deepEqual(got, msg);
  });
  test(`vector ${name}: encodes byte for byte`, () => {
    assert.deepEqual(c.encode(msg), readVector(name));
  });
  test(`vector ${name}: reassembles when split at every byte`, () => {
    const frame = readVector(name);
    for (let cut = 1; cut < frame.length; cut++) {
      const got = [];
      const r = new c.FrameReader((b, s, e) => got.push(c.decode(b, s, e)));
      r.push(frame.subarray(0, cut));
      r.push(Buffer.concat([frame.subarray(cut), frame]));
      assert.equal(got.length, 2);
      assert.deepEqual(got[0], msg);
      assert.deepEqual(got[1], msg);
    }
  });
}

test('encoders accept Buffers for header names and values', () => {
  const msg = { ...expected['w02_response_head_empty.hex'], headers: [B('x-a'), B('1'), 'x-a', B('2')] };
  assert.deepEqual(c.encode(msg), readVector('w02_response_head_empty.hex'));
});

test('non-UTF-8 header bytes round-trip as latin1', () => {
  const msg = { type: c.M_BODY_END, id: 1n, trailers: ['x', '\xff\x00\x80'] };
  const f = c.encode(msg);
  assert.deepEqual(c.decode(f, 4), msg);
});

test('u64 ids above 2^53 survive', () => {
  const msg = { type: c.CANCEL, id: 2n ** 64n - 1n };
  assert.deepEqual(c.decode(c.encode(msg), 4), msg);
});

function payload(name) {
  return readVector(name).subarray(4);
}

test('decoding errors', () => {
  const bad = (buf, re) => assert.throws(() => c.decodeMaster(buf), (e) => e instanceof c.ProtocolError && re.test(e.message));
  bad(Buffer.alloc(0), /zero-length/);
  bad(Buffer.from([0x99]), /unknown message type 0x99/);
  bad(Buffer.from([0x01, 0, 0, 0, 1]), /worker message type/);
  bad(Buffer.concat([payload('m86_cancel.hex'), Buffer.from([0])]), /trailing/);
  bad(payload('m86_cancel.hex').subarray(0, 5), /past the end/);
  bad(Buffer.from([0x88, 0]), /trailing/);
  // A header count far larger than the frame: rejected before allocating.
  const head = Buffer.from(payload('m82_request_head.hex'));
  head.writeUInt32BE(0x7fffffff, 44); // low word of the header count
  bad(head, /past the end/);
  // Unknown HttpVersion, BodyKind, option byte, invalid UTF-8.
  const v = Buffer.from(payload('m82_request_head.hex'));
  v.writeUInt32BE(9, 36);
  bad(v, /HttpVersion/);
  const k = Buffer.from(payload('m82_request_head.hex'));
  k.writeUInt32BE(3, k.length - 4);
  bad(k, /BodyKind/);
  const o = Buffer.from(payload('m82_request_head_streamed.hex'));
  o[o.length - 1] = 2;
  bad(o, /option/);
  const u = Buffer.from(payload('m82_request_head.hex'));
  u[17] = 0xff; // a byte of the method "GET"
  bad(u, /UTF-8/);
});

test('the frame reader rejects a bad length prefix before buffering it', () => {
  const r = new c.FrameReader(() => {}, 1024);
  assert.throws(() => r.push(Buffer.from([0, 0, 4, 1])), /exceeds the maximum frame size 1024/);
  const z = new c.FrameReader(() => {});
  assert.throws(() => z.push(Buffer.from([0, 0, 0, 0])), /zero-length/);
});
