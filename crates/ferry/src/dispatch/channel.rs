//! One worker's channel, from the master's side: the handle every request, the
//! worker's supervisor and the admin endpoint use. It holds the worker's table of
//! requests in flight (`table.rs`) under one lock, the queue to its writer
//! (`writer.rs`), and what the supervisor watches: when it last answered a ping,
//! what state it is in, how many requests it served.
//!
//! A request's head frame is queued under the table's lock, as is `Drain`: a head is
//! either queued before the `Drain` (and answered) or refused, never left behind it.

use bytes::Bytes;
use ferry_protocol::*;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::dispatch::pool::Lease;
use crate::dispatch::table::{Exchange, Refused, Table, Violation};
use crate::dispatch::writer::Outgoing;
use crate::sync::lock;

pub struct Channel {
    pub index: usize,
    pub pid: u32,
    queue: mpsc::UnboundedSender<Outgoing>,
    table: Mutex<Table<Lease<Channel>>>,
    /// The window we announced in `Welcome` (response bodies).
    recv_window: u32,
    /// The window the worker announced in `Hello` (request bodies).
    send_window: u32,
    /// Largest data in one body chunk we send.
    pub chunk_size: usize,
    /// Largest frame the worker accepts.
    pub max_frame: usize,
    /// Requests this worker finished.
    served: AtomicU64,
    /// When the worker last answered a ping (or finished its handshake).
    last_pong: Mutex<Instant>,
    /// When the handshake completed.
    pub started: Instant,
    /// A [`State`], for the admin endpoint.
    state: AtomicU8,
    /// Woken when the worker was given the last request of its `--max-requests`.
    pub exhausted: tokio::sync::Notify,
    /// Woken when the worker said `Goodbye`, whose reason is kept in `goodbye`.
    pub said_goodbye: tokio::sync::Notify,
    goodbye: Mutex<Option<String>>,
}

/// Where a worker is in its life after the handshake, as the admin endpoint shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// In the pool, taking requests.
    Ready = 0,
    /// Out of the pool, finishing what it has (recycling, reload, stop).
    Draining = 1,
    /// Ending: its process group is being killed and reaped.
    Stopping = 2,
    /// Started and ready, kept out of the pool until its slot needs it
    /// (`--spare-workers`).
    Spare = 3,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Draining => "draining",
            State::Stopping => "stopping",
            State::Spare => "spare",
        }
    }
}

impl Channel {
    pub fn new(
        index: usize,
        pid: u32,
        queue: mpsc::UnboundedSender<Outgoing>,
        hello: &Hello,
        welcome: &Welcome,
        budget: Option<u64>,
    ) -> Arc<Self> {
        let max_frame = welcome.max_frame_size as usize;
        let frame_room = max_frame.saturating_sub(BODY_CHUNK_OVERHEAD);
        Arc::new(Channel {
            index,
            pid,
            queue,
            table: Mutex::new(Table::with_budget(budget)),
            recv_window: welcome.initial_window,
            send_window: hello.initial_window.max(1),
            chunk_size: (64 * 1024)
                .min(hello.initial_window.max(1) as usize)
                .min(frame_room.max(1)),
            max_frame,
            served: AtomicU64::new(0),
            last_pong: Mutex::new(Instant::now()),
            started: Instant::now(),
            state: AtomicU8::new(State::Ready as u8),
            exhausted: tokio::sync::Notify::new(),
            said_goodbye: tokio::sync::Notify::new(),
            goodbye: Mutex::new(None),
        })
    }

    /// A channel with no process behind it (pid 1, slot 0), as a worker that took the
    /// protocol's defaults and `max_in_flight` would have it, and the queue its writer
    /// would read: for tests and benchmarks that drive the dispatch code directly.
    #[doc(hidden)]
    pub fn detached(max_in_flight: u32) -> (Arc<Self>, mpsc::UnboundedReceiver<Outgoing>) {
        let (queue, rx) = mpsc::unbounded_channel();
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            pid: 1,
            max_in_flight,
            initial_window: DEFAULT_INITIAL_WINDOW,
            sdk_name: "test".into(),
            sdk_version: "0".into(),
        };
        let welcome = Welcome {
            protocol_version: PROTOCOL_VERSION,
            worker_index: 0,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE as u32,
            max_in_flight,
            initial_window: DEFAULT_INITIAL_WINDOW,
        };
        (Channel::new(0, 1, queue, &hello, &welcome, None), rx)
    }

    /// Queues a message for the writer.
    pub fn send(&self, msg: MasterMsg) {
        let _ = self.queue.send(Outgoing::Msg(msg));
    }

    /// Puts a request in flight and queues its head frame, made by `encode(id)`, in
    /// the same critical section as the `Drain` of [`Channel::start_drain`]: a head is
    /// either queued before the `Drain` (and answered) or refused (`Refused::Gone`,
    /// nothing sent, so the caller may try another worker), never left behind it.
    /// `streamed_body`: the request body will follow as chunks, under flow control.
    pub fn register<E>(
        &self,
        lease: Lease<Channel>,
        method: &http::Method,
        uri: &http::Uri,
        streamed_body: bool,
        encode: impl FnOnce(u64) -> Result<Outgoing, E>,
    ) -> Result<Exchange, Refused<E>> {
        let mut t = lock(&self.table);
        let window = streamed_body.then_some(self.send_window);
        let (exchange, frame) = match t.register(lease, method, uri, window, encode) {
            Ok(registered) => registered,
            Err((refused, lease)) => {
                // The lease takes the pool's lock as it drops: never under ours.
                drop(t);
                drop(lease);
                return Err(refused);
            }
        };
        let _ = self.queue.send(frame);
        if t.exhausted() {
            // Its supervisor takes it out of the pool and has it replaced; until then
            // further leases are refused here and go to another worker.
            self.exhausted.notify_one();
        }
        Ok(exchange)
    }

    /// Queues `Drain`, after which no request is registered (see [`Channel::register`]).
    pub fn start_drain(&self) {
        let mut t = lock(&self.table);
        t.start_drain();
        self.send(MasterMsg::Drain);
    }

    /// Asks the worker to drop request `id`. Its slot stays taken until the worker
    /// confirms with a terminal message.
    pub fn cancel(&self, id: u64) {
        let mut t = lock(&self.table);
        if t.cancel(id) {
            self.send(MasterMsg::Cancel(Cancel { id }));
        }
    }

    /// Queues a chunk of request `id`'s body, counted so that the worker can credit
    /// back no more than it was sent. False once the request is over.
    pub fn send_body_chunk(&self, id: u64, data: Bytes) -> bool {
        let mut t = lock(&self.table);
        if !t.body_sent(id, data.len()) {
            return false;
        }
        self.send(MasterMsg::BodyChunk(BodyChunk { id, data }));
        true
    }

    /// Queues the end of request `id`'s body; the worker's time starts now.
    pub fn end_body(&self, id: u64, trailers: Vec<Header>) {
        let mut t = lock(&self.table);
        if t.upload_done(id) {
            self.send(MasterMsg::BodyEnd(BodyEnd { id, trailers }));
        }
    }

    /// Cancels every streamed response whose client stopped taking it for
    /// `timeout` (see [`Table::stalled`]); how many.
    pub fn cancel_stalled(&self, timeout: Duration) -> usize {
        let mut t = lock(&self.table);
        let ids = t.stalled(timeout);
        for &id in &ids {
            self.send(MasterMsg::Cancel(Cancel { id }));
        }
        ids.len()
    }

    /// Grants the worker `n` more response-body bytes for `id`.
    pub fn credit(&self, id: u64, n: u32) {
        let mut t = lock(&self.table);
        if t.credit(id, n) {
            self.send(MasterMsg::Credit(Credit { id, bytes: n }));
        }
    }

    /// The worker is gone: every request in flight learns it, and no new ones register.
    pub fn fail_all(&self) {
        let entries = lock(&self.table).close_all();
        // Outside the lock: dropping the leases takes the pool's lock.
        for e in entries {
            e.fail();
        }
    }

    /// The requests in flight, for log lines: `GET /path (1.2s)`.
    pub fn describe_in_flight(&self) -> Vec<String> {
        lock(&self.table).describe_in_flight()
    }

    /// Requests in flight on this worker right now.
    pub fn in_flight(&self) -> usize {
        lock(&self.table).len()
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::Relaxed) {
            0 => State::Ready,
            1 => State::Draining,
            3 => State::Spare,
            _ => State::Stopping,
        }
    }

    pub fn set_state(&self, state: State) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// How long since the worker last answered a ping.
    pub fn silent_for(&self) -> Duration {
        lock(&self.last_pong).elapsed()
    }

    /// Ends the wait of every request that has had no response head for `timeout`.
    /// Called on a tick by the worker's supervisor: one timer per worker instead of
    /// one per request, whose setup and teardown cost about 4 % of throughput.
    pub fn expire_heads(&self, timeout: Duration) {
        lock(&self.table).expire_heads(timeout);
    }

    /// The slow log (`--slow-request-threshold`): one line for each request that has
    /// waited `threshold` for its response head, naming the worker and everything
    /// else it has in flight.
    pub fn log_slow(&self, threshold: Duration) {
        let (slow, all) = {
            let mut t = lock(&self.table);
            let slow = t.newly_slow(threshold);
            if slow.is_empty() {
                return;
            }
            (slow, t.describe_in_flight())
        };
        for request in slow {
            tracing::warn!(
                target: "ferry::slow",
                worker = self.index,
                pid = self.pid,
                "slow request: {request} has no response head yet; the worker has {} in flight: {all:?}",
                all.len()
            );
        }
    }

    /// A request whose cancellation the worker has not confirmed within `grace`.
    pub fn overdue_cancel(&self, grace: Duration) -> Option<String> {
        lock(&self.table).overdue_cancel(grace)
    }

    /// The reason of the worker's `Goodbye`, once it said one.
    pub fn goodbye(&self) -> Option<String> {
        lock(&self.goodbye).clone()
    }

    /// Requests the worker was given so far.
    pub fn dispatched(&self) -> u64 {
        lock(&self.table).dispatched()
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Routes one message from the worker: those about a request to the table, the
    /// rest here.
    pub fn handle(&self, msg: WorkerMsg) -> Result<(), Violation> {
        match msg {
            WorkerMsg::Pong(_) => {
                *lock(&self.last_pong) = Instant::now();
                Ok(())
            }
            WorkerMsg::Goodbye(g) => {
                tracing::info!(
                    worker = self.index,
                    pid = self.pid,
                    "worker says goodbye: {}",
                    g.reason
                );
                let refused = lock(&self.table).retire(g.last_id)?;
                if !refused.is_empty() {
                    tracing::info!(
                        worker = self.index,
                        pid = self.pid,
                        "{} request(s) sent after its Goodbye go to other workers",
                        refused.len()
                    );
                }
                // Outside the table's lock: the leases take the pool's.
                for e in refused {
                    e.refuse();
                }
                *lock(&self.goodbye) = Some(g.reason);
                self.said_goodbye.notify_one();
                Ok(())
            }
            WorkerMsg::Hello(_) => Err(Violation("a second Hello".into())),
            msg => {
                let finished = lock(&self.table).route(msg, self.recv_window)?;
                if let Some(e) = finished {
                    self.served.fetch_add(1, Ordering::Relaxed);
                    // Closed outside the table's lock: the lease takes the pool's.
                    e.close();
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Balance;
    use crate::dispatch::pool::Pool;
    use crate::dispatch::table::Refused;

    type Pools = Arc<Pool<Channel>>;

    fn channel_in_a_pool() -> (Pools, Arc<Channel>, mpsc::UnboundedReceiver<Outgoing>) {
        let pool = Pool::new(Balance::LeastOutstanding, 16, Duration::from_secs(5));
        let (channel, rx) = Channel::detached(8);
        pool.add(channel.clone(), 8);
        (pool, channel, rx)
    }

    async fn register(
        pool: &Pools,
        channel: &Channel,
        frame: &'static [u8],
    ) -> Result<Exchange, Refused<&'static str>> {
        let lease = pool.acquire_avoiding(None).await.unwrap();
        channel.register(
            lease,
            &http::Method::GET,
            &http::Uri::from_static("/"),
            false,
            |_| Ok(Outgoing::Frame(Bytes::from_static(frame))),
        )
    }

    #[tokio::test]
    async fn no_head_is_ever_queued_behind_a_drain() {
        let (pool, channel, mut rx) = channel_in_a_pool();
        let first = register(&pool, &channel, b"first").await.unwrap();
        channel.start_drain();
        // Leased before the drain began, registered after: refused, nothing sent.
        assert!(matches!(
            register(&pool, &channel, b"second").await,
            Err(Refused::Gone)
        ));
        assert!(matches!(rx.try_recv(), Ok(Outgoing::Frame(f)) if f == "first"));
        assert!(matches!(rx.try_recv(), Ok(Outgoing::Msg(MasterMsg::Drain))));
        assert!(rx.try_recv().is_err(), "nothing after the Drain");
        assert_eq!(channel.in_flight(), 1);
        drop(first);
    }

    #[tokio::test]
    async fn a_head_that_cannot_be_encoded_registers_nothing() {
        let (pool, channel, mut rx) = channel_in_a_pool();
        let lease = pool.acquire_avoiding(None).await.unwrap();
        let refused = channel.register(
            lease,
            &http::Method::GET,
            &http::Uri::from_static("/"),
            false,
            |_| Err("too large"),
        );
        assert!(matches!(refused, Err(Refused::Encode("too large"))));
        assert!(rx.try_recv().is_err());
        assert_eq!(channel.in_flight(), 0);
        // The id was not used up either.
        let next = register(&pool, &channel, b"next").await.unwrap();
        assert_eq!(next.id, 1);
    }
}
