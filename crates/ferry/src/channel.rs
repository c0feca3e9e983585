//! One worker's channel, from the master's side: the table of requests in flight on
//! it, the routing of every frame the worker sends, and the writer that coalesces
//! frames into few writes.
//!
//! The table enforces the protocol's rules for the worker: one response head per
//! request, body bytes only after a streamed head, within the window we granted and
//! exactly the length it declared, nothing for an id that is not in flight. A breach is a [`Violation`]: the
//! supervisor kills the worker. Each entry owns its request's [`Lease`], so a
//! request's slot is freed exactly when the worker finishes it (or dies), never
//! merely because the client went away.

use bytes::{Bytes, BytesMut};
use ferry_protocol::codec::MasterCodec;
use ferry_protocol::*;
use futures_util::SinkExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::codec::{Encoder, FramedWrite};

use crate::pool::Lease;

/// The start of a response, as the worker sent it.
pub struct Start {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: StartBody,
}

/// A response's body as its head announced it.
pub enum StartBody {
    Empty,
    Inline(Bytes),
    /// The body follows piece by piece; the request is still in flight.
    Streamed {
        length: Option<u64>,
        pieces: mpsc::UnboundedReceiver<Piece>,
    },
}

/// Why a request got no response head.
#[derive(Debug)]
pub enum Lost {
    /// The worker answered `RequestFailed` for it.
    Failed(String),
    /// The worker died or was killed with the request in flight.
    WorkerGone,
    /// No response head within `--request-timeout` ([`Channel::expire_heads`]).
    TimedOut,
}

/// Why [`Channel::register`] did not put a request in flight.
#[derive(Debug)]
pub enum Refused<E> {
    /// The worker is gone or draining: nothing was sent; another worker may take it.
    Gone,
    /// The head could not be encoded.
    Encode(E),
}

/// A piece of a streamed response body.
pub enum Piece {
    Data(Bytes),
    End(Vec<Header>),
    Failed(String),
}

/// A breach of the protocol by the worker; the worker is killed for it.
#[derive(Debug)]
pub struct Violation(pub String);

/// What the front holds for one request in flight.
pub struct Exchange {
    pub id: u64,
    pub head: oneshot::Receiver<Result<Start, Lost>>,
    /// For a streamed request body: the bytes the worker will still accept; its
    /// credits add to it.
    pub send_window: Option<Arc<Semaphore>>,
}

struct Entry {
    head: Option<oneshot::Sender<Result<Start, Lost>>>,
    /// The head sender went with `Lost::TimedOut`: a head arriving now is late, not a
    /// second one.
    timed_out: bool,
    /// Where a streamed response body goes, once its head has arrived.
    body: Option<mpsc::UnboundedSender<Piece>>,
    /// Response-body bytes the worker may still send before we grant more.
    recv_window: u64,
    /// Body bytes still owed, when the worker declared the body's length: the client
    /// was promised exactly that many in `Content-Length`.
    owed: Option<u64>,
    send_window: Option<Arc<Semaphore>>,
    /// When we sent `Cancel`, if we did: the worker must confirm within the grace period.
    cancelled: Option<Instant>,
    /// For log lines; cheap clones of the request's own (no allocation).
    method: http::Method,
    uri: http::Uri,
    started: Instant,
    _lease: Lease,
}

impl Entry {
    /// Ends the entry for good: wakes the request body pump so it stops sending.
    fn close(self) {
        if let Some(w) = &self.send_window {
            w.close();
        }
    }

    fn describe(&self) -> String {
        format!("{} {}", self.method, self.uri.path())
    }
}

#[derive(Default)]
struct Table {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    /// Set once the worker is gone: no new requests are registered.
    closed: bool,
    /// Set when `Drain` is queued: nothing may be queued after it for the worker to
    /// miss, so no new requests are registered either.
    draining: bool,
}

/// What the writer task is given: a message to encode, or a frame the request task
/// already encoded (request heads, straight from hyper's header map).
pub enum Outgoing {
    Msg(MasterMsg),
    Frame(Bytes),
}

/// The writer's codec: messages through [`MasterCodec`], ready frames as they are.
pub struct OutgoingCodec(pub MasterCodec);

impl Encoder<Outgoing> for OutgoingCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: Outgoing, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        match item {
            Outgoing::Msg(m) => self.0.encode(m, dst),
            Outgoing::Frame(f) => {
                dst.extend_from_slice(&f);
                Ok(())
            }
        }
    }
}

pub struct Channel {
    pub index: usize,
    pub pid: u32,
    queue: mpsc::UnboundedSender<Outgoing>,
    table: Mutex<Table>,
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
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Draining => "draining",
            State::Stopping => "stopping",
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
    ) -> Arc<Self> {
        let max_frame = welcome.max_frame_size as usize;
        let frame_room = max_frame.saturating_sub(BODY_CHUNK_OVERHEAD);
        Arc::new(Channel {
            index,
            pid,
            queue,
            table: Mutex::new(Table::default()),
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
        })
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
        lease: Lease,
        method: &http::Method,
        uri: &http::Uri,
        streamed_body: bool,
        encode: impl FnOnce(u64) -> Result<Bytes, E>,
    ) -> Result<Exchange, Refused<E>> {
        let mut t = self.table.lock().unwrap();
        if t.closed || t.draining {
            return Err(Refused::Gone);
        }
        let id = t.next_id + 1;
        let frame = encode(id).map_err(Refused::Encode)?;
        t.next_id = id;
        let _ = self.queue.send(Outgoing::Frame(frame));
        let (head_tx, head) = oneshot::channel();
        let send_window =
            streamed_body.then(|| Arc::new(Semaphore::new(self.send_window as usize)));
        t.entries.insert(
            id,
            Entry {
                head: Some(head_tx),
                body: None,
                recv_window: 0,
                owed: None,
                send_window: send_window.clone(),
                cancelled: None,
                timed_out: false,
                method: method.clone(),
                uri: uri.clone(),
                started: Instant::now(),
                _lease: lease,
            },
        );
        Ok(Exchange {
            id,
            head,
            send_window,
        })
    }

    /// Queues `Drain`, after which no request is registered (see [`Channel::register`]).
    pub fn start_drain(&self) {
        let mut t = self.table.lock().unwrap();
        t.draining = true;
        self.send(MasterMsg::Drain);
    }

    /// Asks the worker to drop request `id`. Its slot stays taken until the worker
    /// confirms with a terminal message.
    pub fn cancel(&self, id: u64) {
        let mut t = self.table.lock().unwrap();
        if let Some(e) = t.entries.get_mut(&id) {
            if e.cancelled.is_none() {
                e.cancelled = Some(Instant::now());
                self.send(MasterMsg::Cancel(Cancel { id }));
            }
        }
    }

    /// Grants the worker `n` more response-body bytes for `id`.
    pub fn credit(&self, id: u64, n: u32) {
        let mut t = self.table.lock().unwrap();
        if let Some(e) = t.entries.get_mut(&id) {
            e.recv_window += n as u64;
            self.send(MasterMsg::Credit(Credit { id, bytes: n }));
        }
    }

    /// The worker is gone: every request in flight learns it, and no new ones register.
    pub fn fail_all(&self) {
        let entries: Vec<Entry> = {
            let mut t = self.table.lock().unwrap();
            t.closed = true;
            t.entries.drain().map(|(_, e)| e).collect()
        };
        // Outside the lock: dropping the leases takes the pool's lock.
        for mut e in entries {
            if let Some(head) = e.head.take() {
                let _ = head.send(Err(Lost::WorkerGone));
            } else if let Some(body) = &e.body {
                let _ = body.send(Piece::Failed("the worker died mid-response".into()));
            }
            e.close();
        }
    }

    /// The requests in flight, for log lines: `GET /path (1.2s)`.
    pub fn describe_in_flight(&self) -> Vec<String> {
        let t = self.table.lock().unwrap();
        t.entries
            .values()
            .map(|e| format!("{} ({:.1?})", e.describe(), e.started.elapsed()))
            .collect()
    }

    /// Requests in flight on this worker right now.
    pub fn in_flight(&self) -> usize {
        self.table.lock().unwrap().entries.len()
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::Relaxed) {
            0 => State::Ready,
            1 => State::Draining,
            _ => State::Stopping,
        }
    }

    pub fn set_state(&self, state: State) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// How long since the worker last answered a ping.
    pub fn silent_for(&self) -> Duration {
        self.last_pong.lock().unwrap().elapsed()
    }

    /// Ends the wait of every request that has had no response head for `timeout`:
    /// its proxy gets `Lost::TimedOut` (and answers 504, then cancels the request).
    /// Called on a tick by the worker's supervisor: one timer per worker instead of
    /// one per request, whose setup and teardown cost about 4 % of throughput.
    pub fn expire_heads(&self, timeout: Duration) {
        let mut t = self.table.lock().unwrap();
        for e in t.entries.values_mut() {
            if e.head.is_some() && e.started.elapsed() >= timeout {
                if let Some(head) = e.head.take() {
                    e.timed_out = true;
                    let _ = head.send(Err(Lost::TimedOut));
                }
            }
        }
    }

    /// A request whose cancellation the worker has not confirmed within `grace`.
    pub fn overdue_cancel(&self, grace: Duration) -> Option<String> {
        let t = self.table.lock().unwrap();
        t.entries
            .values()
            .find(|e| e.cancelled.is_some_and(|at| at.elapsed() > grace))
            .map(Entry::describe)
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Routes one message from the worker.
    pub fn handle(&self, msg: WorkerMsg) -> Result<(), Violation> {
        let mut t = self.table.lock().unwrap();
        let finished = match msg {
            WorkerMsg::ResponseHead(h) => {
                let e = t
                    .entries
                    .get_mut(&h.id)
                    .ok_or_else(|| unknown("ResponseHead", h.id))?;
                let head = match e.head.take() {
                    Some(head) => Some(head),
                    // Too late: the client has its 504 and the Cancel is on its way. The
                    // request still ends as the worker says, its body going nowhere.
                    None if e.timed_out => {
                        e.timed_out = false; // one late head; a second is a violation
                        None
                    }
                    None => {
                        return Err(Violation(format!(
                            "a second ResponseHead for request {}",
                            h.id
                        )))
                    }
                };
                let (body, finished) = match h.body {
                    BodyKind::Empty => (StartBody::Empty, true),
                    BodyKind::Inline(b) => (StartBody::Inline(b), true),
                    BodyKind::Streamed { length } => {
                        let (tx, pieces) = mpsc::unbounded_channel();
                        e.body = Some(tx);
                        e.recv_window = self.recv_window as u64;
                        e.owed = length;
                        (StartBody::Streamed { length, pieces }, false)
                    }
                };
                let id = h.id;
                // The receiver may be gone (client left); the Cancel is already queued.
                if let Some(head) = head {
                    let _ = head.send(Ok(Start {
                        status: h.status,
                        headers: h.headers,
                        body,
                    }));
                }
                finished.then_some(id)
            }
            WorkerMsg::BodyChunk(c) => {
                let e = t
                    .entries
                    .get_mut(&c.id)
                    .ok_or_else(|| unknown("BodyChunk", c.id))?;
                let body = e
                    .body
                    .as_ref()
                    .ok_or_else(|| not_streaming("BodyChunk", c.id))?;
                let len = c.data.len() as u64;
                if len > e.recv_window {
                    return Err(Violation(format!(
                        "request {}: a {len}-byte chunk overruns the {}-byte flow-control window",
                        c.id, e.recv_window
                    )));
                }
                e.recv_window -= len;
                if let Some(owed) = &mut e.owed {
                    *owed = owed.checked_sub(len).ok_or_else(|| {
                        Violation(format!(
                            "request {}: body chunks run past the declared length",
                            c.id
                        ))
                    })?;
                }
                let _ = body.send(Piece::Data(c.data));
                None
            }
            WorkerMsg::BodyEnd(b) => {
                let e = t
                    .entries
                    .get(&b.id)
                    .ok_or_else(|| unknown("BodyEnd", b.id))?;
                let body = e
                    .body
                    .as_ref()
                    .ok_or_else(|| not_streaming("BodyEnd", b.id))?;
                if let Some(owed @ 1..) = e.owed {
                    return Err(Violation(format!(
                        "request {}: the body ended {owed} bytes short of its declared length",
                        b.id
                    )));
                }
                let _ = body.send(Piece::End(b.trailers));
                Some(b.id)
            }
            WorkerMsg::Failed(f) => {
                let e = t
                    .entries
                    .get_mut(&f.id)
                    .ok_or_else(|| unknown("RequestFailed", f.id))?;
                if let Some(head) = e.head.take() {
                    let _ = head.send(Err(Lost::Failed(f.reason)));
                } else if let Some(body) = &e.body {
                    let _ = body.send(Piece::Failed(f.reason));
                }
                Some(f.id)
            }
            WorkerMsg::Credit(c) => {
                let e = t
                    .entries
                    .get(&c.id)
                    .ok_or_else(|| unknown("Credit", c.id))?;
                // A credit for a body we do not stream grants nothing; it is harmless.
                if let Some(w) = &e.send_window {
                    w.add_permits(c.bytes as usize);
                }
                None
            }
            WorkerMsg::Pong(_) => {
                *self.last_pong.lock().unwrap() = Instant::now();
                None
            }
            WorkerMsg::Goodbye(g) => {
                tracing::info!(
                    worker = self.index,
                    pid = self.pid,
                    "worker says goodbye: {}",
                    g.reason
                );
                None
            }
            WorkerMsg::Hello(_) => return Err(Violation("a second Hello".into())),
        };
        if let Some(id) = finished {
            self.served.fetch_add(1, Ordering::Relaxed);
            let entry = t.entries.remove(&id);
            drop(t);
            // Dropped outside our lock: the lease takes the pool's.
            if let Some(e) = entry {
                e.close();
            }
        }
        Ok(())
    }
}

fn unknown(what: &str, id: u64) -> Violation {
    Violation(format!("{what} for request {id}, which is not in flight"))
}

fn not_streaming(what: &str, id: u64) -> Violation {
    Violation(format!(
        "a {what} for request {id}, whose response head is missing or not streamed"
    ))
}

/// Drains every frame already queued into the buffer, then flushes once: under load
/// one write carries many frames.
pub async fn write_loop(
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    mut sink: FramedWrite<OwnedWriteHalf, OutgoingCodec>,
) {
    while let Some(item) = rx.recv().await {
        let mut next = Some(item);
        while let Some(item) = next {
            match sink.feed(item).await {
                Ok(()) => {}
                Err(ProtocolError::Io(_)) => return,
                // Request heads are encoded (and size-checked) by their request task;
                // what remains (trailers) can only exceed the limit by misconfiguration.
                Err(e) => {
                    tracing::error!("a frame exceeds the channel's limit and was not sent: {e}")
                }
            }
            next = rx.try_recv().ok();
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Balance;
    use crate::pool::Pool;

    fn channel_in_a_pool() -> (Arc<Pool>, Arc<Channel>, mpsc::UnboundedReceiver<Outgoing>) {
        let pool = Pool::new(Balance::LeastOutstanding, 16, Duration::from_secs(5));
        let (queue, rx) = mpsc::unbounded_channel();
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            pid: 1,
            max_in_flight: 8,
            initial_window: DEFAULT_INITIAL_WINDOW,
            sdk_name: "test".into(),
            sdk_version: "0".into(),
        };
        let welcome = Welcome {
            protocol_version: PROTOCOL_VERSION,
            worker_index: 0,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE as u32,
            max_in_flight: 8,
            initial_window: DEFAULT_INITIAL_WINDOW,
        };
        let channel = Channel::new(0, 1, queue, &hello, &welcome);
        pool.add(channel.clone(), 8);
        (pool, channel, rx)
    }

    async fn register(
        pool: &Arc<Pool>,
        channel: &Channel,
        frame: &'static [u8],
    ) -> Result<Exchange, Refused<&'static str>> {
        let lease = pool.acquire_avoiding(None).await.unwrap();
        channel.register(
            lease,
            &http::Method::GET,
            &http::Uri::from_static("/"),
            false,
            |_| Ok(Bytes::from_static(frame)),
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
