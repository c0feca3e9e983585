//! Dispatch: how a request reaches a worker and its response comes back, below the
//! HTTP front and above the processes. Read it bottom-up:
//!
//! - [`pool`]: which worker a request goes to, and the queue of requests waiting
//!   for a slot. A slot is a lease.
//! - [`table`]: the requests in flight on one worker and the protocol's rules for
//!   what the worker sends about them. Each entry owns its request's lease, so the
//!   worker's terminal message for a request is what frees its slot.
//! - [`writer`]: the task that writes one worker's channel, coalescing frames.
//! - [`channel`]: one worker's handle, holding its table under a lock and the queue
//!   to its writer.
//!
//! `pool` and `table` are generic over what they hold, so each depends on nothing
//! above it; `channel` puts them together as `Pool<Channel>` and `Table<Lease<Channel>>`.

pub mod pool;

pub mod table;

pub mod writer;

pub mod channel;
