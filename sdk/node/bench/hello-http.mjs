// Benchmark app, node:http-style: `ferry -- node bin/ferry-node.js bench/hello-http.mjs`.
export default (req, res) => res.end('Hello, world!\n');
