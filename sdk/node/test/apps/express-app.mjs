// The node:http-style test app: an Express app, exported as is (ferry-node passes
// it to serveHttp). Routes shared with hono-app.mjs; see test/blackbox.test.js.
import express from 'express';
import { appendFileSync } from 'node:fs';
import { retire } from '../../src/index.js';

const dir = process.env.FERRY_TEST_DIR;
const app = express();

app.get('/', (req, res) => res.type('text/plain').send('Hello, world!\n'));
app.get('/pid', (req, res) => res.type('text/plain').send(String(process.pid)));
app.get('/retire', (req, res) => {
  retire();
  res.type('text/plain').send(String(process.pid));
});
app.get('/info', (req, res) =>
  res.json({ ip: req.ip, protocol: req.protocol, query: req.query, xa: req.headers['x-a'], httpVersion: req.httpVersion, url: req.url }),
);
app.post('/echo', (req, res) => {
  res.setHeader('content-type', 'application/octet-stream');
  req.pipe(res);
});
app.post('/json', express.json(), (req, res) => res.json({ got: req.body }));
app.get('/stream', (req, res) => {
  // n chunks of 64 KiB, chunk i filled with byte i % 256, written with backpressure.
  const n = Number(req.query.n ?? 16);
  res.setHeader('content-type', 'application/octet-stream');
  let i = 0;
  const more = () => {
    while (i < n) {
      const ok = res.write(Buffer.alloc(65536, i++ % 256));
      if (!ok) return res.once('drain', more);
    }
    res.end();
  };
  more();
});
app.get('/slow', (req, res) => {
  if (req.query.tag) appendFileSync(`${dir}/started-${req.query.tag}`, 'started\n');
  setTimeout(() => res.type('text/plain').send('slow done\n'), Number(req.query.ms ?? 500));
});
app.get('/wait', (req, res) => {
  // Never answers; records that the response was closed unfinished when the client left.
  appendFileSync(`${dir}/started-${req.query.tag}`, 'started\n');
  res.on('close', () => {
    if (!res.writableFinished) appendFileSync(`${dir}/aborted-${req.query.tag}`, 'close\n');
  });
});
app.get('/writehead', (req, res) => {
  res.writeHead(201, { 'x-a': '1', 'content-type': 'text/plain' });
  res.end('made\n');
});
app.get('/file', (req, res) => res.sendFile(`${dir}/big.bin`));
app.get('/throw', () => {
  throw new Error('intentional handler failure');
});
// end() throws before the response counts as finished: Express's error handler
// still answers 500 (node:http does the same).
app.get('/badstatus', (req, res) => {
  res.statusCode = 5000;
  res.end('never');
});
app.get('/badchunk', (req, res) => res.end({ not: 'bytes' }));
// Header text that would break the frame's rule (no CR, LF, NUL; nothing past
// U+00FF, which latin-1 would fold into CR/LF): writeHead throws, as setHeader does.
app.get('/badheader', (req, res) => res.writeHead(200, [['x-ok', '1'], ['x-a', 'a\r\nb']]).end('no'));
app.get('/wideheader', (req, res) => res.writeHead(200, ['x-a', 'a\u010d\u010ab']).end('no'));
app.get('/badlength', (req, res) => {
  res.setHeader('content-length', '100');
  res.write('only ten b');
  res.end();
});

export default app;
