//! What the admin endpoint (`admin.rs`) reports: counters the master keeps as it
//! works, and the registry of live workers. Counting is a relaxed atomic add, so
//! the hot path pays next to nothing for it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tracing_appender::non_blocking::ErrorCounter;

use crate::dispatch::channel::Channel;
use crate::sync::lock;

pub struct Stats {
    pub started: Instant,
    /// Responses the proxy produced, by status class: 1xx to 5xx.
    responses: [AtomicU64; 5],
    /// Workers that completed their handshake.
    pub worker_starts: AtomicU64,
    /// Workers that ended, for whatever reason (drained, crashed, killed).
    pub worker_exits: AtomicU64,
    /// Every worker between its handshake and its reaping, by pid.
    workers: Mutex<BTreeMap<u32, Arc<Channel>>>,
    /// Log lines dropped because stderr did not keep up (set once by `main.rs`).
    pub log_dropped: OnceLock<ErrorCounter>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            responses: Default::default(),
            worker_starts: AtomicU64::new(0),
            worker_exits: AtomicU64::new(0),
            workers: Mutex::default(),
            log_dropped: OnceLock::new(),
        }
    }
}

impl Stats {
    pub fn count_response(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize;
        self.responses[class - 1].fetch_add(1, Ordering::Relaxed);
    }

    /// Responses so far, by class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub fn responses(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.responses[i].load(Ordering::Relaxed))
    }

    pub fn worker_up(&self, channel: &Arc<Channel>) {
        self.worker_starts.fetch_add(1, Ordering::Relaxed);
        lock(&self.workers).insert(channel.pid, channel.clone());
    }

    pub fn worker_gone(&self, channel: &Arc<Channel>) {
        self.worker_exits.fetch_add(1, Ordering::Relaxed);
        let mut workers = lock(&self.workers);
        // Only if it is still this worker's entry: a reused pid may name a newer one.
        if workers
            .get(&channel.pid)
            .is_some_and(|c| Arc::ptr_eq(c, channel))
        {
            workers.remove(&channel.pid);
        }
    }

    /// Log lines lost so far: dropped for a slow stderr, and worker output lines
    /// split for their length.
    pub fn log_lines(&self) -> (u64, u64) {
        let dropped = self
            .log_dropped
            .get()
            .map_or(0, |c| c.dropped_lines() as u64);
        (dropped, crate::spawn::LINES_SPLIT.load(Ordering::Relaxed))
    }

    /// The live workers, ordered by slot, then pid.
    pub fn workers(&self) -> Vec<Arc<Channel>> {
        let mut list: Vec<_> = lock(&self.workers).values().cloned().collect();
        list.sort_by_key(|c| (c.index, c.pid));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_counted_by_class() {
        let s = Stats::default();
        for code in [200, 204, 404, 502, 504, 101] {
            s.count_response(http::StatusCode::from_u16(code).unwrap());
        }
        assert_eq!(s.responses(), [1, 2, 0, 1, 2]);
    }
}
