// Finding the channel the master gave this process (an already-connected Unix
// socket on the descriptor named by FERRY_FD), and the process-group rules of
// SPEC.md section 10: under ferry, SIGTERM and EOF on the channel both mean "stop
// now, and take everything this worker started with it".
import net from 'node:net';
import { readFileSync } from 'node:fs';

/** Opens the channel as a net.Socket. Throws a clear error outside ferry. */
export function openChannel(env = process.env) {
  const text = env.FERRY_FD;
  if (text === undefined || text === '') {
    throw new Error('FERRY_FD is not set: this program is a ferry worker; run it as `ferry -- node app.js`');
  }
  const fd = Number(text);
  if (!/^\d+$/.test(text)) throw new Error(`FERRY_FD=${JSON.stringify(text)} is not a descriptor number`);
  // Node picks the handle type from the descriptor; a socketpair end is a "PIPE".
  // Anything else (a file, a closed descriptor) fails here rather than mid-request.
  let socket;
  try {
    socket = new net.Socket({ fd, readable: true, writable: true });
  } catch (e) {
    throw new Error(
      `FERRY_FD=${fd} is not the channel socket (${e.message}): run the worker directly, ` +
        'e.g. `ferry -- ./node_modules/.bin/ferry-node app.js`; wrappers such as npx do not pass descriptor 3 on',
    );
  }
  // The master's EOF must not be answered with a half-open wait: we exit on it.
  socket.allowHalfOpen = false;
  return socket;
}

let leader = null;

/**
 * Whether this process leads its own process group, as every worker under ferry
 * does. Node has no getpgrp(), so it is read from /proc/self/stat (field 5, after
 * the parenthesised command name, which may itself hold spaces and parentheses).
 */
export function leadsGroup() {
  if (leader === null) {
    try {
      const stat = readFileSync('/proc/self/stat', 'latin1');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      leader = Number(fields[2]) === process.pid;
    } catch {
      leader = false;
    }
  }
  return leader;
}

/**
 * Ends this process and its whole group at once: process.kill(0, ...) is kill(2)
 * with pid 0, "every process in the caller's group", this one included. Used only
 * when we lead the group; otherwise the group is a shell's or a test runner's, and
 * we just exit.
 */
export function dieWithGroup(code = 0) {
  if (leadsGroup()) {
    try {
      process.kill(0, 'SIGKILL');
    } catch {
      // Cannot happen for our own group; fall through to a plain exit.
    }
  }
  process.exit(code);
}

/**
 * SIGTERM comes from the master only to stop a stuck worker now (graceful stops are
 * Drain on the channel), and from the kernel when the master died. Either way nothing
 * this worker started may outlive it. Unlike the Rust SDK's plain signal handler,
 * Node runs this on the event loop, so a handler that blocks the loop delays it; the
 * master's SIGKILL after --kill-timeout covers that case.
 */
export function installSigterm() {
  if (leadsGroup()) process.on('SIGTERM', () => dieWithGroup(143));
}
