//! The `ferry` master. The binary (`main.rs`) only parses options and starts the
//! runtime; everything else lives here, public so that benchmarks and tests can
//! drive the real code. It is not a stable API.
//!
//! Modules, in the order a request meets them: [`listen`] (the listening sockets:
//! bound, inherited, accepted on; [`sockfile`] their files), [`front`] (HTTP connections),
//! [`proxy`] (one request's exchange), [`head`] (its head frame), [`dispatch`] (the pool, the table of requests
//! in flight on each worker, its channel and writer), [`body`] (the response body
//! back to the client), [`activity`] (whether the client keeps up), [`access_log`] (a line per response). The workers behind it: [`worker`] (one process's handshake
//! and supervision), [`spawn`] (forking a process), [`process`] (signals, memory,
//! exit statuses), [`slot`] (restarts and replacement), [`slots`] (the set of slots:
//! pool size, reload, stop). Holding it together: [`master`] (the top: binds,
//! signals), [`control`] (the control socket), [`ctl`] (`ferry ctl`, its client), [`ctx`] (what every part shares), [`config`] (options), [`sync`]
//! (locks that survive a panic). Observing it:
//! [`stats`] (counters, live workers), [`events`] (lifecycle events), [`admin`] (`/status`, `/metrics`).
//!
//! The arrows between modules run one way (`tests/layout.rs` fails on a cycle):
//! `master` uses everything; `front` → `proxy` → `body` → `dispatch`; `slots` →
//! `slot` → `worker` → `dispatch`, `spawn`, `process`; most use `ctx`, which uses
//! only `dispatch`, `spawn`, `stats`, `process` and `config`.

// The request's path, in order. (Blank lines keep rustfmt from sorting them.)
pub mod listen;

pub mod sockfile;

pub mod front;

pub mod client_io;

pub mod proxy;

pub mod head;

pub mod dispatch;

pub mod body;

pub mod activity;

pub mod access_log;

// The workers behind it.
pub mod worker;

pub mod spawn;

pub mod process;

pub mod slot;

pub mod slots;

pub mod scaler;

pub mod notify;

pub mod privilege;

// Holding it together.
pub mod master;

pub mod upgrade;

pub mod control;

pub mod ctl;

pub mod ctx;

pub mod config;

pub mod sync;

// Observing it.
pub mod stats;

pub mod events;

pub mod admin;
