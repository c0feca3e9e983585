// Benchmark baseline: node:cluster with 2 workers (round-robin hand-off, the Linux
// default), each answering "Hello, world!\n" with node:http. Same as the repository's
// bench/node-cluster.js. Usage: node bench/cluster.cjs PORT
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');
const port = Number(process.argv[2]);
if (cluster.isPrimary) {
  let listening = 0;
  for (let i = 0; i < 2; i++) cluster.fork();
  cluster.on('listening', () => {
    if (++listening === 2) console.error(`cluster listening on ${port}`);
  });
  cluster.on('exit', () => process.exit(1));
} else {
  http.createServer((req, res) => res.end('Hello, world!\n')).listen(port, '127.0.0.1');
}
