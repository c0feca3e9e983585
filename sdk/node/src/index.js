// The public API of the ferry-worker package: fetch-style serve(), node:http-style
// serveHttp(), and the lower-level Session for other adapters.
export { serve } from './fetch.js';
export { serveHttp } from './http.js';
export { Session, Exchange, retire } from './session.js';
