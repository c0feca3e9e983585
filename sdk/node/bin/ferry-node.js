#!/usr/bin/env node
// ferry-node: runs an application module as a ferry worker, so an app needs no ferry
// code of its own:  ferry --workers 4 -- ./node_modules/.bin/ferry-node app.js
// (not through npx, which does not pass descriptor 3 on)
//
// The module's default export (or its `fetch`/`app`/`handler` export) is served:
// - an object with a fetch method (a Hono app, { fetch }) or a function taking one
//   argument: fetch-style, serve();
// - a function taking (req, res) (an Express or Connect app, a createServer
//   callback): node:http-style, serveHttp().
// --fetch / --http force the style; --max-in-flight N sets the announced limit.
// The module is loaded before the handshake: one that fails to load exits 1 with its
// error, which ferry reports as a start failure with the stderr tail.
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import { serve, serveHttp } from '../src/index.js';

const usage = 'usage: ferry-node [--fetch|--http] [--max-in-flight N] MODULE';
const args = process.argv.slice(2);
let style = null;
let maxInFlight;
let file = null;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--fetch' || a === '--http') style = a.slice(2);
  else if (a === '--max-in-flight') maxInFlight = Number(args[++i]);
  else if (a === '-h' || a === '--help') {
    console.log(usage);
    process.exit(0);
  } else if (file === null) file = a;
  else {
    console.error(usage);
    process.exit(2);
  }
}
if (file === null || (maxInFlight !== undefined && !(Number.isInteger(maxInFlight) && maxInFlight > 0))) {
  console.error(usage);
  process.exit(2);
}

let mod;
try {
  mod = await import(pathToFileURL(path.resolve(file)).href);
} catch (e) {
  console.error(`ferry-node: cannot load ${file}:`, e);
  process.exit(1);
}
const app = mod.default ?? mod.fetch ?? mod.app ?? mod.handler;
if (app === undefined || app === null) {
  console.error(`ferry-node: ${file} exports no default, fetch, app or handler`);
  process.exit(1);
}
if (style === null) {
  // Express apps are functions of (req, res, next); fetch handlers take (request).
  style = typeof app === 'function' && app.length >= 2 ? 'http' : 'fetch';
}
const options = maxInFlight ? { maxInFlight } : {};
try {
  await (style === 'http' ? serveHttp(app, options) : serve(app, options));
} catch (e) {
  console.error(`ferry-node: ${e.message}`);
  process.exit(1);
}
