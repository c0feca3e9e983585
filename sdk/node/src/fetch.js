// Fetch-style handlers: serve(async (request) => new Response(...)). Each request
// becomes a WHATWG Request of Node's own fetch implementation (undici), its body a
// ReadableStream fed under our credits, its signal aborted on Cancel; the returned
// Response (body a ReadableStream, or anything undici accepts: string, Buffer, async
// iterable, ...) goes back under the master's window. This module owns that
// translation; the protocol state lives in session.js.
import { Session } from './session.js';
import * as c from './codec.js';
import { lazyRequest, lightParts, unwrapResponse, GlobalResponse, LightResponse } from './lazy.js';

const NO_BODY = new Set(['GET', 'HEAD']);

/** Builds the absolute URL undici requires from the origin-form target and Host. */
export function requestUrl(head) {
  const target = head.target;
  if (target.charCodeAt(0) === 47 /* / */) {
    let host = 'localhost';
    const hs = head.headers;
    for (let i = 0; i < hs.length; i += 2) {
      const n = hs[i];
      if (n.length === 4 && n.toLowerCase() === 'host') {
        host = hs[i + 1];
        break;
      }
    }
    return `http://${host}${target}`;
  }
  // Absolute form (a proxy-style request) is already a URL; anything else ('*') is
  // given the root so the handler still sees a Request.
  if (/^https?:\/\//i.test(target)) return target;
  return 'http://localhost/';
}

function requestBody(ex) {
  // highWaterMark 0: nothing is taken (so nothing credited) until the app reads.
  return new ReadableStream(
    {
      pull(controller) {
        return new Promise((resolve) => {
          const step = () => {
            let data;
            try {
              data = ex.take();
            } catch (e) {
              ex.onBody = null;
              controller.error(e);
              resolve();
              return;
            }
            if (data === undefined) {
              ex.onBody = step;
              return;
            }
            ex.onBody = null;
            if (data === null) controller.close();
            else controller.enqueue(new Uint8Array(data.buffer, data.byteOffset, data.length));
            resolve();
          };
          step();
        });
      },
    },
    { highWaterMark: 0 },
  );
}

/** The (lazy) Request for one exchange; see lazy.js. */
export function toRequest(ex) {
  const head = ex.head;
  let controller = null;
  const signal = () => (controller ??= new AbortController()).signal;
  // Cancel aborts the signal only if someone asked for it (or the body); an abort
  // nobody can observe is not worth an AbortController per request.
  ex.onCancel = () => {
    if (controller !== null) controller.abort(ex.inError);
  };
  return lazyRequest({
    method: head.method,
    url: () => requestUrl(head),
    headers: () => {
      const headers = new Headers();
      const hs = head.headers;
      for (let i = 0; i < hs.length; i += 2) headers.append(hs[i], hs[i + 1]);
      return headers;
    },
    signal,
    body: () => {
      if (NO_BODY.has(head.method)) return null;
      if (head.bodyKind === c.BODY_INLINE) return head.body;
      if (head.bodyKind === c.BODY_STREAMED) return requestBody(ex);
      return null;
    },
  });
}

/** The response's header list (flat, as the codec wants it) and declared length. */
function responseHeaders(res) {
  const out = [];
  let length = null;
  for (const [name, value] of res.headers) {
    out.push(name, value);
    if (name === 'content-length') {
      const n = Number(value);
      if (Number.isSafeInteger(n) && n >= 0 && /^\d+$/.test(value)) length = n;
    }
  }
  return [out, length];
}

function toBytes(v) {
  if (v instanceof Uint8Array) return v;
  if (typeof v === 'string') return Buffer.from(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  throw new TypeError(`a response body chunk must be bytes, got ${typeof v}`);
}

const NOT_YET = Symbol('not yet');
function nextTurn() {
  return new Promise((resolve) => setImmediate(resolve, NOT_YET));
}

function waitDrain(ex) {
  return new Promise((resolve) => {
    ex.onDrain = resolve;
  });
}

/** Sends a Response: whole bodies inline when small, else streamed under the window. */
export function sendResponse(ex, res) {
  if (ex.finished) return;
  const light = lightParts(res);
  if (light !== null) {
    const body = light.body;
    if (body === null || typeof body === 'string' || body instanceof Uint8Array) {
      ex.respond(light.status, light.headers, body === null ? null : typeof body === 'string' ? Buffer.from(body) : body, declared(light.headers));
      return;
    }
    return sendStream(ex, light.status, light.headers, declared(light.headers), body);
  }
  res = unwrapResponse(res);
  if (!(res instanceof GlobalResponse)) {
    throw new TypeError(`the handler returned ${res === null ? 'null' : typeof res}, not a Response`);
  }
  const [headers, length] = responseHeaders(res);
  return sendStream(ex, res.status, headers, length, res.body);
}

function declared(headers) {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i] === 'content-length') {
      const v = headers[i + 1];
      return /^\d+$/.test(v) && Number.isSafeInteger(Number(v)) ? Number(v) : null;
    }
  }
  return null;
}

async function sendStream(ex, status, headers, length, body) {
  if (body === null) {
    ex.respond(status, headers, null, length);
    return;
  }
  const reader = body.getReader();
  // A Cancel also cancels the response stream, so its source can stop producing
  // (and a read that would never resolve is released).
  const onCancel = ex.onCancel;
  ex.onCancel = () => {
    if (onCancel !== null) onCancel();
    reader.cancel(ex.inError).catch(() => {});
  };
  let complete = false;
  try {
    const first = await reader.read();
    if (ex.finished) return;
    if (first.done) {
      complete = true;
      ex.respond(status, headers, null, length);
      return;
    }
    // A body built from a string or bytes yields one chunk and is then done: it can
    // ride inline with the head. Only a second read that settles at once counts: a
    // stream that sends a chunk and then waits (server-sent events, a slow producer)
    // must get its head and that chunk out now.
    let pending = reader.read();
    const second = await Promise.race([pending, nextTurn()]);
    if (ex.finished) return;
    if (second !== NOT_YET && second.done) {
      complete = true;
      ex.respond(status, headers, toBytes(first.value), length);
      return;
    }
    ex.startStream(status, headers, length);
    let chunk = first;
    for (;;) {
      if (!ex.write(toBytes(chunk.value))) await waitDrain(ex);
      if (ex.finished) return;
      chunk = pending !== null ? await pending : await reader.read();
      pending = null;
      if (ex.finished) return;
      if (chunk.done) break;
    }
    complete = true;
    ex.end();
  } finally {
    // Cut short (cancelled, failed, a length broken): the producer may stop.
    if (!complete) reader.cancel().catch(() => {});
  }
}

/** Runs one exchange through a fetch handler. */
export function handleFetch(ex, handler) {
  const request = toRequest(ex);
  let result;
  try {
    result = handler(request);
  } catch (e) {
    failed(ex, request, e);
    return;
  }
  if (result instanceof GlobalResponse) {
    // Answered synchronously: no promise jobs on the common path.
    try {
      const p = sendResponse(ex, result);
      if (p !== undefined) p.catch((e) => failed(ex, request, e));
    } catch (e) {
      failed(ex, request, e);
    }
    return;
  }
  Promise.resolve(result)
    .then((res) => sendResponse(ex, res))
    .catch((e) => failed(ex, request, e));
}

function failed(ex, request, e) {
  if (ex.cancelled) return; // an abort after Cancel is the expected outcome
  console.error(`ferry-worker: handler failed (${request.method} ${ex.head.target}):`, e);
  ex.error(`handler failed: ${e && e.message}`);
}

/**
 * Serves fetch-style requests: `handler(request)` returns a Response or a promise of
 * one. An object with a fetch method (a Hono app, { fetch }) is accepted too.
 * Options: maxInFlight (default 64), initialWindow (default 256 KiB), lightResponse
 * (default true: globalThis.Response becomes the lazy stand-in of lazy.js).
 */
export function serve(handler, options = {}) {
  const fn = typeof handler === 'function' ? handler : handler && typeof handler.fetch === 'function' ? handler.fetch.bind(handler) : null;
  if (fn === null) throw new TypeError('serve() needs a function (request) => Response, or an object with a fetch method');
  // The light Response stand-in (lazy.js) is installed while serving, unless
  // { lightResponse: false }: then every Response is undici's own, built eagerly.
  if (options.lightResponse !== false) globalThis.Response = LightResponse;
  const session = new Session((ex) => handleFetch(ex, fn), options);
  return session.start();
}
