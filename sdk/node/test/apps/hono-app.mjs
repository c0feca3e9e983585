// The fetch-style test app: a Hono app, exported as is (ferry-node serves app.fetch).
// Routes shared with express-app.mjs; see test/blackbox.test.js.
import { Hono } from 'hono';
import { appendFileSync } from 'node:fs';
import { retire } from '../../src/index.js';
import { setTimeout as sleep } from 'node:timers/promises';

const dir = process.env.FERRY_TEST_DIR;
const app = new Hono();

app.get('/', (c) => c.text('Hello, world!\n'));
app.get('/pid', (c) => c.text(String(process.pid)));
app.get('/retire', (c) => {
  retire();
  return c.text(String(process.pid));
});
app.post('/echo', (c) => new Response(c.req.raw.body, { headers: { 'content-type': 'application/octet-stream' } }));
app.get('/stream', (c) => {
  // n chunks of 64 KiB, chunk i filled with byte i % 256, produced on demand.
  const n = Number(c.req.query('n') ?? 16);
  let i = 0;
  const body = new ReadableStream({
    pull(controller) {
      if (i === n) return controller.close();
      controller.enqueue(new Uint8Array(65536).fill(i++ % 256));
    },
  });
  return new Response(body, { headers: { 'content-type': 'application/octet-stream' } });
});
app.get('/slow', async (c) => {
  if (c.req.query('tag')) appendFileSync(`${dir}/started-${c.req.query('tag')}`, 'started\n');
  await sleep(Number(c.req.query('ms') ?? 500));
  return c.text('slow done\n');
});
app.get('/wait', async (c) => {
  // Never answers; records the abort of request.signal when the client leaves.
  const signal = c.req.raw.signal;
  const tag = c.req.query('tag');
  appendFileSync(`${dir}/started-${tag}`, 'started\n');
  await new Promise((resolve) => signal.addEventListener('abort', resolve));
  appendFileSync(`${dir}/aborted-${tag}`, `${signal.reason && signal.reason.name}\n`);
  return c.text('too late\n');
});
app.get('/json', (c) => c.json({ a: [1, 2], q: c.req.query('q') }, 201, { 'x-a': '1' }));
app.get('/real', () => Response.json({ real: true }));
app.post('/parse', async (c) => c.json({ got: await c.req.json() }));
app.get('/throw', () => {
  throw new Error('intentional handler failure');
});
app.get('/badlength', () => {
  const body = new ReadableStream({
    start(controller) {
      controller.enqueue(new TextEncoder().encode('only ten b'));
      controller.close();
    },
  });
  return new Response(body, { headers: { 'content-length': '100' } });
});
app.onError((err) => {
  // Re-thrown so that the SDK's own "handler throws -> 500" path is what is tested.
  throw err;
});

export default app;
