//! The pool: which workers are ready, how many requests each has in flight, and
//! the queue of requests waiting for a slot.
//!
//! Dispatch binds late: a request that finds every worker full waits here, not on
//! a worker, and goes to whichever worker frees a slot first. A slot is held by a
//! [`Lease`]; dropping the lease (when the worker sends the request's terminal
//! message, or the worker dies) frees the slot and hands it to the oldest waiter.
//!
//! The pool knows its workers only as shared handles (`Arc<W>`, compared by
//! address): it is generic so that it depends on nothing above it. The master's
//! pool is `Pool<Channel>`; a lease lives in its request's entry of the channel's
//! table (`table.rs`), which is how a terminal message frees the slot.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use crate::config::Balance;
use crate::sync::lock;

pub struct Pool<W> {
    state: Mutex<State<W>>,
    balance: Balance,
    queue_size: usize,
    queue_timeout: Duration,
    /// Woken each time a request joins the queue (for the pool's sizing).
    pub queued: tokio::sync::Notify,
}

struct State<W> {
    /// One entry per ready worker.
    ready: Vec<Ready<W>>,
    /// Where the round-robin scan starts next.
    cursor: usize,
    /// Each with the time it joined the queue.
    waiters: VecDeque<(Instant, oneshot::Sender<Lease<W>>)>,
}

struct Ready<W> {
    channel: Arc<W>,
    in_flight: usize,
    limit: usize,
    /// Since when it has had nothing in flight.
    idle_since: Option<Instant>,
}

impl<W> Ready<W> {
    /// One request fewer in flight; with none left, the worker is idle from now.
    fn release_one(&mut self) {
        self.in_flight -= 1;
        if self.in_flight == 0 {
            self.idle_since = Some(Instant::now());
        }
    }
}

/// Why no worker slot was had.
#[derive(Debug, PartialEq, Eq)]
pub enum NoSlot {
    /// The wait queue is full: answer 503 at once.
    QueueFull,
    /// Waited `--queue-timeout` without a slot.
    TimedOut,
}

/// One request's claim on one worker slot.
pub struct Lease<W> {
    pool: Arc<Pool<W>>,
    channel: Arc<W>,
    /// False only for a lease taken back under the pool's lock, whose count was already undone.
    armed: bool,
}

impl<W> Lease<W> {
    pub fn channel(&self) -> &Arc<W> {
        &self.channel
    }
}

impl<W> Drop for Lease<W> {
    fn drop(&mut self) {
        if self.armed {
            self.pool.release(&self.channel);
        }
    }
}

impl<W> Pool<W> {
    pub fn new(balance: Balance, queue_size: usize, queue_timeout: Duration) -> Arc<Self> {
        Arc::new(Pool {
            state: Mutex::new(State {
                ready: Vec::new(),
                cursor: 0,
                waiters: VecDeque::new(),
            }),
            balance,
            queue_size,
            queue_timeout,
            queued: tokio::sync::Notify::new(),
        })
    }

    /// A worker finished its handshake: it takes requests from now on, starting
    /// with any that are waiting.
    pub fn add(self: &Arc<Self>, channel: Arc<W>, limit: usize) {
        let mut st = lock(&self.state);
        st.ready.push(Ready {
            channel: channel.clone(),
            in_flight: 0,
            limit,
            idle_since: Some(Instant::now()),
        });
        let at = st.ready.len() - 1;
        self.serve_waiters(&mut st, at);
    }

    /// Requests waiting in the queue for a free worker slot.
    pub fn waiting(&self) -> usize {
        let st = lock(&self.state);
        st.waiters.iter().filter(|(_, w)| !w.is_closed()).count()
    }

    /// How long the oldest request still waiting has waited.
    pub fn oldest_wait(&self) -> Option<Duration> {
        let st = lock(&self.state);
        let oldest = st.waiters.iter().find(|(_, w)| !w.is_closed());
        oldest.map(|(since, _)| since.elapsed())
    }

    /// How long the worker idle the longest (nothing in flight) has been.
    pub fn longest_idle(&self) -> Option<Duration> {
        let st = lock(&self.state);
        st.ready
            .iter()
            .filter_map(|r| r.idle_since)
            .min()
            .map(|t| t.elapsed())
    }

    /// Workers in the pool, taking requests.
    pub fn ready(&self) -> usize {
        lock(&self.state).ready.len()
    }

    pub fn queue_size(&self) -> usize {
        self.queue_size
    }

    /// A worker leaves the pool (it died, or is draining): no new requests go to it.
    pub fn remove(&self, channel: &Arc<W>) {
        let mut st = lock(&self.state);
        st.ready.retain(|r| !Arc::ptr_eq(&r.channel, channel));
    }

    /// Takes a slot on the best worker, waiting in the queue if all are full. With
    /// `avoid` (a retry), any other worker is preferred.
    pub async fn acquire_avoiding(
        self: &Arc<Self>,
        avoid: Option<&Arc<W>>,
    ) -> Result<Lease<W>, NoSlot> {
        let rx = {
            let mut st = lock(&self.state);
            if let Some(i) = self
                .pick(&st, avoid)
                .or_else(|| avoid.and_then(|_| self.pick(&st, None)))
            {
                return Ok(self.lease(&mut st, i));
            }
            if st.waiters.len() >= self.queue_size {
                // Waiters that timed out leave their (closed) entry behind: they must
                // not count against the queue.
                st.waiters.retain(|(_, w)| !w.is_closed());
            }
            if st.waiters.len() >= self.queue_size {
                return Err(NoSlot::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back((Instant::now(), tx));
            self.queued.notify_one();
            rx
        };
        match tokio::time::timeout(self.queue_timeout, rx).await {
            Ok(Ok(lease)) => Ok(lease),
            // Our sender was dropped (never happens while the pool lives) or time ran out.
            // A lease sent just as we gave up is dropped here, which frees it again.
            _ => Err(NoSlot::TimedOut),
        }
    }

    fn pick(&self, st: &State<W>, avoid: Option<&Arc<W>>) -> Option<usize> {
        let n = st.ready.len();
        let candidates = (0..n)
            .map(|k| (st.cursor + k) % n)
            .filter(|&i| st.ready[i].in_flight < st.ready[i].limit)
            .filter(|&i| avoid.is_none_or(|a| !Arc::ptr_eq(&st.ready[i].channel, a)));
        match self.balance {
            Balance::RoundRobin => candidates.into_iter().next(),
            // min_by_key keeps the first of equals: the scan order breaks ties round-robin.
            Balance::LeastOutstanding => candidates.min_by_key(|&i| st.ready[i].in_flight),
        }
    }

    fn lease(self: &Arc<Self>, st: &mut State<W>, i: usize) -> Lease<W> {
        st.ready[i].in_flight += 1;
        st.ready[i].idle_since = None;
        st.cursor = (i + 1) % st.ready.len();
        Lease {
            pool: self.clone(),
            channel: st.ready[i].channel.clone(),
            armed: true,
        }
    }

    fn release(self: &Arc<Self>, channel: &Arc<W>) {
        let mut st = lock(&self.state);
        // A worker that already left the pool has no entry; its count went with it.
        if let Some(i) = st
            .ready
            .iter()
            .position(|r| Arc::ptr_eq(&r.channel, channel))
        {
            st.ready[i].release_one();
            self.serve_waiters(&mut st, i);
        }
    }

    /// Hands free slots of worker `i` to waiters, oldest first.
    fn serve_waiters(self: &Arc<Self>, st: &mut State<W>, i: usize) {
        while st.ready[i].in_flight < st.ready[i].limit {
            let Some((_, waiter)) = st.waiters.pop_front() else {
                return;
            };
            if waiter.is_closed() {
                continue;
            }
            let lease = self.lease(st, i);
            if let Err(mut lease) = waiter.send(lease) {
                // The waiter gave up between our check and the send: undo here, since
                // `release` would take the lock we hold.
                st.ready[i].release_one();
                lease.armed = false;
            }
        }
    }
}
