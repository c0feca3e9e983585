// A module with no default, fetch, app or handler export (session.test.js).
export const version = 1;
