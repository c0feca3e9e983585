//! [`Ctx`]: what every part of the master shares: the options, the worker command,
//! the pool, the spawner, the counters, and the pids of every worker alive (for an
//! immediate stop). It is built once by `master.rs` and handed down as an `Arc`.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::dispatch::channel::Channel;
use crate::dispatch::pool::Pool;
use crate::events::Events;
use crate::spawn::Spawner;
use crate::stats::Stats;
use crate::sync::lock;

pub struct Ctx {
    pub config: Config,
    pub command: Arc<Vec<String>>,
    pub pool: Arc<Pool<Channel>>,
    pub spawner: Spawner,
    /// Held while a worker is being replaced: one replacement at a time, pool-wide.
    pub recycle_lock: tokio::sync::Mutex<()>,
    /// Every worker process alive, for an immediate stop.
    pids: Mutex<HashSet<u32>>,
    /// Counters and live workers, for the admin endpoint.
    pub stats: Stats,
    /// Old workers draining after their replacement took over: a graceful stop waits
    /// for them too.
    pub drains: tokio_util::task::TaskTracker,
    /// Lifecycle events, for `ferry ctl events`.
    pub events: Events,
    /// The access log, when `--access-log` is on.
    pub access_log: Option<AccessLog>,
    /// Set when a graceful stop begins: `/readyz` turns 503 (the listener closes at
    /// the same moment; a load balancer's health check sees why connections fail).
    pub stopping: AtomicBool,
}

impl Ctx {
    pub fn new(config: Config, spawner: Spawner, access_log: Option<AccessLog>) -> Arc<Self> {
        Arc::new(Ctx {
            access_log,
            events: Events::default(),
            drains: tokio_util::task::TaskTracker::new(),
            command: Arc::new(config.command.clone()),
            pool: Pool::new(config.balance, config.queue_size, config.queue_timeout),
            spawner,
            recycle_lock: tokio::sync::Mutex::new(()),
            pids: Mutex::new(HashSet::new()),
            stats: Stats::default(),
            stopping: AtomicBool::new(false),
            config,
        })
    }

    pub fn remember_pid(&self, pid: u32) {
        lock(&self.pids).insert(pid);
    }

    pub fn forget_pid(&self, pid: u32) {
        lock(&self.pids).remove(&pid);
    }

    /// Kills every worker's process group.
    pub fn kill_all(&self) {
        for pid in lock(&self.pids).drain() {
            crate::process::kill_group(pid);
        }
    }

    /// The number of requests after which a new worker is recycled: drawn per worker
    /// from `[max_requests, max_requests + jitter]`, so workers drift apart.
    pub fn request_limit(&self) -> Option<u64> {
        let (n, j) = (self.config.max_requests, self.config.max_requests_jitter);
        (n > 0).then(|| fastrand::u64(n..=n.saturating_add(j)))
    }
}
