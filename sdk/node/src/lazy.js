// Lazy WHATWG Request and Response objects. Constructing undici's Request and
// Response costs tens of microseconds each in Node 20 (WebIDL conversions, a
// ReadableStream per body), several times the cost of the rest of a request under
// ferry. Most handlers only read request.method/url/headers and return
// new Response(string | bytes | stream, init), so both are stand-ins that:
// - are `instanceof` Node's own Request / Response (their prototypes chain to them);
// - answer the common properties directly (method, url, headers, signal; status,
//   ok, headers);
// - build the real undici object the first time anything else is touched (body,
//   json(), clone(), ...) and delegate to it from then on, so behaviour is Node's own.
// This module owns that materialization. The same technique is what @hono/node-server
// uses; the Response stand-in replaces globalThis.Response only while serve() runs,
// and serve(handler, { lightResponse: false }) keeps Node's own.

export const GlobalRequest = globalThis.Request;
export const GlobalResponse = globalThis.Response;

const kReal = Symbol('ferry.real');
const kInit = Symbol('ferry.init');
const kHeaders = Symbol('ferry.headers');
const kUrl = Symbol('ferry.url');
const kSignal = Symbol('ferry.signal');
/** Present (true) on a LightResponse that has not been materialized. */
export const kLight = Symbol('ferry.light');
const kBody = Symbol('ferry.body');

function delegate(proto, target, skip, real) {
  for (const [key, d] of Object.entries(Object.getOwnPropertyDescriptors(target.prototype))) {
    if (skip.has(key) || key === 'constructor') continue;
    if (d.get) {
      Object.defineProperty(proto, key, {
        configurable: true,
        enumerable: d.enumerable,
        get() {
          return real(this)[key];
        },
      });
    } else if (typeof d.value === 'function') {
      Object.defineProperty(proto, key, {
        configurable: true,
        writable: true,
        enumerable: d.enumerable,
        value(...args) {
          return real(this)[key](...args);
        },
      });
    }
  }
  Object.setPrototypeOf(proto, target.prototype);
}

// ---------------------------------------------------------------- Request

/**
 * A Request for `init` = { method, url(), headers(), signal(), body() }, each a
 * thunk run only when needed. The real Request is built on first use of the rest.
 */
function realRequest(r) {
  let real = r[kReal];
  if (real === undefined) {
    const init = r[kInit];
    const options = { method: init.method, headers: r.headers, signal: r.signal };
    const body = init.body();
    if (body !== null) {
      options.body = body;
      options.duplex = 'half';
    }
    real = new GlobalRequest(r.url, options);
    r[kReal] = real;
  }
  return real;
}

const requestProto = {
  get method() {
    return this[kInit].method;
  },
  get url() {
    return (this[kUrl] ??= this[kInit].url());
  },
  get headers() {
    return (this[kHeaders] ??= this[kInit].headers());
  },
  get signal() {
    return (this[kSignal] ??= this[kInit].signal());
  },
};
delegate(requestProto, GlobalRequest, new Set(['method', 'url', 'headers', 'signal']), realRequest);
Object.defineProperty(requestProto, Symbol.toStringTag, { value: 'Request', configurable: true });

export function lazyRequest(init) {
  const r = Object.create(requestProto);
  r[kInit] = init;
  return r;
}

// ---------------------------------------------------------------- Response

const DEFAULT_TEXT_TYPE = 'text/plain;charset=UTF-8';

function realResponse(r) {
  let real = r[kReal];
  if (real === undefined) {
    const init = r[kInit];
    const headers = r[kHeaders];
    real = new GlobalResponse(r[kBody], headers === undefined ? init : { ...init, headers });
    r[kReal] = real;
    r[kLight] = false;
  }
  return real;
}

function plainInit(init) {
  if (init === undefined || init === null) return true;
  if (typeof init !== 'object') return false;
  const s = init.status;
  return s === undefined || (Number.isInteger(s) && s >= 200 && s <= 599);
}

/**
 * The stand-in for globalThis.Response. Bodies it can send without undici (string,
 * bytes, ReadableStream, none) stay light; anything else is materialized at once.
 */
export function LightResponse(body = null, init = undefined) {
  if (!new.target) throw new TypeError("Class constructor Response cannot be invoked without 'new'");
  this[kBody] = body;
  this[kInit] = init;
  const light =
    plainInit(init) &&
    (body === null ||
      typeof body === 'string' ||
      body instanceof Uint8Array ||
      (typeof body === 'object' && typeof body.getReader === 'function'));
  this[kLight] = light;
  if (!light) realResponse(this);
}

const responseProto = LightResponse.prototype;
Object.defineProperties(responseProto, {
  status: {
    configurable: true,
    get() {
      return this[kLight] ? (this[kInit]?.status ?? 200) : realResponse(this).status;
    },
  },
  ok: {
    configurable: true,
    get() {
      const s = this.status;
      return s >= 200 && s <= 299;
    },
  },
  headers: {
    configurable: true,
    get() {
      if (!this[kLight]) return realResponse(this).headers;
      let h = this[kHeaders];
      if (h === undefined) {
        h = new Headers(this[kInit]?.headers);
        if (typeof this[kBody] === 'string' && !h.has('content-type')) h.set('content-type', DEFAULT_TEXT_TYPE);
        this[kHeaders] = h;
      }
      return h;
    },
  },
});
delegate(responseProto, GlobalResponse, new Set(['status', 'ok', 'headers']), realResponse);
Object.defineProperty(responseProto, Symbol.toStringTag, { value: 'Response', configurable: true });
Object.setPrototypeOf(LightResponse, GlobalResponse); // Response.json(), .redirect(), .error()
// Real responses (from fetch(), Response.json()) are Responses too.
Object.defineProperty(LightResponse, Symbol.hasInstance, {
  value: (x) => x instanceof GlobalResponse,
});

const CRLFNUL = /[\r\n\0]/;

/**
 * What a light response sends, without building the undici object:
 * { status, headers (flat list), body } or null when it must go the general way.
 */
export function lightParts(res) {
  if (res === null || typeof res !== "object" || res[kLight] !== true) return null;
  const init = res[kInit];
  const body = res[kBody];
  const out = [];
  let hasType = false;
  const h = res[kHeaders] ?? init?.headers;
  if (h !== undefined && h !== null) {
    if (h instanceof Headers) {
      for (const [k, v] of h) out.push(k, v);
      hasType = res[kHeaders] !== undefined || h.has('content-type');
    } else if (Array.isArray(h)) {
      for (const pair of h) {
        if (!Array.isArray(pair) || pair.length !== 2) return null;
        out.push(String(pair[0]).toLowerCase(), String(pair[1]).trim());
      }
    } else if (typeof h === 'object') {
      for (const k in h) out.push(k.toLowerCase(), String(h[k]).trim());
    } else return null;
    for (let i = 0; i < out.length; i++) {
      if (CRLFNUL.test(out[i])) return null; // let undici reject it properly
      if (i % 2 === 0 && out[i] === 'content-type') hasType = true;
    }
  }
  if (typeof body === 'string' && !hasType) out.push('content-type', DEFAULT_TEXT_TYPE);
  return { status: init?.status ?? 200, headers: out, body };
}

/** The real Response behind a (materialized) LightResponse, or `res` itself. */
export function unwrapResponse(res) {
  return res !== null && typeof res === 'object' && res[kReal] !== undefined ? res[kReal] : res;
}
