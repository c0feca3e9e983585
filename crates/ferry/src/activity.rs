//! Whether a client is keeping up: [`Progress`] for one streamed response (when the
//! client last took a piece of it, and whether it is stalled), and [`Activity`] for
//! one HTTP/2 connection (its requests in progress, how many of them are stalled,
//! and since when nothing happened).
//!
//! A client that stops taking a streamed response holds its worker's slot for as
//! long as it likes, unless someone notices. Over HTTP/1.1 the socket write stalls
//! and `front.rs` cuts the connection after `--send-timeout`; over HTTP/2 a stream
//! whose window stays closed writes nothing at all, so the worker's supervisor looks
//! at each streamed response's `Progress` on its heartbeat tick (`Table::stalled`),
//! cancels those with bytes waiting and no progress for the send timeout (freeing
//! the slot), and marks them stalled. A connection whose every request in progress
//! is stalled is closed by `front.rs`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::sync::lock;

/// One HTTP/2 connection's requests in progress (from the request's arrival until
/// its response body is done).
pub struct Activity {
    in_flight: AtomicUsize,
    stalled: AtomicUsize,
    /// Response bodies with data that hyper has not come back for: it waits for the
    /// client's flow-control window. (One waiting for its worker is not counted.)
    blocked: AtomicUsize,
    /// When hyper last asked any body of this connection for data.
    last_poll: Mutex<Instant>,
    /// When a request last began or ended, or was found stalled.
    last_change: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            stalled: AtomicUsize::new(0),
            blocked: AtomicUsize::new(0),
            last_poll: Mutex::new(Instant::now()),
            last_change: Mutex::new(Instant::now()),
        }
    }
}

impl Activity {
    /// How long the connection has had nothing in progress that is moving: no
    /// request at all, or only stalled ones. `None` while something is moving.
    pub fn idle_for(&self) -> Option<Duration> {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        (in_flight <= self.stalled.load(Ordering::Relaxed))
            .then(|| lock(&self.last_change).elapsed())
    }

    /// Whether every request in progress is stalled (and there is at least one).
    pub fn all_stalled(&self) -> bool {
        let stalled = self.stalled.load(Ordering::Relaxed);
        stalled > 0 && self.in_flight.load(Ordering::Relaxed) <= stalled
    }

    /// How long bodies have waited on the client with no body of this connection
    /// asked for data meanwhile; `None` while none waits.
    pub fn blocked_for(&self) -> Option<Duration> {
        (self.blocked.load(Ordering::Relaxed) > 0).then(|| lock(&self.last_poll).elapsed())
    }

    /// A body starts (or stops) waiting for hyper to ask for its data.
    pub fn set_blocked(&self, blocked: bool) {
        if blocked {
            self.blocked.fetch_add(1, Ordering::Relaxed);
        } else {
            self.blocked.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// hyper asked a body of this connection for data.
    pub fn polled(&self) {
        *lock(&self.last_poll) = Instant::now();
    }

    fn touch(&self) {
        *lock(&self.last_change) = Instant::now();
    }
}

/// Counts one request in progress on its connection while it lives: it moves from
/// the request into its response body (`front::Logged`), so a long response is
/// activity.
pub struct Busy(Arc<Activity>);

impl Busy {
    pub fn new(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        Busy(activity)
    }

    pub fn activity(&self) -> &Arc<Activity> {
        &self.0
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How far the client has got with one streamed response body.
pub struct Progress {
    epoch: Instant,
    /// Milliseconds after `epoch` when the client last took a piece.
    taken_at: AtomicU64,
    /// Bytes the client has taken.
    taken: AtomicU64,
    stalled: AtomicBool,
    /// The HTTP/2 connection it is on, told when it stalls.
    activity: OnceLock<Arc<Activity>>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            epoch: Instant::now(),
            taken_at: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            stalled: AtomicBool::new(false),
            activity: OnceLock::new(),
        }
    }
}

impl Progress {
    /// The client took `n` more bytes.
    pub fn took(&self, n: usize) {
        self.taken.fetch_add(n as u64, Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        self.taken_at.store(now, Ordering::Relaxed);
    }

    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// How long since the client last took anything (or the body began).
    pub fn idle_for(&self) -> Duration {
        let at = Duration::from_millis(self.taken_at.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(at)
    }

    /// Whether the body goes out over HTTP/2 (over HTTP/1.1 the socket's own write
    /// timeout, `front::ClientIo`, measures the client).
    pub fn is_h2(&self) -> bool {
        self.activity.get().is_some()
    }

    /// The HTTP/2 connection this body goes out on.
    pub fn attach(&self, activity: &Arc<Activity>) {
        if self.activity.set(activity.clone()).is_ok() && self.stalled.load(Ordering::Relaxed) {
            activity.stalled.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Marks the body stalled; true the first time.
    pub fn mark_stalled(&self) -> bool {
        if self.stalled.swap(true, Ordering::Relaxed) {
            return false;
        }
        if let Some(a) = self.activity.get() {
            a.stalled.fetch_add(1, Ordering::Relaxed);
            a.touch();
        }
        true
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if *self.stalled.get_mut() {
            if let Some(a) = self.activity.get() {
                a.stalled.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_whose_requests_all_stalled_is_idle() {
        let activity = Arc::new(Activity::default());
        assert!(activity.idle_for().is_some(), "nothing in progress");
        let one = Busy::new(activity.clone());
        let two = Busy::new(activity.clone());
        assert!(activity.idle_for().is_none());
        let p1 = Arc::new(Progress::default());
        p1.attach(&activity);
        assert!(p1.mark_stalled());
        assert!(!p1.mark_stalled(), "counted once");
        assert!(!activity.all_stalled(), "the second is still moving");
        let p2 = Arc::new(Progress::default());
        p2.mark_stalled();
        p2.attach(&activity);
        assert!(activity.all_stalled());
        assert!(activity.idle_for().is_some());
        drop((p1, one));
        drop((p2, two));
        assert!(!activity.all_stalled());
    }

    #[test]
    fn progress_counts_what_was_taken() {
        let p = Progress::default();
        p.took(100);
        p.took(50);
        assert_eq!(p.taken(), 150);
        assert!(p.idle_for() < Duration::from_secs(1));
    }
}
