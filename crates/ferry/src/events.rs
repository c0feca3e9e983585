//! Lifecycle events, for `ferry ctl events`: what the log says about workers and
//! failures, as one JSON object each, so that `ferry ctl events | your-alerting` is
//! the hook that notifies a monitoring system.
//!
//! Emitting costs one atomic load while nobody listens. Listeners each get a bounded
//! queue ([`CAPACITY`]); one that falls behind is told how many events it missed
//! rather than slowing the master.

use serde::Serialize;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::broadcast;

/// Events a listener may fall behind by before it misses some.
pub const CAPACITY: usize = 1024;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    WorkerStarted {
        slot: usize,
        pid: u32,
    },
    /// A worker is gone. `reason`: drained, exited, violation, stuck, drain_timeout
    /// or channel_broken; `held`: the requests it had in flight.
    WorkerExited {
        slot: usize,
        pid: u32,
        reason: &'static str,
        status: String,
        uptime_seconds: f64,
        served: u64,
        held: Vec<String>,
    },
    StartFailed {
        slot: usize,
        error: String,
    },
    Recycling {
        slot: usize,
        pid: u32,
        why: String,
    },
    Replaced {
        slot: usize,
        old: u32,
        new: u32,
    },
    ReplacementFailed {
        slot: usize,
        kept: u32,
        error: String,
    },
    RequestTimedOut {
        slot: usize,
        pid: u32,
        request: String,
    },
    QueueFull {
        waiting: usize,
    },
    /// The pool's size changed: `why` is what asked (SIGTTIN, ferry ctl scale, the
    /// queue, idleness).
    Scaled {
        from: usize,
        to: usize,
        why: String,
    },
    /// A worker asked to retire (`Goodbye` before `Drain`).
    Retiring {
        slot: usize,
        pid: u32,
        reason: String,
    },
}

/// An event with the time it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Stamped {
    pub time: String,
    #[serde(flatten)]
    pub event: Event,
}

pub struct Events {
    tx: broadcast::Sender<Arc<Stamped>>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Events {
    /// Publishes `event` to every listener; does nothing (and builds nothing) when
    /// there is none.
    pub fn emit(&self, event: impl FnOnce() -> Event) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let _ = self.tx.send(Arc::new(Stamped {
            time,
            event: event(),
        }));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Stamped>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_reach_listeners_as_tagged_json() {
        let events = Events::default();
        events.emit(|| unreachable!("nobody listens: nothing is built"));
        let mut rx = events.subscribe();
        events.emit(|| Event::WorkerStarted { slot: 1, pid: 42 });
        let got = rx.try_recv().unwrap();
        let v = serde_json::to_value(&*got).unwrap();
        assert_eq!(v["event"], "worker_started");
        assert_eq!(v["pid"], 42);
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }
}
