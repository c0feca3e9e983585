//! One worker's life on its channel: the handshake, a reader loop that runs each
//! request's handler (on a single-threaded runtime, right there until it first has
//! to wait; then, or always on others, as a task of its own), and a writer task that coalesces every queued frame into one write. This
//! module owns the table of requests in flight.
//!
//! The table is the arbiter of the protocol's one rule for a worker: every request
//! id gets exactly one terminal message, and nothing after it. Frames for an id are
//! queued only while the id is in the table (checked under the table's lock), and
//! whoever removes the id, the request's own task finishing or a `Cancel` arriving,
//! queues the terminal message in the same critical section.

use bytes::Bytes;
use ferry_protocol::codec::WorkerCodec;
use ferry_protocol::*;
use futures_util::{FutureExt, SinkExt, StreamExt};
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::AbortHandle;
use tokio_util::codec::{FramedRead, FramedWrite};
use tower::ServiceExt;

use crate::body::{Body, BoxError, Piece};
use crate::{RequestInfo, Worker};

/// Largest body a response may carry inline in its head frame.
const INLINE_MAX: usize = 64 * 1024;
/// Largest data carried by one body chunk frame.
const CHUNK_MAX: usize = 64 * 1024;

struct Active {
    /// Where request-body chunks for this id go, while the body is still arriving.
    body: Option<mpsc::UnboundedSender<Piece>>,
    /// Response-body bytes we may still send before the master grants more.
    window: Arc<Semaphore>,
    abort: Option<AbortHandle>,
    /// Whether the response head went out: after it, a failure can only be `Failed`.
    head_sent: bool,
}

struct Shared {
    requests: Mutex<HashMap<u64, Active>>,
    queue: mpsc::UnboundedSender<WorkerMsg>,
    /// Signalled when the table empties, so a drain can finish.
    idle: Notify,
}

/// The handle request tasks and bodies use to send frames.
#[derive(Clone)]
pub(crate) struct Outbox(Arc<Shared>);

impl Outbox {
    /// Queues `msg` for `id` only if `id` is still in flight.
    fn send_if_active(&self, id: u64, msg: WorkerMsg) -> bool {
        let table = self.0.requests.lock().unwrap();
        table.contains_key(&id) && self.0.queue.send(msg).is_ok()
    }

    /// Ends `id` with its terminal message, unless something else already ended it.
    fn finish(&self, id: u64, terminal: WorkerMsg) -> bool {
        let mut table = self.0.requests.lock().unwrap();
        let Some(active) = table.remove(&id) else {
            return false;
        };
        drop(active);
        let _ = self.0.queue.send(terminal);
        if table.is_empty() {
            self.0.idle.notify_one();
        }
        true
    }

    /// Queues the streamed response head of `id`, remembering that it went out.
    fn send_head(&self, id: u64, head: WorkerMsg) -> bool {
        let mut table = self.0.requests.lock().unwrap();
        match table.get_mut(&id) {
            Some(a) => {
                a.head_sent = true;
                self.0.queue.send(head).is_ok()
            }
            None => false,
        }
    }

    /// Ends `id` after its handler panicked: a 500 if no head went out yet, else `Failed`.
    fn finish_after_panic(&self, id: u64) {
        let head_sent = self
            .0
            .requests
            .lock()
            .unwrap()
            .get(&id)
            .is_some_and(|a| a.head_sent);
        let terminal = if head_sent {
            WorkerMsg::Failed(RequestFailed {
                id,
                reason: "handler panicked".into(),
            })
        } else {
            inline_response(id, 500, "Internal Server Error\n")
        };
        self.finish(id, terminal);
    }

    /// Grants the master `n` more request-body bytes for `id`.
    pub(crate) fn credit(&self, id: u64, n: usize) {
        if n > 0 {
            self.send_if_active(
                id,
                WorkerMsg::Credit(Credit {
                    id,
                    bytes: n as u32,
                }),
            );
        }
    }

    fn send(&self, msg: WorkerMsg) {
        let _ = self.0.queue.send(msg);
    }
}

/// Why a session ended without error.
pub(crate) enum End {
    Drained,
    MasterGone,
}

pub(crate) async fn run<S, B>(cfg: Worker, svc: S) -> io::Result<End>
where
    S: tower_service::Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let stream = crate::channel::from_env()?;
    let (read, write) = stream.into_split();
    let mut reader = FramedRead::new(read, WorkerCodec::default());
    let mut writer = FramedWrite::new(write, WorkerCodec::default());

    writer
        .send(WorkerMsg::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            pid: std::process::id(),
            max_in_flight: cfg.max_in_flight,
            initial_window: cfg.initial_window,
            sdk_name: env!("CARGO_PKG_NAME").into(),
            sdk_version: env!("CARGO_PKG_VERSION").into(),
        }))
        .await
        .map_err(to_io)?;
    let welcome = match reader.next().await {
        Some(Ok(MasterMsg::Welcome(w))) => w,
        Some(Ok(other)) => {
            return Err(invalid(format!(
                "expected Welcome from the master, got {other:?}"
            )))
        }
        Some(Err(e)) => return Err(invalid(format!("handshake with the master failed: {e}"))),
        None => {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the master closed the channel during the handshake",
            ))
        }
    };
    let max_frame = welcome.max_frame_size as usize;
    reader.decoder_mut().set_max_frame_size(max_frame);
    writer.encoder_mut().set_max_frame_size(max_frame);
    // Frames queue in the writer's buffer up to this much before it must write.
    writer.set_backpressure_boundary(256 * 1024);
    tracing::debug!(index = welcome.worker_index, "ferry worker ready");

    let (queue, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        requests: Mutex::new(HashMap::new()),
        queue,
        idle: Notify::new(),
    });
    let outbox = Outbox(shared.clone());
    let writer_task = tokio::spawn(write_loop(rx, writer));
    let limits = Limits {
        max_in_flight: cfg.max_in_flight.min(welcome.max_in_flight).max(1) as usize,
        window: welcome.initial_window,
        chunk: CHUNK_MAX
            .min(welcome.initial_window.max(1) as usize)
            .min(max_frame.saturating_sub(BODY_CHUNK_OVERHEAD).max(1)),
        max_frame,
        // A quarter of our window: the master never stalls, and credits stay few.
        credit_every: (cfg.initial_window as usize / 4).max(1),
        // On one thread, running a handler's first steps right away costs nothing and
        // saves a task. On several, it would hold up the reader (pings, cancels, the
        // next requests) while other threads could have run the handler.
        poll_inline: tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread,
    };

    let mut draining = false;
    let end = loop {
        let frame = tokio::select! {
            frame = reader.next() => frame,
            _ = shared.idle.notified(), if draining => {
                if shared.requests.lock().unwrap().is_empty() { break End::Drained } else { continue }
            }
        };
        let msg = match frame {
            // At once, before waiting for anything (the writer may never finish).
            None => {
                crate::channel::master_gone();
                break End::MasterGone;
            }
            Some(Err(ProtocolError::Io(e))) if e.kind() == io::ErrorKind::ConnectionReset => {
                crate::channel::master_gone();
                break End::MasterGone;
            }
            Some(Err(e)) => {
                abort_all(&shared);
                return Err(invalid(format!("bad frame from the master: {e}")));
            }
            Some(Ok(msg)) => msg,
        };
        match msg {
            MasterMsg::RequestHead(head) => start_request(head, &svc, &outbox, &limits),
            MasterMsg::BodyChunk(c) => {
                if let Some(tx) = shared
                    .requests
                    .lock()
                    .unwrap()
                    .get(&c.id)
                    .and_then(|a| a.body.as_ref())
                {
                    let _ = tx.send(Piece::Data(c.data));
                }
            }
            MasterMsg::BodyEnd(e) => {
                if let Some(tx) = shared
                    .requests
                    .lock()
                    .unwrap()
                    .get_mut(&e.id)
                    .and_then(|a| a.body.take())
                {
                    let _ = tx.send(Piece::End(e.trailers));
                }
            }
            MasterMsg::Credit(c) => {
                if let Some(a) = shared.requests.lock().unwrap().get(&c.id) {
                    a.window.add_permits(c.bytes as usize);
                }
            }
            MasterMsg::Cancel(c) => {
                let mut table = shared.requests.lock().unwrap();
                if let Some(active) = table.remove(&c.id) {
                    if let Some(abort) = active.abort {
                        abort.abort();
                    }
                    let _ = shared.queue.send(WorkerMsg::Failed(RequestFailed {
                        id: c.id,
                        reason: "cancelled".into(),
                    }));
                    if table.is_empty() {
                        shared.idle.notify_one();
                    }
                }
            }
            MasterMsg::Ping(p) => {
                let in_flight = shared.requests.lock().unwrap().len() as u32;
                outbox.send(WorkerMsg::Pong(Pong {
                    nonce: p.nonce,
                    in_flight,
                }));
            }
            MasterMsg::Drain => {
                draining = true;
                if shared.requests.lock().unwrap().is_empty() {
                    break End::Drained;
                }
            }
            MasterMsg::Welcome(_) => tracing::warn!("ignoring a second Welcome from the master"),
        }
    };

    if matches!(end, End::Drained) {
        outbox.send(WorkerMsg::Goodbye(Goodbye {
            reason: "drained".into(),
        }));
    } else {
        abort_all(&shared);
    }
    drop(outbox);
    drop(shared);
    // The writer ends once every sender is gone and the queue is flushed.
    let _ = writer_task.await;
    Ok(end)
}

#[derive(Clone, Copy)]
struct Limits {
    max_in_flight: usize,
    /// Response-body window the master granted each request.
    window: u32,
    /// Largest data per body chunk we send.
    chunk: usize,
    /// Largest frame either side accepts.
    max_frame: usize,
    /// Request-body bytes read before they are credited back in one `Credit`.
    credit_every: usize,
    /// Poll each handler once on the reader before giving it a task.
    poll_inline: bool,
}

fn abort_all(shared: &Shared) {
    for (_, active) in shared.requests.lock().unwrap().drain() {
        if let Some(abort) = active.abort {
            abort.abort();
        }
    }
}

/// Drains every frame already queued into the buffer, then flushes once: under load
/// one write carries many frames.
async fn write_loop(
    mut rx: mpsc::UnboundedReceiver<WorkerMsg>,
    mut sink: FramedWrite<OwnedWriteHalf, WorkerCodec>,
) {
    // Requests whose streamed head was refused: their later frames are dropped, since
    // the master never saw the head.
    let mut refused = std::collections::HashSet::new();
    while let Some(msg) = rx.recv().await {
        let mut next = Some(msg);
        while let Some(msg) = next {
            next = rx.try_recv().ok();
            let id = request_id(&msg);
            if let Some(id) = id.filter(|id| refused.contains(id)) {
                if matches!(msg, WorkerMsg::BodyEnd(_) | WorkerMsg::Failed(_)) {
                    refused.remove(&id);
                }
                continue;
            }
            let streamed = matches!(&msg, WorkerMsg::ResponseHead(h) if matches!(h.body, BodyKind::Streamed { .. }));
            match sink.feed(msg).await {
                Ok(()) => {}
                Err(ProtocolError::Io(e)) => {
                    tracing::debug!("channel write failed: {e}");
                    return;
                }
                // Too large for a frame: nothing was buffered. A refused response head
                // becomes a clean failure of its request, so the master is not left waiting.
                Err(e) => {
                    tracing::error!("a frame exceeds the channel's limit and was not sent: {e}");
                    if let Some(id) = id {
                        let reason = format!("the response could not be sent: {e}");
                        let _ = sink
                            .feed(WorkerMsg::Failed(RequestFailed { id, reason }))
                            .await;
                        if streamed {
                            refused.insert(id);
                        }
                    }
                }
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.flush().await;
}

/// The request a response-side frame belongs to.
fn request_id(msg: &WorkerMsg) -> Option<u64> {
    match msg {
        WorkerMsg::ResponseHead(m) => Some(m.id),
        WorkerMsg::BodyChunk(m) => Some(m.id),
        WorkerMsg::BodyEnd(m) => Some(m.id),
        WorkerMsg::Credit(m) => Some(m.id),
        WorkerMsg::Failed(m) => Some(m.id),
        _ => None,
    }
}

fn start_request<S, B>(mut head: RequestHead, svc: &S, outbox: &Outbox, limits: &Limits)
where
    S: tower_service::Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let id = head.id;
    let window = Arc::new(Semaphore::new(limits.window as usize));
    let (body, body_tx) = match std::mem::replace(&mut head.body, BodyKind::Empty) {
        BodyKind::Empty => (Body::empty(), None),
        BodyKind::Inline(b) => (Body::from(b), None),
        BodyKind::Streamed { length } => {
            let (tx, rx) = mpsc::unbounded_channel();
            (
                Body::incoming(id, length, rx, outbox.clone(), limits.credit_every),
                Some(tx),
            )
        }
    };
    {
        let mut table = outbox.0.requests.lock().unwrap();
        if table.contains_key(&id) || table.len() >= limits.max_in_flight {
            drop(table);
            tracing::error!(
                id,
                "the master sent a request over the announced limit or with an id in use"
            );
            outbox.send(WorkerMsg::Failed(RequestFailed {
                id,
                reason: "worker over its in-flight limit".into(),
            }));
            return;
        }
        table.insert(
            id,
            Active {
                body: body_tx,
                window: window.clone(),
                abort: None,
                head_sent: false,
            },
        );
    }
    let request = match build_request(head, body) {
        Ok(r) => r,
        Err(reason) => {
            outbox.finish(id, inline_response(id, 400, reason));
            return;
        }
    };
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let svc = svc.clone();
    let out = outbox.clone();
    let limits = *limits;
    // Boxed so that handing it to a task moves a pointer, not the whole state machine
    // (several copies of a large future per request were a third of a worker's CPU).
    let mut handling = Box::pin(async move {
        let handled = AssertUnwindSafe(async {
            // Errors become `BoxError` at once: `S::Error` need not be `Send`.
            let result = svc.oneshot(request).await.map_err(Into::<BoxError>::into);
            match result {
                Ok(resp) => send_response(id, resp, &out, &window, &limits).await,
                Err(e) => {
                    tracing::error!(%method, path, "handler failed: {e}");
                    out.finish(id, inline_response(id, 500, "Internal Server Error\n"));
                }
            }
        })
        .catch_unwind()
        .await;
        if let Err(panic) = handled {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(%method, path, "handler panicked: {what}");
            out.finish_after_panic(id);
        }
    });
    // Most handlers answer without waiting for anything: poll once right here and
    // spawn a task only for those that are still pending. A pending future has
    // registered only this no-op waker, which is fine: the new task polls it again
    // first thing, and that poll registers the task's own waker.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if limits.poll_inline && handling.as_mut().poll(&mut cx).is_ready() {
        return;
    }
    let task = tokio::spawn(handling);
    if let Some(a) = outbox.0.requests.lock().unwrap().get_mut(&id) {
        a.abort = Some(task.abort_handle());
    }
}

fn build_request(head: RequestHead, body: Body) -> Result<Request<Body>, &'static str> {
    let mut req = Request::new(body);
    *req.method_mut() =
        http::Method::from_bytes(head.method.as_bytes()).map_err(|_| "invalid method\n")?;
    *req.uri_mut() = head
        .target
        .parse()
        .map_err(|_| "invalid request target\n")?;
    *req.version_mut() = match head.version {
        HttpVersion::Http09 => http::Version::HTTP_09,
        HttpVersion::Http10 => http::Version::HTTP_10,
        HttpVersion::Http11 => http::Version::HTTP_11,
        HttpVersion::Http2 => http::Version::HTTP_2,
        HttpVersion::Http3 => http::Version::HTTP_3,
    };
    let headers = req.headers_mut();
    headers.reserve(head.headers.len());
    for h in head.headers {
        let name = http::HeaderName::from_bytes(&h.name).map_err(|_| "invalid header name\n")?;
        let value =
            http::HeaderValue::from_maybe_shared(h.value).map_err(|_| "invalid header value\n")?;
        headers.append(name, value);
    }
    req.extensions_mut().insert(RequestInfo {
        id: head.id,
        peer: head.peer,
    });
    Ok(req)
}

fn inline_response(id: u64, status: u16, body: &'static str) -> WorkerMsg {
    WorkerMsg::ResponseHead(ResponseHead {
        id,
        status,
        headers: vec![Header::new(
            Bytes::from_static(b"content-type"),
            Bytes::from_static(b"text/plain"),
        )],
        body: BodyKind::Inline(Bytes::from_static(body.as_bytes())),
    })
}

async fn send_response<B>(
    id: u64,
    resp: Response<B>,
    out: &Outbox,
    window: &Semaphore,
    limits: &Limits,
) where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = resp.into_parts();
    let status = parts.status.as_u16();
    let headers = headers_from_map(&parts.headers);
    let mut body = std::pin::pin!(body);
    let head = |headers, body| {
        WorkerMsg::ResponseHead(ResponseHead {
            id,
            status,
            headers,
            body,
        })
    };

    if body.is_end_stream() {
        out.finish(id, head(headers, BodyKind::Empty));
        return;
    }
    let length = body.size_hint().exact();
    // Peek at the first frame: a body that is complete after it rides inline.
    let first = match body.frame().await {
        None => {
            out.finish(id, head(headers, BodyKind::Empty));
            return;
        }
        Some(Err(e)) => {
            tracing::error!(
                id,
                "response body failed before its first byte: {}",
                e.into()
            );
            out.finish(id, inline_response(id, 500, "Internal Server Error\n"));
            return;
        }
        Some(Ok(frame)) => frame,
    };
    if let Some(data) = first.data_ref() {
        // Inline only what surely fits in one frame with the head (16 bytes of lengths
        // per header, and room for the fixed fields).
        let head_size = 64
            + headers
                .iter()
                .map(|h| 16 + h.name.len() + h.value.len())
                .sum::<usize>();
        if body.is_end_stream()
            && data.len() <= INLINE_MAX
            && head_size + data.len() <= limits.max_frame
        {
            let data = first.into_data().unwrap_or_default();
            out.finish(id, head(headers, BodyKind::Inline(data)));
            return;
        }
    }
    if !out.send_head(id, head(headers, BodyKind::Streamed { length })) {
        return;
    }
    // The declared length is the client's Content-Length, and the master treats a
    // body that breaks it as a protocol violation (it kills the worker). A body whose
    // size hint was wrong fails only its own request.
    let mut left = length;
    let broken = |reason: String| {
        tracing::error!(id, "{reason}");
        out.finish(id, WorkerMsg::Failed(RequestFailed { id, reason }));
    };
    let short = |left: Option<u64>| match left {
        Some(n) if n > 0 => Some(format!(
            "the response body ended {n} bytes short of its declared length {}",
            length.unwrap_or_default()
        )),
        _ => None,
    };
    let mut next: Option<Result<http_body::Frame<Bytes>, BoxError>> = Some(Ok(first));
    loop {
        match next {
            None => {
                match short(left) {
                    Some(reason) => broken(reason),
                    None => {
                        out.finish(
                            id,
                            WorkerMsg::BodyEnd(BodyEnd {
                                id,
                                trailers: vec![],
                            }),
                        );
                    }
                }
                return;
            }
            Some(Err(e)) => {
                tracing::error!(id, "response body failed: {e}");
                out.finish(
                    id,
                    WorkerMsg::Failed(RequestFailed {
                        id,
                        reason: format!("response body failed: {e}"),
                    }),
                );
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    if let Some(l) = &mut left {
                        match l.checked_sub(data.len() as u64) {
                            Some(rest) => *l = rest,
                            None => {
                                broken(format!(
                                    "the response body ran past its declared length {}",
                                    length.unwrap_or_default()
                                ));
                                return;
                            }
                        }
                    }
                    while !data.is_empty() {
                        let piece = data.split_to(data.len().min(limits.chunk));
                        match window.acquire_many(piece.len() as u32).await {
                            Ok(permit) => permit.forget(),
                            Err(_) => return,
                        }
                        if !out
                            .send_if_active(id, WorkerMsg::BodyChunk(BodyChunk { id, data: piece }))
                        {
                            return;
                        }
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        if let Some(reason) = short(left) {
                            broken(reason);
                            return;
                        }
                        out.finish(
                            id,
                            WorkerMsg::BodyEnd(BodyEnd {
                                id,
                                trailers: headers_from_map(&trailers),
                            }),
                        );
                        return;
                    }
                }
            },
        }
        next = body.frame().await.map(|r| r.map_err(Into::into));
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn to_io(e: ProtocolError) -> io::Error {
    match e {
        ProtocolError::Io(e) => e,
        e => invalid(e.to_string()),
    }
}
