// The session against a fake master speaking the protocol over the worker's fd 3:
// handshake, heartbeats, flow control both ways, Cancel, Drain/Goodbye, the group
// kill on EOF and SIGTERM, and the worker's answer to frames it cannot decode.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as c from '../src/codec.js';
import { fakeMaster, handshake, requestHead, appsDir, cli, killAll, until } from './harness.js';

after(killAll);

const app = path.join(appsDir, 'raw-fetch.mjs');
const worker = (extra = []) => fakeMaster([cli, ...extra, app]);
const text = (buf) => Buffer.from(buf).toString();

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('hello, welcome, an inline response, ping/pong', async () => {
  const fm = worker();
  const hello = await handshake(fm);
  assert.equal(hello.protocolVersion, 1);
  assert.equal(hello.pid, fm.proc.pid);
  assert.equal(hello.maxInFlight, 64);
  assert.equal(hello.initialWindow, 262144);
  assert.equal(hello.sdkName, 'ferry-worker-node');
  fm.send(requestHead(1, 'GET', '/hello'));
  const head = await fm.next((m) => m.type === c.RESPONSE_HEAD);
  assert.equal(head.id, 1n);
  assert.equal(head.status, 200);
  assert.equal(head.bodyKind, c.BODY_INLINE);
  assert.equal(text(head.body), 'Hello, world!\n');
  assert.deepEqual(head.headers, ['content-type', 'text/plain']);
  fm.send({ type: c.PING, nonce: 2n ** 63n + 5n });
  const pong = await fm.next((m) => m.type === c.PONG);
  assert.deepEqual(pong, { type: c.PONG, nonce: 2n ** 63n + 5n, inFlight: 0 });
  fm.kill();
});

test('--max-in-flight is announced; repeated response headers stay separate', async () => {
  const fm = worker(['--max-in-flight', '3']);
  const hello = await handshake(fm);
  assert.equal(hello.maxInFlight, 3);
  fm.send(requestHead(1, 'GET', '/headers', { headers: ['host', 'h', 'x-a', '1', 'x-a', '2'] }));
  const head = await fm.next((m) => m.type === c.RESPONSE_HEAD);
  const hs = head.headers;
  assert.deepEqual(hs.filter((_, i) => i % 2 === 0 && hs[i] === 'set-cookie').length, 2);
  assert.deepEqual(JSON.parse(text(head.body)), [['host', 'h'], ['x-a', '1, 2']]);
  fm.kill();
});

test('a response body waits for the master window and resumes on Credit', async () => {
  const fm = worker();
  await handshake(fm, { initialWindow: 1000 });
  fm.send(requestHead(1, 'GET', '/big'));
  const head = await fm.next((m) => m.type === c.RESPONSE_HEAD);
  assert.equal(head.bodyKind, c.BODY_STREAMED);
  assert.equal(head.bodyLength, 200000n);
  let got = 0;
  while (got < 1000) got += (await fm.next((m) => m.type === c.W_BODY_CHUNK)).data.length;
  assert.equal(got, 1000);
  // A ping round trip as a barrier: nothing beyond the window may have been sent.
  fm.send({ type: c.PING, nonce: 1n });
  await fm.next((m) => m.type === c.PONG);
  assert.equal(fm.frames.filter((m) => m.type === c.W_BODY_CHUNK).length, 0);
  fm.send({ type: c.M_CREDIT, id: 1n, bytes: 199000 });
  let end = null;
  while (end === null) {
    const m = await fm.next((f) => f.id === 1n);
    if (m.type === c.W_BODY_CHUNK) {
      assert.ok(m.data.length <= 65536);
      assert.ok(m.data.every((b) => b === 7));
      got += m.data.length;
    } else end = m;
  }
  assert.equal(end.type, c.W_BODY_END);
  assert.equal(got, 200000);
  fm.kill();
});

test('request body: credits are granted as the handler consumes, never overrun', async () => {
  const fm = worker();
  const hello = await handshake(fm);
  fm.send(requestHead(1, 'POST', '/count', { bodyKind: c.BODY_STREAMED }));
  const total = 1 << 20;
  let window = hello.initialWindow;
  let sent = 0;
  let credits = 0;
  while (sent < total) {
    while (window > 0 && sent < total) {
      const n = Math.min(65536, window, total - sent);
      fm.send({ type: c.M_BODY_CHUNK, id: 1n, data: Buffer.alloc(n, 1) });
      window -= n;
      sent += n;
    }
    if (sent < total) {
      const cr = await fm.next((m) => m.type === c.W_CREDIT);
      assert.equal(cr.id, 1n);
      window += cr.bytes;
      credits++;
    }
  }
  fm.send({ type: c.M_BODY_END, id: 1n, trailers: [] });
  const head = await fm.next((m) => m.type === c.RESPONSE_HEAD);
  assert.equal(text(head.body), String(total));
  assert.ok(credits >= 3, `credits batched but flowing (${credits})`);
  fm.kill();
});

test("body chunks do not expose the channel read (other requests' frames)", async () => {
  const fm = worker();
  await handshake(fm);
  // Two requests and their bodies in one write, so one read holds all of them.
  fm.sendRaw(
    Buffer.concat([
      c.encode(requestHead(1, 'POST', '/own', { bodyKind: c.BODY_STREAMED })),
      c.encode({ type: c.M_BODY_CHUNK, id: 1n, data: Buffer.from('secret of 1') }),
      c.encode(requestHead(2, 'POST', '/own', { bodyKind: c.BODY_STREAMED })),
      c.encode({ type: c.M_BODY_CHUNK, id: 2n, data: Buffer.from('body of 2') }),
      c.encode({ type: c.M_BODY_END, id: 1n, trailers: [] }),
      c.encode({ type: c.M_BODY_END, id: 2n, trailers: [] }),
    ]),
  );
  for (const id of [1n, 2n]) assert.equal(text((await fm.next((m) => m.id === id)).body), 'true');
  fm.kill();
});

test('Cancel aborts request.signal and is confirmed; late frames for the id are ignored', async () => {
  const fm = worker();
  await handshake(fm);
  fm.send(requestHead(7, 'GET', '/wait'));
  fm.send({ type: c.PING, nonce: 1n });
  assert.equal((await fm.next((m) => m.type === c.PONG)).inFlight, 1);
  fm.send({ type: c.CANCEL, id: 7n });
  const failed = await fm.next((m) => m.id === 7n);
  assert.deepEqual(failed, { type: c.REQUEST_FAILED, id: 7n, reason: 'cancelled' });
  await until(() => fm.stdout.includes('aborted'), 'the handler to see the abort');
  // Crossing frames, a second Cancel, an unknown id: all silently ignored.
  fm.send({ type: c.M_CREDIT, id: 7n, bytes: 10 });
  fm.send({ type: c.M_BODY_CHUNK, id: 7n, data: Buffer.from('x') });
  fm.send({ type: c.M_BODY_END, id: 7n, trailers: [] });
  fm.send({ type: c.CANCEL, id: 7n });
  fm.send({ type: c.CANCEL, id: 99n });
  fm.send(requestHead(8, 'GET', '/hello'));
  const head = await fm.next((m) => m.type === c.RESPONSE_HEAD);
  assert.equal(head.id, 8n);
  fm.send({ type: c.PING, nonce: 2n });
  await fm.next((m) => m.type === c.PONG);
  assert.deepEqual(fm.frames, [], 'nothing more was sent for request 7');
  fm.kill();
});

test('Cancel while the handler reads the request body ends its read; nothing more is sent', async () => {
  const fm = worker();
  await handshake(fm);
  fm.send(requestHead(1, 'POST', '/count', { bodyKind: c.BODY_STREAMED }));
  fm.send({ type: c.M_BODY_CHUNK, id: 1n, data: Buffer.alloc(1000, 1) });
  fm.send({ type: c.PING, nonce: 1n });
  assert.equal((await fm.next((m) => m.type === c.PONG)).inFlight, 1);
  fm.send({ type: c.CANCEL, id: 1n });
  assert.deepEqual(await fm.next((m) => m.id === 1n), { type: c.REQUEST_FAILED, id: 1n, reason: 'cancelled' });
  fm.send({ type: c.M_BODY_CHUNK, id: 1n, data: Buffer.alloc(10, 1) });
  fm.send(requestHead(2, 'GET', '/hello'));
  assert.equal((await fm.next((m) => m.id === 2n)).status, 200);
  fm.send({ type: c.PING, nonce: 2n });
  assert.equal((await fm.next((m) => m.type === c.PONG)).inFlight, 0);
  assert.deepEqual(fm.frames, [], 'nothing more for request 1');
  assert.doesNotMatch(fm.stderr, /handler failed/, 'an abort after Cancel is not an error');
  fm.kill();
});

test('Cancel during a streamed response cancels the response stream', async () => {
  const fm = worker();
  await handshake(fm);
  fm.send(requestHead(3, 'GET', '/never'));
  const head = await fm.next((m) => m.type === c.RESPONSE_HEAD);
  assert.equal(head.bodyKind, c.BODY_STREAMED);
  assert.equal(text((await fm.next((m) => m.type === c.W_BODY_CHUNK)).data), 'first');
  fm.send({ type: c.CANCEL, id: 3n });
  assert.deepEqual(await fm.next((m) => m.id === 3n), { type: c.REQUEST_FAILED, id: 3n, reason: 'cancelled' });
  await until(() => fm.stdout.includes('stream cancelled: AbortError'), 'the stream source to be cancelled');
  fm.kill();
});

test('an empty body with a Content-Length: fine for HEAD, a failure otherwise', async () => {
  const fm = worker();
  await handshake(fm);
  fm.send(requestHead(1, 'HEAD', '/lenzero'));
  const head = await fm.next((m) => m.id === 1n);
  assert.equal(head.type, c.RESPONSE_HEAD);
  assert.equal(head.bodyKind, c.BODY_EMPTY);
  assert.deepEqual(head.headers, ['content-length', '5']);
  fm.send(requestHead(2, 'GET', '/lenzero'));
  const failed = await fm.next((m) => m.id === 2n);
  assert.equal(failed.type, c.REQUEST_FAILED);
  assert.match(failed.reason, /0 bytes but its declared length is 5/);
  fm.kill();
});

test('Drain: in-flight requests finish, then Goodbye and exit 0', async () => {
  const fm = worker();
  await handshake(fm);
  fm.send(requestHead(1, 'POST', '/count', { bodyKind: c.BODY_STREAMED, bodyLength: 3n }));
  fm.send({ type: c.DRAIN });
  fm.send({ type: c.PING, nonce: 1n });
  assert.equal((await fm.next((m) => m.type === c.PONG)).inFlight, 1, 'still serving while draining');
  fm.send({ type: c.M_BODY_CHUNK, id: 1n, data: Buffer.from('abc') });
  fm.send({ type: c.M_BODY_END, id: 1n, trailers: [] });
  const head = await fm.next((m) => m.type === c.RESPONSE_HEAD);
  assert.equal(text(head.body), '3');
  assert.deepEqual(await fm.next((m) => m.type === c.GOODBYE), { type: c.GOODBYE, reason: 'drained' });
  assert.deepEqual(await fm.exit, { code: 0, signal: null });
});

test('EOF on the channel kills the whole process group', async () => {
  const fm = worker();
  await handshake(fm);
  fm.send(requestHead(1, 'GET', '/spawn'));
  const pid = Number(text((await fm.next((m) => m.type === c.RESPONSE_HEAD)).body));
  assert.ok(alive(pid));
  fm.sock.destroy();
  const exit = await fm.exit;
  assert.equal(exit.signal, 'SIGKILL', 'the worker killed its own group, itself included');
  await until(() => !alive(pid), 'the grandchild to die');
});

test('the channel descriptor is close-on-exec: processes the worker starts do not inherit it', async () => {
  const fm = worker();
  await handshake(fm);
  fm.send(requestHead(1, 'GET', '/cloexec'));
  const flags = parseInt(text((await fm.next((m) => m.type === c.RESPONSE_HEAD)).body), 8);
  assert.ok(flags & 0o2000000, `O_CLOEXEC set (flags ${flags.toString(8)})`);
  fm.kill();
});

test('SIGTERM kills the whole process group', async () => {
  const fm = worker();
  await handshake(fm);
  fm.send(requestHead(1, 'GET', '/spawn'));
  const pid = Number(text((await fm.next((m) => m.type === c.RESPONSE_HEAD)).body));
  fm.proc.kill('SIGTERM');
  assert.equal((await fm.exit).signal, 'SIGKILL');
  await until(() => !alive(pid), 'the grandchild to die');
});

test('a frame that does not decode ends the worker with a clear message', async () => {
  const fm = worker();
  await handshake(fm);
  fm.sendRaw(Buffer.from([0, 0, 0, 2, 0x99, 0]));
  const exit = await fm.exit;
  assert.equal(exit.code, 1);
  assert.match(fm.stderr, /bad frame from the master: ProtocolError: unknown message type 0x99/);
});

test('a RequestHead for an id still in flight ends the worker: a second answer would break the one-terminal rule', async () => {
  const fm = worker();
  await handshake(fm);
  fm.send(requestHead(1, 'GET', '/wait'));
  fm.send(requestHead(1, 'GET', '/hello'));
  const exit = await fm.exit;
  assert.equal(exit.code, 1);
  assert.match(fm.stderr, /a RequestHead for request 1, still in flight/);
  assert.deepEqual(fm.frames.filter((m) => m.id === 1n), [], 'no answer for request 1');
});

test('a RequestHead over the in-flight limit fails alone; the others are served', async () => {
  const fm = worker(['--max-in-flight', '2']);
  await handshake(fm);
  fm.send(requestHead(1, 'GET', '/wait'));
  fm.send(requestHead(2, 'GET', '/wait'));
  fm.send(requestHead(3, 'GET', '/hello'));
  const failed = await fm.next((m) => m.id === 3n);
  assert.deepEqual(failed, { type: c.REQUEST_FAILED, id: 3n, reason: 'worker over its in-flight limit' });
  fm.send({ type: c.CANCEL, id: 1n });
  assert.equal((await fm.next((m) => m.id === 1n)).type, c.REQUEST_FAILED);
  fm.send(requestHead(4, 'GET', '/hello'));
  assert.equal((await fm.next((m) => m.id === 4n)).status, 200);
  fm.kill();
});

test('a listener that throws on a frame from the master fails its own request, not the worker', async () => {
  const fm = fakeMaster([cli, '--http', path.join(appsDir, 'raw-http.mjs')]);
  await handshake(fm);
  fm.send(requestHead(1, 'GET', '/aborted-throws'));
  fm.send(requestHead(2, 'POST', '/data-throws', { bodyKind: c.BODY_STREAMED }));
  fm.send({ type: c.PING, nonce: 1n });
  assert.equal((await fm.next((m) => m.type === c.PONG)).inFlight, 2);
  fm.send({ type: c.CANCEL, id: 1n });
  assert.deepEqual(await fm.next((m) => m.id === 1n), { type: c.REQUEST_FAILED, id: 1n, reason: 'cancelled' });
  fm.send({ type: c.M_BODY_CHUNK, id: 2n, data: Buffer.from('x') });
  assert.deepEqual(await fm.next((m) => m.id === 2n), {
    type: c.REQUEST_FAILED,
    id: 2n,
    reason: 'the application raised an exception',
  });
  fm.send(requestHead(3, 'GET', '/'));
  assert.equal(text((await fm.next((m) => m.id === 3n)).body), 'ok\n');
  assert.match(fm.stderr, /listener boom \(aborted\)/);
  assert.match(fm.stderr, /listener boom \(data\)/);
  fm.kill();
});

test('a response stream that errors after the head went out fails that request only', async () => {
  const fm = worker();
  await handshake(fm);
  fm.send(requestHead(1, 'GET', '/midway'));
  const head = await fm.next((m) => m.id === 1n);
  assert.equal(head.bodyKind, c.BODY_STREAMED);
  const chunk = await fm.next((m) => m.id === 1n);
  assert.equal(text(chunk.data), 'part');
  assert.equal((await fm.next((m) => m.id === 1n)).type, c.REQUEST_FAILED);
  fm.send(requestHead(2, 'GET', '/hello'));
  assert.equal((await fm.next((m) => m.id === 2n)).status, 200);
  fm.kill();
});

test('a streamed body that runs past its Content-Length fails that request before the extra bytes', async () => {
  const fm = worker();
  await handshake(fm);
  fm.send(requestHead(1, 'GET', '/overrun'));
  const head = await fm.next((m) => m.id === 1n);
  assert.equal(head.bodyLength, 100000n);
  let sent = 0;
  for (;;) {
    const m = await fm.next((f) => f.id === 1n);
    if (m.type === c.W_BODY_CHUNK) sent += m.data.length;
    else {
      assert.equal(m.type, c.REQUEST_FAILED);
      assert.match(m.reason, /past/);
      break;
    }
  }
  assert.ok(sent <= 100000, `${sent} bytes sent of 100000 declared`);
  fm.send(requestHead(2, 'GET', '/hello'));
  assert.equal((await fm.next((m) => m.id === 2n)).status, 200);
  fm.kill();
});

test('a response head too big for a frame is a 500 and the worker serves on', async () => {
  const fm = worker();
  await handshake(fm, { maxFrameSize: 4096 });
  fm.send(requestHead(1, 'GET', '/bigheader?n=3000'));
  const ok = await fm.next((m) => m.id === 1n);
  assert.equal(ok.status, 200);
  let id = 2n;
  for (const path of ['/bigheader?n=8000', '/bigstream?n=8000']) {
    fm.send(requestHead(id, 'GET', path));
    const head = await fm.next((m) => m.id === id);
    assert.deepEqual([head.type, head.status], [c.RESPONSE_HEAD, 500], path);
    id++;
  }
  fm.send(requestHead(id, 'GET', '/hello'));
  assert.equal((await fm.next((m) => m.id === id)).status, 200);
  fm.send({ type: c.PING, nonce: 1n });
  await fm.next((m) => m.type === c.PONG);
  assert.deepEqual(fm.frames, [], 'nothing more for the failed requests');
  fm.kill();
});

test('a length prefix over the frame limit ends the worker before buffering it', async () => {
  const fm = worker();
  await handshake(fm, { maxFrameSize: 4096 });
  fm.sendRaw(Buffer.from([0, 0, 0x10, 0x01]));
  assert.equal((await fm.exit).code, 1);
  assert.match(fm.stderr, /frame length 4097 exceeds the maximum frame size 4096/);
});

test('a Welcome of another protocol version ends the worker', async () => {
  const fm = worker();
  await handshake(fm, { protocolVersion: 2 });
  assert.equal((await fm.exit).code, 1);
  assert.match(fm.stderr, /protocol version mismatch: ours 1, the master's 2/);
});

for (const [fd, says] of [
  ['three', /FERRY_FD="three" is not a descriptor number/],
  ['0', /FERRY_FD=0 is not the channel socket/],
]) {
  test(`FERRY_FD=${fd}: the worker says what is wrong and exits 1`, async () => {
    const fm = fakeMaster([cli, app], { env: { FERRY_FD: fd } });
    assert.equal((await fm.exit).code, 1);
    assert.match(fm.stderr, says);
  });
}

for (const [args, code, says] of [
  [[], 2, /usage: ferry-node/],
  [['--max-in-flight', 'lots', 'x.mjs'], 2, /usage: ferry-node/],
  [[path.join(appsDir, 'broken.mjs'), 'extra'], 2, /usage: ferry-node/],
]) {
  test(`ferry-node ${args.join(' ') || '(no module)'}: usage, exit ${code}`, async () => {
    const fm = fakeMaster([cli, ...args]);
    assert.equal((await fm.exit).code, code);
    assert.match(fm.stderr, says);
  });
}

test('a module that exports nothing servable is a start failure that says so', async () => {
  const fm = fakeMaster([cli, path.join(appsDir, 'exports-nothing.mjs')]);
  assert.equal((await fm.exit).code, 1);
  assert.match(fm.stderr, /exports no default, fetch, app or handler/);
});

test('a first frame that is not Welcome ends the worker', async () => {
  const fm = worker();
  const hello = await fm.next((m) => m.type === c.HELLO);
  assert.equal(hello.type, c.HELLO);
  fm.send({ type: c.PING, nonce: 1n });
  assert.equal((await fm.exit).code, 1);
  assert.match(fm.stderr, /expected Welcome from the master, got message type 0x87/);
});

test('outside ferry (no FERRY_FD) the worker says how to run it', async () => {
  const fm = fakeMaster([cli, app], { env: { FERRY_FD: '' } });
  const exit = await fm.exit;
  assert.equal(exit.code, 1);
  assert.match(fm.stderr, /FERRY_FD/);
});
