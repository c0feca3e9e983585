//! The table of requests in flight on one worker, and the protocol's rules for
//! every frame the worker sends about them: one response head per request, body
//! bytes only after a streamed head, within the window we granted and exactly the
//! length it declared, nothing for an id that is not in flight. A breach is a
//! [`Violation`]: the supervisor kills the worker.
//!
//! Each entry owns its request's lease (`L`, a pool slot), so a request's slot is
//! freed exactly when the worker finishes it (or dies), never merely because the
//! client went away. The table does no I/O and takes no lock: its owner
//! (`channel.rs`) holds it under one, and drops finished entries outside it.

use bytes::Bytes;
use ferry_protocol::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::activity::Progress;

/// Most fields a response head or its trailers may carry. `http::HeaderMap` panics
/// past 32,768; no real response comes near this.
pub const MAX_RESPONSE_FIELDS: usize = 4096;

/// Body chunks smaller than this are copied out of the channel's read buffer: a
/// slice would keep the whole buffer alive for as long as a slow client takes to
/// read it (tiny chunks from a fast worker could pin hundreds of MiB). Larger chunks
/// are kept as slices; a window's worth of them pins at most window / this many
/// buffers.
pub const COPY_BELOW: usize = 16 * 1024;

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
        /// What the client has taken of it, which the body keeps up to date.
        progress: Arc<Progress>,
    },
}

/// Why a request got no response head.
#[derive(Debug)]
pub enum Lost {
    /// The worker answered `RequestFailed` for it.
    Failed(String),
    /// The worker died or was killed with the request in flight.
    WorkerGone,
    /// No response head within `--request-timeout` ([`Table::expire_heads`]).
    TimedOut,
    /// The worker retired before it read the request, and did not run it: another
    /// worker may, whatever the method ([`Table::retire`]).
    Refused,
}

/// Why a request was not put in flight.
#[derive(Debug, PartialEq, Eq)]
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

/// One request in flight.
pub struct Entry<L> {
    head: Option<oneshot::Sender<Result<Start, Lost>>>,
    /// The head sender went with `Lost::TimedOut`: a head arriving now is late, not a
    /// second one.
    timed_out: bool,
    /// Reported in the slow log already (once per request).
    reported_slow: bool,
    /// Where a streamed response body goes, once its head has arrived.
    body: Option<mpsc::UnboundedSender<Piece>>,
    /// With `body`: what the client took of it, against the bytes routed to it.
    progress: Option<Arc<Progress>>,
    routed: u64,
    /// The request body is still coming from the client: the wait for the response
    /// head (`--request-timeout`) starts when it is all in.
    uploading: bool,
    /// Response-body bytes the worker may still send before we grant more.
    recv_window: u64,
    /// Body bytes still owed, when the worker declared the body's length: the client
    /// was promised exactly that many in `Content-Length`.
    owed: Option<u64>,
    send_window: Option<Arc<Semaphore>>,
    /// Request-body bytes sent to the worker, and those it credited back: it may
    /// credit only what it was sent, so the window never grows past its start.
    body_sent: u64,
    body_credited: u64,
    /// When we sent `Cancel`, if we did: the worker must confirm within the grace period.
    cancelled: Option<Instant>,
    /// For log lines; cheap clones of the request's own (no allocation).
    method: http::Method,
    uri: http::Uri,
    started: Instant,
    _lease: L,
}

impl<L> Entry<L> {
    /// Ends the entry for good: wakes the request body pump so it stops sending. The
    /// lease goes with it, so call it outside any lock the pool's release may need.
    pub fn close(self) {
        if let Some(w) = &self.send_window {
            w.close();
        }
    }

    /// Ends the entry because its worker is gone: its proxy or its body learns it.
    pub fn fail(mut self) {
        if let Some(head) = self.head.take() {
            let _ = head.send(Err(Lost::WorkerGone));
        } else if let Some(body) = &self.body {
            let _ = body.send(Piece::Failed("the worker died mid-response".into()));
        }
        self.close();
    }

    /// Ends the entry because its worker retired before it read the request.
    pub fn refuse(mut self) {
        if let Some(head) = self.head.take() {
            let _ = head.send(Err(Lost::Refused));
        }
        self.close();
    }

    fn describe(&self) -> String {
        format!("{} {}", self.method, self.uri.path())
    }
}

pub struct Table<L> {
    next_id: u64,
    entries: HashMap<u64, Entry<L>, id_hasher::BuildIdHasher>,
    /// Set once the worker is gone: no new requests are registered.
    closed: bool,
    /// Set when `Drain` is queued: nothing may be queued after it for the worker to
    /// miss, so no new requests are registered either.
    draining: bool,
    /// Requests this worker may still be given (`--max-requests`): at 0 it takes no
    /// more, so it serves exactly its limit however many leases were handed out.
    budget: Option<u64>,
}

impl<L> Default for Table<L> {
    fn default() -> Self {
        Table {
            next_id: 0,
            entries: HashMap::default(),
            closed: false,
            draining: false,
            budget: None,
        }
    }
}

impl<L> Table<L> {
    /// A table for a worker that may be given at most `budget` requests.
    pub fn with_budget(budget: Option<u64>) -> Self {
        Table {
            budget,
            ..Table::default()
        }
    }

    /// Requests registered so far.
    pub fn dispatched(&self) -> u64 {
        self.next_id
    }

    /// Whether the worker was given every request its budget allows.
    pub fn exhausted(&self) -> bool {
        self.budget == Some(0)
    }

    /// Puts a request in flight under the next id and returns its head frame, made by
    /// `encode(id)`, for the caller to queue before it lets go of the table.
    /// `send_window`: the request body will follow as chunks, under flow control
    /// starting at that many bytes.
    pub fn register<F, E>(
        &mut self,
        lease: L,
        method: &http::Method,
        uri: &http::Uri,
        send_window: Option<u32>,
        encode: impl FnOnce(u64) -> Result<F, E>,
    ) -> Result<(Exchange, F), (Refused<E>, L)> {
        // A refused lease goes back to the caller, to be dropped outside its lock.
        if self.closed || self.draining || self.exhausted() {
            return Err((Refused::Gone, lease));
        }
        let id = self.next_id + 1;
        let frame = match encode(id) {
            Ok(f) => f,
            Err(e) => return Err((Refused::Encode(e), lease)),
        };
        self.next_id = id;
        if let Some(left) = &mut self.budget {
            *left -= 1;
        }
        let (head_tx, head) = oneshot::channel();
        let send_window = send_window.map(|n| Arc::new(Semaphore::new(n as usize)));
        self.entries.insert(
            id,
            Entry {
                head: Some(head_tx),
                body: None,
                progress: None,
                routed: 0,
                uploading: send_window.is_some(),
                recv_window: 0,
                owed: None,
                send_window: send_window.clone(),
                body_sent: 0,
                body_credited: 0,
                cancelled: None,
                timed_out: false,
                reported_slow: false,
                method: method.clone(),
                uri: uri.clone(),
                started: Instant::now(),
                _lease: lease,
            },
        );
        let exchange = Exchange {
            id,
            head,
            send_window,
        };
        Ok((exchange, frame))
    }

    /// No request is registered from now on: `Drain` is being queued.
    pub fn start_drain(&mut self) {
        self.draining = true;
    }

    /// The worker retires (`Goodbye`): no request is registered from now on, and
    /// with `last_id` (the last it accepted), those sent after it are taken out, for
    /// the caller to refuse ([`Entry::refuse`]) outside its lock.
    pub fn retire(&mut self, last_id: Option<u64>) -> Result<Vec<Entry<L>>, Violation> {
        self.draining = true;
        let Some(last) = last_id else {
            return Ok(Vec::new());
        };
        if last > self.next_id {
            return Err(Violation(format!(
                "its Goodbye accepts requests up to {last}, but it was sent only {}",
                self.next_id
            )));
        }
        let later: Vec<u64> = self
            .entries
            .keys()
            .copied()
            .filter(|&id| id > last)
            .collect();
        let mut refused = Vec::with_capacity(later.len());
        for id in later {
            let e = self.entries.remove(&id).expect("listed");
            if e.head.is_none() {
                return Err(Violation(format!(
                    "it answered request {id}, then said in its Goodbye it never took it"
                )));
            }
            refused.push(e);
        }
        Ok(refused)
    }

    /// Marks request `id` cancelled; true if a `Cancel` should be sent (the first time).
    pub fn cancel(&mut self, id: u64) -> bool {
        match self.entries.get_mut(&id) {
            Some(e) if e.cancelled.is_none() => {
                e.cancelled = Some(Instant::now());
                true
            }
            _ => false,
        }
    }

    /// Counts `n` request-body bytes as sent for `id`; true if the request is still in
    /// flight (so the chunk should be sent).
    pub fn body_sent(&mut self, id: u64, n: usize) -> bool {
        match self.entries.get_mut(&id) {
            Some(e) => {
                e.body_sent += n as u64;
                true
            }
            None => false,
        }
    }

    /// The whole request body of `id` is sent: from now on the worker's time counts.
    /// True if the request is still in flight.
    pub fn upload_done(&mut self, id: u64) -> bool {
        match self.entries.get_mut(&id) {
            Some(e) => {
                if e.uploading {
                    e.uploading = false;
                    e.started = Instant::now();
                }
                true
            }
            None => false,
        }
    }

    /// Streamed HTTP/2 responses whose client has taken nothing for `timeout` while
    /// bytes were waiting for it: each is marked stalled and cancelled (the caller
    /// sends the `Cancel`s), so its slot is freed when the worker confirms. (Taking
    /// is counted a piece at a time, up to 64 KiB: a client must take one within the
    /// timeout. Over HTTP/1.1 the socket's write timeout does this job.)
    pub fn stalled(&mut self, timeout: Duration) -> Vec<u64> {
        let mut ids = Vec::new();
        for (id, e) in self.entries.iter_mut() {
            let Some(p) = &e.progress else { continue };
            if p.is_h2() && e.cancelled.is_none() && e.routed > p.taken() && p.idle_for() >= timeout
            {
                p.mark_stalled();
                e.cancelled = Some(Instant::now());
                ids.push(*id);
            }
        }
        ids
    }

    /// Grants the worker `n` more response-body bytes for `id`; true if the request
    /// is still in flight (so the `Credit` should be sent).
    pub fn credit(&mut self, id: u64, n: u32) -> bool {
        match self.entries.get_mut(&id) {
            Some(e) => {
                e.recv_window += n as u64;
                true
            }
            None => false,
        }
    }

    /// The worker is gone: takes every entry out (for [`Entry::fail`], outside the
    /// lock), and no new ones register.
    pub fn close_all(&mut self) -> Vec<Entry<L>> {
        self.closed = true;
        self.entries.drain().map(|(_, e)| e).collect()
    }

    /// The requests in flight, for log lines: `GET /path (1.2s)`.
    pub fn describe_in_flight(&self) -> Vec<String> {
        self.entries
            .values()
            .map(|e| format!("{} ({:.1?})", e.describe(), e.started.elapsed()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Ends the wait of every request that has had no response head for `timeout`:
    /// its proxy gets `Lost::TimedOut` (and answers 504, then cancels the request).
    pub fn expire_heads(&mut self, timeout: Duration) {
        for e in self.entries.values_mut() {
            if e.head.is_some() && !e.uploading && e.started.elapsed() >= timeout {
                if let Some(head) = e.head.take() {
                    e.timed_out = true;
                    let _ = head.send(Err(Lost::TimedOut));
                }
            }
        }
    }

    /// Requests still without a response head `threshold` after they were sent (or
    /// their upload ended), each reported once: `GET /path (2.1s)`.
    pub fn newly_slow(&mut self, threshold: Duration) -> Vec<String> {
        let mut slow = Vec::new();
        for e in self.entries.values_mut() {
            let age = e.started.elapsed();
            if e.head.is_some() && !e.uploading && !e.reported_slow && age >= threshold {
                e.reported_slow = true;
                slow.push(format!("{} ({age:.1?})", e.describe()));
            }
        }
        slow
    }

    /// A request whose cancellation the worker has not confirmed within `grace`.
    pub fn overdue_cancel(&self, grace: Duration) -> Option<String> {
        self.entries
            .values()
            .find(|e| e.cancelled.is_some_and(|at| at.elapsed() > grace))
            .map(Entry::describe)
    }

    /// Routes one of the worker's messages about a request. `window` is the
    /// response-body window we announced in `Welcome`. Returns the entry of a request
    /// that the message finished, for the caller to close outside its lock. Messages
    /// about no request (`Pong`, `Goodbye`, `Hello`) are the caller's; here they do
    /// nothing.
    pub fn route(&mut self, msg: WorkerMsg, window: u32) -> Result<Option<Entry<L>>, Violation> {
        let finished = match msg {
            WorkerMsg::ResponseHead(h) => {
                let e = self
                    .entries
                    .get_mut(&h.id)
                    .ok_or_else(|| unknown("ResponseHead", h.id))?;
                if h.headers.len() > MAX_RESPONSE_FIELDS {
                    return Err(Violation(format!(
                        "request {}: a response head of {} fields (at most {MAX_RESPONSE_FIELDS})",
                        h.id,
                        h.headers.len()
                    )));
                }
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
                        let progress = Arc::new(Progress::default());
                        e.body = Some(tx);
                        e.progress = Some(progress.clone());
                        e.recv_window = window as u64;
                        e.owed = length;
                        let body = StartBody::Streamed {
                            length,
                            pieces,
                            progress,
                        };
                        (body, false)
                    }
                };
                // The receiver may be gone (client left); the Cancel is already queued.
                if let Some(head) = head {
                    let _ = head.send(Ok(Start {
                        status: h.status,
                        headers: h.headers,
                        body,
                    }));
                }
                finished.then_some(h.id)
            }
            WorkerMsg::BodyChunk(c) => {
                let e = self
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
                e.routed += len;
                if let Some(owed) = &mut e.owed {
                    *owed = owed.checked_sub(len).ok_or_else(|| {
                        Violation(format!(
                            "request {}: body chunks run past the declared length",
                            c.id
                        ))
                    })?;
                }
                let data = if c.data.len() < COPY_BELOW {
                    Bytes::copy_from_slice(&c.data)
                } else {
                    c.data
                };
                let _ = body.send(Piece::Data(data));
                None
            }
            WorkerMsg::BodyEnd(b) => {
                let e = self
                    .entries
                    .get(&b.id)
                    .ok_or_else(|| unknown("BodyEnd", b.id))?;
                let body = e
                    .body
                    .as_ref()
                    .ok_or_else(|| not_streaming("BodyEnd", b.id))?;
                if b.trailers.len() > MAX_RESPONSE_FIELDS {
                    return Err(Violation(format!(
                        "request {}: {} trailer fields (at most {MAX_RESPONSE_FIELDS})",
                        b.id,
                        b.trailers.len()
                    )));
                }
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
                let e = self
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
                let e = self
                    .entries
                    .get_mut(&c.id)
                    .ok_or_else(|| unknown("Credit", c.id))?;
                // A credit for a body we do not stream grants nothing; it is harmless.
                if let Some(w) = &e.send_window {
                    // Only bytes we sent may be credited back: more would grow the window
                    // without bound (and past what a semaphore can hold, which panics).
                    let credited = e.body_credited + c.bytes as u64;
                    if credited > e.body_sent {
                        return Err(Violation(format!(
                            "request {}: credits for {credited} request-body bytes, but only {} were sent",
                            c.id, e.body_sent
                        )));
                    }
                    e.body_credited = credited;
                    w.add_permits(c.bytes as usize);
                }
                None
            }
            WorkerMsg::Pong(_) | WorkerMsg::Goodbye(_) | WorkerMsg::Hello(_) => None,
        };
        Ok(finished.and_then(|id| self.entries.remove(&id)))
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

mod id_hasher;
#[cfg(test)]
mod tests;
