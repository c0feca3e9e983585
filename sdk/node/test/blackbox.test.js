// The SDK under the real `ferry` binary, once with a fetch-style app (Hono) and once
// with a node:http-style app (Express), both exported as is and run by ferry-node.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { startFerry, killAll, until, appsDir, tempDir } from './harness.js';

after(killAll);

const apps = {
  'fetch-style (Hono)': path.join(appsDir, 'hono-app.mjs'),
  'node:http-style (Express)': path.join(appsDir, 'express-app.mjs'),
};

/** A GET with node:http, resolving with {status, body (Buffer)}; rejects on reset. */
function get(url, { agent } = {}) {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent }, (res) => {
        const parts = [];
        res.on('data', (d) => parts.push(d));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(parts) }));
        res.on('error', reject);
        res.on('aborted', () => reject(new Error('response aborted')));
      })
      .on('error', reject);
  });
}

const pidOf = async (m) => Number((await get(`${m.url}/pid`)).body.toString());

for (const [name, app] of Object.entries(apps)) {
  describe(name, () => {
    const dir = tempDir();
    const env = { FERRY_TEST_DIR: dir };
    let m; // 2 workers
    let one; // 1 worker: everything on one event loop
    before(async () => {
      [m, one] = await Promise.all([
        startFerry({ app, workers: 2, env }),
        startFerry({ app, workers: 1, env, args: ['--cancel-grace', '2s'] }),
      ]);
    });
    after(() => {
      m?.kill();
      one?.kill();
    });

    test('hello', async () => {
      const r = await get(`${m.url}/`);
      assert.equal(r.status, 200);
      assert.equal(r.body.toString(), 'Hello, world!\n');
      assert.match(r.headers['content-type'], /^text\/plain/);
      assert.equal(r.headers['content-length'], '14');
    });

    test('HEAD gets no body', async () => {
      const r = await new Promise((resolve, reject) =>
        http
          .request(`${m.url}/`, { method: 'HEAD' }, (res) => {
            const parts = [];
            res.on('data', (d) => parts.push(d));
            res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(parts) }));
          })
          .on('error', reject)
          .end(),
      );
      assert.equal(r.status, 200);
      assert.equal(r.body.length, 0);
      // Express sets Content-Length for HEAD itself; Hono answers HEAD with a null body.
      if (name.includes('Express')) assert.equal(r.headers['content-length'], '14');
    });

    test('5 MiB echo comes back byte for byte', async () => {
      const data = randomBytes(5 << 20);
      const res = await fetch(`${m.url}/echo`, { method: 'POST', body: data });
      assert.equal(res.status, 200);
      const back = Buffer.from(await res.arrayBuffer());
      assert.equal(back.length, data.length);
      assert.ok(back.equals(data), 'echoed bytes differ');
    });

    test('streamed download', async () => {
      const n = 80; // 5 MiB in 64 KiB chunks
      const r = await get(`${m.url}/stream?n=${n}`);
      assert.equal(r.status, 200);
      assert.equal(r.body.length, n * 65536);
      for (let i = 0; i < n; i++) assert.equal(r.body[i * 65536 + 1000], i % 256, `chunk ${i}`);
    });

    test('50 concurrent slow requests on one worker finish together', async () => {
      const t0 = Date.now();
      const done = await Promise.all(
        Array.from({ length: 50 }, () => get(`${one.url}/slow?ms=800`).then((r) => ({ r, t: Date.now() - t0 }))),
      );
      for (const { r } of done) assert.equal(r.body.toString(), 'slow done\n');
      const times = done.map((d) => d.t);
      // One at a time would take 40 s; together they take one delay.
      assert.ok(Math.max(...times) < 3000, `slowest took ${Math.max(...times)} ms`);
      assert.ok(Math.max(...times) - Math.min(...times) < 1000, `spread ${Math.max(...times) - Math.min(...times)} ms`);
    });

    test('a client disconnect reaches the handler (request.signal / res close)', async () => {
      const tag = `dc${Date.now()}`;
      const req = http.get(`${one.url}/wait?tag=${tag}`);
      req.on('error', () => {});
      await until(() => existsSync(`${dir}/started-${tag}`), 'the handler to start');
      req.destroy();
      await until(() => existsSync(`${dir}/aborted-${tag}`), 'the handler to see the abort');
      if (name.startsWith('fetch')) assert.equal(readFileSync(`${dir}/aborted-${tag}`, 'utf8'), 'AbortError\n');
      // The cancellation was confirmed in time: the worker is still the same one.
      const r = await get(`${one.url}/`);
      assert.equal(r.status, 200);
    });

    test('a handler that throws gets a 500 and the worker keeps serving', async () => {
      const pid = await pidOf(one);
      const r = await get(`${one.url}/throw`);
      assert.equal(r.status, 500);
      assert.equal((await get(`${one.url}/`)).status, 200);
      assert.equal(await pidOf(one), pid);
      assert.match(one.log, /intentional handler failure/);
    });

    if (name.includes('Express')) {
      test('res.end() or writeHead() that throws (bad status, a chunk that is not bytes, CR/LF in a header) still gets a 500', async () => {
        const pid = await pidOf(one);
        for (const path of ['/badstatus', '/badchunk', '/badheader', '/wideheader']) {
          const r = await get(`${one.url}${path}`);
          assert.equal(r.status, 500, path);
          assert.equal(r.headers['x-ok'], undefined, path);
        }
        assert.equal((await get(`${one.url}/`)).status, 200);
        assert.equal(await pidOf(one), pid);
      });
    }

    test('a body that breaks its Content-Length fails that request only', async () => {
      const pid = await pidOf(one);
      const outcome = await get(`${one.url}/badlength`).then(
        (r) => `status ${r.status}, ${r.body.length} bytes`,
        (e) => `error ${e.message}`,
      );
      // Either the client gets an error status or its response is cut short; never
      // 100 bytes it was promised.
      assert.ok(!/status 200, 100 bytes/.test(outcome), outcome);
      assert.equal((await get(`${one.url}/`)).status, 200);
      assert.equal(await pidOf(one), pid, 'the worker was not killed for it');
      assert.doesNotMatch(one.log, /protocol violation/i);
    });

    test('SIGHUP reload with zero failed requests', async () => {
      const r = await startFerry({ app, workers: 2, env });
      try {
        const before = new Set([await pidOf(r), await pidOf(r), await pidOf(r)]);
        const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
        let ok = 0;
        const failures = [];
        let stop = false;
        const loop = async () => {
          while (!stop) {
            try {
              const res = await get(`${r.url}/pid`, { agent });
              if (res.status === 200) ok++;
              else failures.push(`status ${res.status}`);
            } catch (e) {
              failures.push(e.message);
            }
          }
        };
        const loops = Array.from({ length: 4 }, loop);
        await until(() => ok > 50, 'load to flow');
        const started = (r.log.match(/worker started/g) || []).length;
        process.kill(r.proc.pid, 'SIGHUP');
        // Both slots replaced: two more workers started, and only new pids answer.
        await until(() => (r.log.match(/worker started/g) || []).length >= started + 2, 'two replacement workers', 20000);
        await until(async () => {
          const pids = [await pidOf(r), await pidOf(r), await pidOf(r), await pidOf(r)];
          return pids.every((p) => !before.has(p));
        }, 'only new workers to answer', 20000);
        const atReload = ok;
        await until(() => ok > atReload + 50, 'load to flow after the reload');
        stop = true;
        await Promise.all(loops);
        agent.destroy();
        assert.deepEqual(failures, []);
      } finally {
        r.kill();
      }
    });

    test('workers that retire under load lose no request', async () => {
      // No retries of idempotent requests: what was on its way to a retiring worker
      // comes back by the retirement's own rule.
      const r = await startFerry({ app, workers: 2, env, args: ['--retry-idempotent', 'false'] });
      try {
        const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
        const failures = [];
        const loop = async (client) => {
          for (let i = 0; i < 60; i++) {
            const path = (client + i) % 30 === 0 ? '/retire' : '/pid';
            try {
              const res = await get(`${r.url}${path}`, { agent });
              if (res.status !== 200) failures.push(`status ${res.status}`);
            } catch (e) {
              failures.push(e.message);
            }
          }
        };
        await Promise.all(Array.from({ length: 4 }, (_, n) => loop(n)));
        agent.destroy();
        assert.deepEqual(failures, [], r.log);
        await until(() => (r.log.match(/worker says goodbye: retired/g) || []).length >= 4, 'four retirements');
        assert.match(r.log, /recycling worker: it retires \(retired\)/);
        assert.doesNotMatch(r.log, /restarting in/);
      } finally {
        r.kill();
      }
    });

    test('SIGTERM drains: the in-flight request completes, ferry exits 0', async () => {
      const d = await startFerry({ app, workers: 2, env });
      try {
        const tag = `drain${Date.now()}`;
        const pending = get(`${d.url}/slow?ms=700&tag=${tag}`);
        await until(() => existsSync(`${dir}/started-${tag}`), 'the slow request to start');
        process.kill(d.proc.pid, 'SIGTERM');
        const r = await pending;
        assert.equal(r.status, 200);
        assert.equal(r.body.toString(), 'slow done\n');
        const exit = await d.waitExit();
        assert.deepEqual(exit, { code: 0, signal: null }, d.log);
      } finally {
        d.kill();
      }
    });
  });
}

describe('node:http-style details (Express)', () => {
  let m;
  const dir = tempDir();
  before(async () => {
    m = await startFerry({ app: apps['node:http-style (Express)'], workers: 1, env: { FERRY_TEST_DIR: dir } });
  });
  after(() => m?.kill());

  test('req carries method, url, headers, httpVersion, peer address', async () => {
    const res = await new Promise((resolve, reject) => {
      http
        .get(`${m.url}/info?a=1&b=x`, { headers: { 'x-a': ['1', '2'] } }, (r) => {
          let s = '';
          r.on('data', (d) => (s += d));
          r.on('end', () => resolve(JSON.parse(s)));
        })
        .on('error', reject);
    });
    assert.deepEqual(res, {
      ip: '127.0.0.1',
      protocol: 'http',
      query: { a: '1', b: 'x' },
      xa: '1, 2',
      httpVersion: '1.1',
      url: '/info?a=1&b=x',
    });
  });

  test('express.json() reads the request body', async () => {
    const res = await fetch(`${m.url}/json`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ a: [1, 2], s: 'é' }),
    });
    assert.deepEqual(await res.json(), { got: { a: [1, 2], s: 'é' } });
  });

  test('writeHead(status, headers) then end(data)', async () => {
    const r = await get(`${m.url}/writehead`);
    assert.equal(r.status, 201);
    assert.equal(r.headers['x-a'], '1');
    assert.equal(r.body.toString(), 'made\n');
  });

  test('res.sendFile streams a file with backpressure', async () => {
    const data = randomBytes(3 << 20);
    writeFileSync(`${dir}/big.bin`, data);
    const r = await get(`${m.url}/file`);
    assert.equal(r.status, 200);
    assert.ok(r.body.equals(data));
  });

  test('404 from Express itself', async () => {
    const r = await get(`${m.url}/nope`);
    assert.equal(r.status, 404);
    assert.match(r.body.toString(), /Cannot GET \/nope/);
  });
});

describe('fetch-style details (Hono)', () => {
  let m;
  before(async () => {
    m = await startFerry({ app: apps['fetch-style (Hono)'], workers: 1, env: { FERRY_TEST_DIR: tempDir() } });
  });
  after(() => m?.kill());

  test('c.json with status and headers', async () => {
    const res = await fetch(`${m.url}/json?q=z`);
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('x-a'), '1');
    assert.match(res.headers.get('content-type'), /^application\/json/);
    assert.deepEqual(await res.json(), { a: [1, 2], q: 'z' });
  });

  test("a real undici Response (Response.json) is sent too", async () => {
    const res = await fetch(`${m.url}/real`);
    assert.deepEqual(await res.json(), { real: true });
  });

  test('c.req.json() reads the request body', async () => {
    const res = await fetch(`${m.url}/parse`, { method: 'POST', body: JSON.stringify({ s: 'é', n: [1] }) });
    assert.deepEqual(await res.json(), { got: { s: 'é', n: [1] } });
  });
});

test('a handler module that fails to load is a start failure with its error', async () => {
  const m = await startFerry({ app: path.join(appsDir, 'broken.mjs'), workers: 1, waitReady: false, args: ['--start-timeout', '10s'] });
  try {
    const exit = await m.waitExit(20000);
    assert.notEqual(exit.code, 0);
    assert.match(m.log, /intentional load failure in broken\.mjs/);
  } finally {
    m.kill();
  }
});
