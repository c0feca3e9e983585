// The lazy Request and light Response stand-ins (src/lazy.js): they are Node's own
// Request/Response to their users, fast paths included.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lazyRequest, LightResponse, lightParts, GlobalRequest, GlobalResponse, unwrapResponse } from '../src/lazy.js';

function request(extra = {}) {
  let built = 0;
  const r = lazyRequest({
    method: 'POST',
    url: () => 'http://h.test/a?b=1',
    headers: () => {
      built++;
      return new Headers([['content-type', 'application/json']]);
    },
    signal: () => new AbortController().signal,
    body: () => Buffer.from('{"x":1}'),
    ...extra,
  });
  return { r, built: () => built };
}

test('a lazy Request is a Request, with its fast properties', async () => {
  const { r, built } = request();
  assert.ok(r instanceof GlobalRequest);
  assert.equal(Object.prototype.toString.call(r), '[object Request]');
  assert.equal(r.method, 'POST');
  assert.equal(r.url, 'http://h.test/a?b=1');
  assert.equal(built(), 0, 'headers are built only when asked for');
  assert.equal(r.headers.get('content-type'), 'application/json');
  assert.equal(r.headers, r.headers);
  assert.equal(built(), 1);
  assert.equal(r.signal.aborted, false);
});

test('a lazy Request materializes for everything else', async () => {
  const { r } = request();
  assert.deepEqual(await r.json(), { x: 1 });
  assert.equal(r.bodyUsed, true);
  assert.equal(r.redirect, 'follow');
  const { r: r2 } = request();
  const copy = r2.clone();
  assert.equal(await copy.text(), '{"x":1}');
  assert.equal(await new Response(r2.body).text(), '{"x":1}');
});

test('a light Response is a Response; real ones are too', async () => {
  const res = new LightResponse('hi', { status: 201, headers: { 'X-A': '1' } });
  assert.ok(res instanceof GlobalResponse);
  assert.ok(res instanceof LightResponse);
  assert.ok(Response.json({}) instanceof LightResponse, 'static methods inherited');
  assert.ok(new GlobalResponse('x') instanceof LightResponse);
  assert.equal(res.status, 201);
  assert.equal(res.ok, true);
  assert.deepEqual(lightParts(res), { status: 201, headers: ['x-a', '1', 'content-type', 'text/plain;charset=UTF-8'], body: 'hi' });
  assert.equal(res.headers.get('x-a'), '1');
  res.headers.set('x-b', '2');
  assert.deepEqual(lightParts(res).headers, ['content-type', 'text/plain;charset=UTF-8', 'x-a', '1', 'x-b', '2']);
});

test('a light Response materializes for everything else, keeping header changes', async () => {
  const res = new LightResponse('hello', { headers: [['x-a', '1']] });
  res.headers.append('x-b', '2');
  assert.equal(await res.text(), 'hello');
  assert.equal(lightParts(res), null, 'no longer light once its body is used');
  const real = unwrapResponse(res);
  assert.ok(real instanceof GlobalResponse && real !== res);
  assert.equal(real.headers.get('x-b'), '2');
  assert.equal(res.statusText, '');
});

test('bodies and inits it cannot send directly go to undici at once', () => {
  assert.equal(lightParts(new LightResponse(new URLSearchParams('a=1'))), null);
  assert.throws(() => new LightResponse('x', { status: 99 }), RangeError);
  assert.equal(lightParts(new LightResponse(null, { status: 204 })).body, null);
  const bytes = new Uint8Array([1, 2]);
  assert.equal(lightParts(new LightResponse(bytes)).body, bytes);
  assert.deepEqual(lightParts(new LightResponse(bytes)).headers, []);
});
