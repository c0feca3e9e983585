#!/usr/bin/env node
// Hello-world benchmark: ferry + 2 Node workers (fetch-style and node:http-style)
// against node:cluster with 2 workers, all on loopback.
//
//   node bench/run.mjs [--rounds 3] [--duration 5] [--connections 50] [--load auto|wrk|builtin]
//
// Load comes from wrk if installed (apt-get install -y wrk), else from a small
// built-in keep-alive client. The headline is the CPU time per request of the whole
// server process tree: the sum of field 1 of /proc/PID/task/*/schedstat (ns on CPU)
// over every process in the tree, read before and after the load. Rounds are
// interleaved (each server once per round) and the median is reported.
// FERRY_BIN selects the ferry binary (default <repo>/target/release/ferry, then
// target/debug/ferry); a debug build makes the master much slower than release.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const sdk = path.resolve(here, '..');
const repo = path.resolve(sdk, '../..');

const opts = { rounds: 3, duration: 5, connections: 50, load: 'auto' };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, '');
  if (!(k in opts)) {
    console.error('usage: node bench/run.mjs [--rounds N] [--duration SECS] [--connections N] [--load auto|wrk|builtin]');
    process.exit(2);
  }
  opts[k] = k === 'load' ? process.argv[i + 1] : Number(process.argv[i + 1]);
}

function ferryBin() {
  for (const p of [process.env.FERRY_BIN, `${repo}/target/release/ferry`, `${repo}/target/debug/ferry`]) {
    if (p && existsSync(p)) return p;
  }
  throw new Error('no ferry binary: set FERRY_BIN or build target/release/ferry');
}

const hasWrk = (() => {
  if (opts.load === 'builtin') return false;
  try {
    execFileSync('wrk', ['--version'], { stdio: 'ignore' });
    return true;
  } catch (e) {
    return e.status === 1; // wrk --version exits 1 after printing its version
  }
})();

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// ------------------------------------------------------------ process tree CPU

function children() {
  const kids = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'latin1');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid).push(Number(d));
    } catch {}
  }
  return kids;
}

function tree(root) {
  const kids = children();
  const out = [root];
  for (let i = 0; i < out.length; i++) out.push(...(kids.get(out[i]) ?? []));
  return out;
}

/** ns on CPU of every thread of every process in the tree, per pid. */
function treeCpu(root) {
  const per = new Map();
  for (const pid of tree(root)) {
    let ns = 0;
    try {
      for (const t of readdirSync(`/proc/${pid}/task`)) {
        ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'latin1').split(' ')[0]);
      }
    } catch {
      continue;
    }
    per.set(pid, ns);
  }
  return per;
}

function cpuDelta(before, after, root) {
  // Processes started during the load count from zero; the root is reported apart.
  let total = 0;
  let rootNs = 0;
  for (const [pid, ns] of after) {
    const d = ns - (before.get(pid) ?? 0);
    total += d;
    if (pid === root) rootNs = d;
  }
  return { total, rootNs, procs: after.size };
}

// ------------------------------------------------------------ servers and load

async function startServer(kind, port) {
  let cmd;
  let args;
  let ready;
  if (kind === 'cluster') {
    cmd = process.execPath;
    args = [path.join(here, 'cluster.cjs'), String(port)];
    ready = /cluster listening/;
  } else {
    const app = path.join(here, kind === 'ferry-fetch' ? 'hello-fetch.mjs' : 'hello-http.mjs');
    cmd = ferryBin();
    args = ['--listen', `127.0.0.1:${port}`, '--workers', '2', '--', process.execPath, path.join(sdk, 'bin/ferry-node.js'), app];
    ready = /ferry listening/;
  }
  const proc = spawn(cmd, args, { detached: true, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, RUST_LOG: 'warn,ferry::master=info' } });
  let log = '';
  await new Promise((resolve, reject) => {
    proc.stderr.on('data', (d) => {
      log += d;
      if (ready.test(log)) resolve();
    });
    proc.on('exit', (code) => reject(new Error(`${kind} exited ${code}: ${log}`)));
  });
  proc.stderr.resume();
  return proc;
}

function stopServer(proc) {
  try {
    process.kill(-proc.pid, 'SIGKILL');
  } catch {}
}

function runWrk(url, seconds) {
  return new Promise((resolve, reject) => {
    const w = spawn('wrk', ['-t1', `-c${opts.connections}`, `-d${seconds}s`, url], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    w.stdout.on('data', (d) => (out += d));
    w.on('exit', () => {
      const m = out.match(/(\d+) requests in/);
      const errors = out.match(/Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)/);
      if (!m) return reject(new Error(`wrk output: ${out}`));
      resolve({ requests: Number(m[1]), errors: errors ? errors[0] : null });
    });
  });
}

async function runClient(url, seconds) {
  // Keep-alive loops, one per connection: a bounded closed-loop load.
  const agent = new http.Agent({ keepAlive: true, maxSockets: opts.connections });
  const deadline = Date.now() + seconds * 1000;
  let requests = 0;
  let errors = 0;
  const one = () =>
    new Promise((resolve) => {
      http
        .get(url, { agent }, (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode === 200) requests++;
            else errors++;
            resolve();
          });
        })
        .on('error', () => {
          errors++;
          resolve();
        });
    });
  await Promise.all(
    Array.from({ length: opts.connections }, async () => {
      while (Date.now() < deadline) await one();
    }),
  );
  agent.destroy();
  return { requests, errors: errors ? `${errors} errors` : null };
}

async function measure(kind) {
  const port = await freePort();
  const proc = await startServer(kind, port);
  try {
    const url = `http://127.0.0.1:${port}/`;
    const load = hasWrk ? runWrk : runClient;
    await load(url, 1); // warm-up (JIT, connections)
    const before = treeCpu(proc.pid);
    const t0 = process.hrtime.bigint();
    const r = await load(url, opts.duration);
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = cpuDelta(before, treeCpu(proc.pid), proc.pid);
    if (r.errors) console.error(`${kind}: ${r.errors}`);
    return {
      rps: r.requests / secs,
      cpuUs: cpu.total / 1000 / r.requests,
      rootUs: cpu.rootNs / 1000 / r.requests,
      procs: cpu.procs,
    };
  } finally {
    stopServer(proc);
  }
}

const kinds = ['cluster', 'ferry-fetch', 'ferry-http'];
const results = Object.fromEntries(kinds.map((k) => [k, []]));
const bin = ferryBin();
console.log(`ferry: ${bin}${statSync(bin).size > 40e6 ? ' (looks like a debug build: its master is far slower than release)' : ''}`);
console.log(`node ${process.version}, load: ${hasWrk ? 'wrk -t1' : 'built-in client'} -c${opts.connections}, ${opts.duration}s x ${opts.rounds} rounds`);
for (let round = 1; round <= opts.rounds; round++) {
  for (const k of kinds) {
    const r = await measure(k);
    results[k].push(r);
    console.log(`round ${round} ${k.padEnd(12)} ${r.rps.toFixed(0).padStart(7)} req/s  ${r.cpuUs.toFixed(1).padStart(6)} us CPU/req (${r.rootUs.toFixed(1)} in the ${k === 'cluster' ? 'primary' : 'master'}, ${r.procs} processes)`);
  }
}
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const base = { rps: median(results.cluster.map((r) => r.rps)), cpu: median(results.cluster.map((r) => r.cpuUs)) };
console.log('\nmedian           req/s   CPU us/req   req/s vs cluster   CPU/req vs cluster');
for (const k of kinds) {
  const rps = median(results[k].map((r) => r.rps));
  const cpu = median(results[k].map((r) => r.cpuUs));
  console.log(
    `${k.padEnd(12)} ${rps.toFixed(0).padStart(9)} ${cpu.toFixed(1).padStart(12)} ${(rps / base.rps).toFixed(2).padStart(17)}x ${(cpu / base.cpu).toFixed(2).padStart(19)}x`,
  );
}
