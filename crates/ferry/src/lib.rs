//! The `ferry` master. The binary (`main.rs`) only parses options and starts the
//! runtime; everything else lives here, public so that benchmarks and tests can
//! drive the real code. It is not a stable API.
//!
//! Modules, in the order a request meets them: [`front`] (HTTP), [`proxy`] (one
//! request's exchange), [`pool`] (which worker), [`channel`] (the worker's channel),
//! [`body`] (the response body). Workers: [`spawn`] (starting processes), [`worker`]
//! (one process's life), [`slot`] (restarts and replacement), [`slots`] (the set of
//! slots: pool size, reload, stop), [`master`] (top level, signals), [`config`] (options).
//! Observing it: [`stats`] (counters, live workers), [`admin`] (`/status`, `/metrics`).

pub mod admin;
pub mod body;
pub mod channel;
pub mod config;
pub mod front;
pub mod master;
pub mod pool;
pub mod proxy;
pub mod slot;
pub mod slots;
pub mod spawn;
pub mod stats;
pub mod worker;
