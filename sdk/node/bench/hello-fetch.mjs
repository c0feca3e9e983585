// Benchmark app, fetch-style: `ferry -- node bin/ferry-node.js bench/hello-fetch.mjs`.
export default () => new Response('Hello, world!\n');
