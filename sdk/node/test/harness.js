// Test harness: starts the real `ferry` binary on a free loopback port with Node
// workers, waits for its "ferry listening" log line, and always kills the master's
// whole process group afterwards. Also a fake master (a socketpair on the worker's
// fd 3) for protocol-level tests.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as c from '../src/codec.js';

export const sdkDir = fileURLToPath(new URL('..', import.meta.url));
export const repoDir = path.resolve(sdkDir, '../..');
export const cli = path.join(sdkDir, 'bin/ferry-node.js');
export const appsDir = path.join(sdkDir, 'test/apps');

export function ferryBin() {
  const candidates = [process.env.FERRY_BIN, path.join(repoDir, 'target/debug/ferry')].filter(Boolean);
  for (const p of candidates) if (existsSync(p)) return p;
  throw new Error(
    `no ferry binary: set FERRY_BIN or build ${path.join(repoDir, 'target/debug/ferry')} (tried: ${candidates.join(', ')})`,
  );
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export function tempDir() {
  return mkdtempSync(path.join(os.tmpdir(), 'ferry-node-test-'));
}

const running = new Set();

/** Kills every master still running (registered as an after() hook by the tests). */
export function killAll() {
  for (const m of running) m.kill();
}
process.on('exit', killAll);

/**
 * Starts ferry with `workers` workers running `node bin/ferry-node.js app ...`.
 * Resolves once it logs "ferry listening"; rejects with its log if it exits first.
 */
export async function startFerry({ app, workers = 2, args = [], appArgs = [], env = {}, waitReady = true }) {
  const port = await freePort();
  const argv = ['--listen', `127.0.0.1:${port}`, '--workers', String(workers), ...args, '--', process.execPath, cli, ...appArgs, app];
  const proc = spawn(ferryBin(), argv, {
    detached: true, // its own process group, so teardown can kill workers and all
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, RUST_LOG: 'info', ...env },
  });
  const m = {
    proc,
    port,
    url: `http://127.0.0.1:${port}`,
    log: '',
    exited: null,
    watchers: [],
    kill() {
      running.delete(m);
      try {
        process.kill(-proc.pid, 'SIGKILL');
      } catch {}
    },
    /** Resolves with the log once it matches `re` (tested on every new line). */
    waitLog(re, timeoutMs = 15000) {
      if (re.test(m.log)) return Promise.resolve(m.log);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`timed out waiting for ${re} in the ferry log:\n${m.log}`)), timeoutMs);
        m.watchers.push({ re, resolve: (v) => (clearTimeout(t), resolve(v)), reject: (e) => (clearTimeout(t), reject(e)) });
      });
    },
    /** Resolves with {code, signal} when the master exits. */
    waitExit(timeoutMs = 15000) {
      return new Promise((resolve, reject) => {
        if (m.exited) return resolve(m.exited);
        const t = setTimeout(() => reject(new Error(`ferry did not exit; log:\n${m.log}`)), timeoutMs);
        proc.on('exit', (code, signal) => (clearTimeout(t), resolve({ code, signal })));
      });
    },
  };
  running.add(m);
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d) => {
    m.log += d;
    m.watchers = m.watchers.filter((w) => {
      if (w.re.test(m.log)) {
        w.resolve(m.log);
        return false;
      }
      return true;
    });
  });
  proc.on('exit', (code, signal) => {
    m.exited = { code, signal };
    // Give the stderr pipe a moment to deliver its last lines to the watchers.
    setImmediate(() => {
      for (const w of m.watchers) w.reject(new Error(`ferry exited (${code ?? signal}) before ${w.re}; log:\n${m.log}`));
      m.watchers = [];
    });
  });
  if (waitReady) await m.waitLog(/ferry listening/);
  return m;
}

/** Resolves once `check()` is truthy, polling (for facts that have no event). */
export async function until(check, what, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// ---------------------------------------------------------------- fake master

/**
 * Spawns a worker with fd 3 a socketpair to this process (libuv makes stdio pipes
 * socketpairs), as ferry does, in its own process group. Returns helpers to read
 * and write frames. The handshake is done by the caller (hello(), welcome()).
 */
export function fakeMaster(args, { env = {} } = {}) {
  const proc = spawn(process.execPath, args, {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    env: { ...process.env, FERRY_FD: '3', ...env },
  });
  const sock = proc.stdio[3];
  const frames = [];
  let waiter = null;
  const reader = new c.FrameReader((buf, s, e) => {
    frames.push(c.decodeWorker(buf, s, e));
    if (waiter) waiter();
  }, 16 << 20);
  sock.on('data', (d) => reader.push(d));
  sock.on('error', () => {});
  let stdout = '';
  let stderr = '';
  proc.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
  proc.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  const exit = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const fm = {
    proc,
    sock,
    exit,
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    send(msg) {
      sock.write(c.encode(msg));
    },
    sendRaw(buf) {
      sock.write(buf);
    },
    /** The next frame matching `pred` (removed from the backlog). */
    next(pred = () => true, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => {
          waiter = null;
          reject(new Error(`no matching frame; got ${JSON.stringify(frames, bigintJson)}; stderr: ${stderr}`));
        }, timeoutMs);
        const look = () => {
          const i = frames.findIndex(pred);
          if (i >= 0) {
            clearTimeout(t);
            waiter = null;
            resolve(frames.splice(i, 1)[0]);
          }
        };
        waiter = look;
        look();
      });
    },
    frames,
    kill() {
      try {
        process.kill(-proc.pid, 'SIGKILL');
      } catch {}
    },
  };
  running.add(fm);
  return fm;
}

function bigintJson(_, v) {
  return typeof v === 'bigint' ? `${v}n` : v;
}

/** Does the handshake as a master would; resolves with the Hello. */
export async function handshake(fm, welcome = {}) {
  const hello = await fm.next((m) => m.type === c.HELLO);
  fm.send({ type: c.WELCOME, protocolVersion: 1, workerIndex: 0, maxFrameSize: 1 << 20, maxInFlight: 64, initialWindow: 262144, ...welcome });
  return hello;
}

export function requestHead(id, method, target, extra = {}) {
  return {
    type: c.REQUEST_HEAD,
    id: BigInt(id),
    method,
    target,
    version: 2,
    headers: ['host', 'example.test'],
    peer: '127.0.0.1:5000',
    bodyKind: c.BODY_EMPTY,
    body: null,
    bodyLength: null,
    ...extra,
  };
}
