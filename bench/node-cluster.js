// Node.js baseline for ferry-bench: `node bench/node-cluster.js PORT`.
//
// The primary forks 2 workers with node:cluster (round-robin connection hand-off, the
// Linux default); each worker answers every request with "Hello, world!\n". Only the
// "hello" workload is run against it.
'use strict';

const cluster = require('node:cluster');
const http = require('node:http');

const WORKERS = 2;
const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node bench/node-cluster.js PORT');
  process.exit(2);
}

if (cluster.isPrimary) {
  let listening = 0;
  for (let i = 0; i < WORKERS; i++) cluster.fork();
  cluster.on('listening', () => {
    if (++listening === WORKERS) console.error(`node-cluster: ${WORKERS} workers on port ${port}`);
  });
  // A dead worker makes the numbers meaningless: stop, so the benchmark notices.
  cluster.on('exit', (worker, code, signal) => {
    console.error(`node-cluster: worker ${worker.process.pid} exited (${signal || code})`);
    process.exit(1);
  });
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, () => {
      cluster.removeAllListeners('exit');
      for (const id in cluster.workers) cluster.workers[id].process.kill('SIGKILL');
      process.exit(0);
    });
  }
} else {
  http.createServer((req, res) => res.end('Hello, world!\n')).listen(port);
}
