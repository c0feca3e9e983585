//! One worker's life on its channel: the handshake, then a reader loop that routes
//! every message from the master and runs each request's handler (on a
//! single-threaded runtime, right there until it first has to wait; then, or always
//! on others, as a task of its own). The table of requests in flight is
//! `outbox.rs`'s, the writer task `writer.rs`'s, and a response's way out
//! `response.rs`'s.

use bytes::Bytes;
use ferry_protocol::codec::WorkerCodec;
use ferry_protocol::*;
use futures_util::{FutureExt, StreamExt};
use http::{Request, Response};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::codec::FramedRead;
use tower::ServiceExt;

use crate::body::{Body, BoxError, Piece};
use crate::outbox::{inline_response, Active, Outbox, Shared};
use crate::response::{send_response, Sizes};
use crate::writer::{write_loop, Writer};
use crate::{RequestInfo, Worker};

/// Largest data carried by one body chunk frame.
const CHUNK_MAX: usize = 64 * 1024;

/// Woken by [`crate::retire`]; holds its permit until the session takes it.
pub(crate) static RETIRE: Notify = Notify::const_new();

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
    let (read, write) = ferry_channel::split(stream)?;
    let mut reader = FramedRead::new(read, WorkerCodec::default());
    let mut writer = Writer::new(write);

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
    writer.set_max_frame_size(max_frame);
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
        sizes: Sizes {
            chunk: CHUNK_MAX
                .min(welcome.initial_window.max(1) as usize)
                .min(max_frame.saturating_sub(BODY_CHUNK_OVERHEAD).max(1)),
            max_frame,
        },
        // A quarter of our window: the master never stalls, and credits stay few.
        credit_every: (cfg.initial_window as usize / 4).max(1),
        // On one thread, running a handler's first steps right away costs nothing and
        // saves a task. On several, it would hold up the reader (pings, cancels, the
        // next requests) while other threads could have run the handler.
        poll_inline: tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread,
    };

    let mut draining = false;
    // Set once this worker said its retiring Goodbye: requests past it are not run.
    let mut retired: Option<u64> = None;
    let mut last_id = 0;
    let end = loop {
        let frame = tokio::select! {
            frame = reader.next() => frame,
            () = RETIRE.notified(), if retired.is_none() => {
                // Goodbye says which requests we took; the master gives any later ones
                // (in transit now) to another worker. We finish ours and exit.
                outbox.send(WorkerMsg::Goodbye(Goodbye {
                    reason: "retired".into(),
                    last_id: Some(last_id),
                }));
                retired = Some(last_id);
                draining = true;
                if shared.requests.lock().unwrap().is_empty() { break End::Drained } else { continue }
            }
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
            // Sent before the master read our Goodbye: it runs elsewhere. (Its body
            // chunks, if any, find no request here and are dropped.)
            MasterMsg::RequestHead(head) if retired.is_some_and(|last| head.id > last) => {}
            MasterMsg::RequestHead(head) => {
                last_id = head.id;
                if let Err(e) = start_request(head, &svc, &outbox, &limits) {
                    abort_all(&shared);
                    return Err(e);
                }
            }
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

    // A retired worker said its Goodbye already.
    if matches!(end, End::Drained) && retired.is_none() {
        outbox.send(WorkerMsg::Goodbye(Goodbye {
            last_id: None,
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
    /// How responses are cut into frames.
    sizes: Sizes,
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

/// Starts one request. An error is fatal to the session (a protocol violation).
fn start_request<S, B>(
    mut head: RequestHead,
    svc: &S,
    outbox: &Outbox,
    limits: &Limits,
) -> io::Result<()>
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
        if table.contains_key(&id) {
            // Its handler will answer that id: any answer to this head would be a
            // second terminal message (SPEC.md 6 lets a worker treat it as fatal).
            return Err(invalid(format!(
                "bad frame from the master: a RequestHead for request {id}, still in flight"
            )));
        }
        if table.len() >= limits.max_in_flight {
            drop(table);
            tracing::error!(id, "the master sent a request over the announced limit");
            outbox.send(WorkerMsg::Failed(RequestFailed {
                id,
                reason: "worker over its in-flight limit".into(),
            }));
            return Ok(());
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
            return Ok(());
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
                Ok(resp) => send_response(id, resp, &out, &window, limits.sizes).await,
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
        return Ok(());
    }
    let task = tokio::spawn(handling);
    if let Some(a) = outbox.0.requests.lock().unwrap().get_mut(&id) {
        a.abort = Some(task.abort_handle());
    }
    Ok(())
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

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn to_io(e: ProtocolError) -> io::Error {
    match e {
        ProtocolError::Io(e) => e,
        e => invalid(e.to_string()),
    }
}
