#!/usr/bin/env node
// Worker-side cost alone: drives one Node worker (bench/hello-fetch.mjs or
// hello-http.mjs through bin/ferry-node.js) from a fake master on its fd 3, with
// `--in-flight` requests always outstanding, and reports the worker's CPU time per
// request (schedstat, all threads) and its request rate. No HTTP and no ferry binary:
// this is what a worker costs on top of whatever master drives it.
//
//   node bench/worker-only.mjs [--style fetch|http] [--seconds 5] [--in-flight 50]
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as c from '../src/codec.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const opts = { style: 'fetch', seconds: 5, 'in-flight': 50 };
for (let i = 2; i < process.argv.length; i += 2) opts[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const inFlight = Number(opts['in-flight']);

const app = path.join(here, opts.style === 'http' ? 'hello-http.mjs' : 'hello-fetch.mjs');
const proc = spawn(process.execPath, [path.join(here, '../bin/ferry-node.js'), app], {
  stdio: ['ignore', 'inherit', 'inherit', 'pipe'],
  env: { ...process.env, FERRY_FD: '3' },
});
const sock = proc.stdio[3];

function cpuNs(pid) {
  let ns = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'latin1').split(' ')[0]);
  return ns;
}

// A request as ferry sends it for `wrk`: GET / with a Host header.
const template = c.encode({
  type: c.REQUEST_HEAD, id: 0n, method: 'GET', target: '/', version: 2,
  headers: ['host', '127.0.0.1:8080'], peer: '127.0.0.1:40000',
  bodyKind: c.BODY_EMPTY, body: null, bodyLength: null,
});
let nextId = 1n;
function send(n) {
  const buf = Buffer.allocUnsafe(template.length * n);
  for (let i = 0; i < n; i++) {
    template.copy(buf, i * template.length);
    buf.writeBigUInt64BE(nextId++, i * template.length + 5);
  }
  sock.write(buf);
}

let done = 0;
let welcomed = false;
let measuring = false;
const reader = new c.FrameReader((b, s, e) => {
  const type = b[s];
  if (!welcomed) {
    welcomed = true;
    sock.write(c.encode({ type: c.WELCOME, protocolVersion: 1, workerIndex: 0, maxFrameSize: 1 << 20, maxInFlight: 64, initialWindow: 262144 }));
    setTimeout(start, 300);
    return;
  }
  if (type === c.RESPONSE_HEAD || type === c.W_BODY_END || type === c.REQUEST_FAILED) {
    done++;
    pending++;
  }
});
let pending = 0;
sock.on('data', (d) => {
  reader.push(d);
  // Refill what was answered, in one write, as the master's coalescing writer would.
  if (pending > 0 && sending) {
    send(pending);
    pending = 0;
  }
});
let sending = false;

function start() {
  sending = true;
  send(inFlight);
  setTimeout(() => {
    // Warm-up over: measure.
    const d0 = done;
    const c0 = cpuNs(proc.pid);
    const t0 = process.hrtime.bigint();
    setTimeout(() => {
      const n = done - d0;
      const secs = Number(process.hrtime.bigint() - t0) / 1e9;
      const us = (cpuNs(proc.pid) - c0) / 1000 / n;
      console.log(`${opts.style}-style worker: ${(n / secs).toFixed(0)} req/s, ${us.toFixed(2)} us CPU per request (in flight ${inFlight})`);
      proc.kill('SIGKILL');
      process.exit(0);
    }, Number(opts.seconds) * 1000);
  }, 1000);
}
