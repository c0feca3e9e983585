//! One request's trip through the pool: turn the hyper request into a `RequestHead`,
//! get a worker slot, send the head (and stream the body under flow control), wait
//! for the response head, and turn it into a hyper response.
//!
//! Every failure here has its own status: 400 a missing or repeated `Host` (HTTP/1.1)
//! or an unreadable body, 408 a client that paused its upload past
//! `--body-read-timeout`, 413 body too large, 431 head too large for a frame (a
//! misconfiguration), 503 no worker slot (queue full or timed out), 504 request
//! timeout, 502 worker failed or died. A client's fault is never blamed on a worker.

use ferry_protocol::*;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::sync::Arc;
use tokio::sync::{oneshot, Semaphore};

use crate::access_log::Dispatched;
use crate::activity::Activity;
use crate::body::{CancelGuard, ResponseBody, Stream};
use crate::ctx::Ctx;
use crate::dispatch::channel::Channel;
use crate::dispatch::pool::NoSlot;
use crate::dispatch::table::{Lost, Refused, Start, StartBody};
use crate::events::Event;
use crate::head::Head;

use crate::config::INLINE_BODY_MAX as INLINE_MAX;

/// Answers one request. `activity`, for HTTP/2, is its connection's: a streamed
/// response reports to it whether its client keeps up. With the access log on, the response carries
/// where the request went ([`Dispatched`], an extension).
pub async fn handle(
    req: Request<Incoming>,
    peer: &str,
    ctx: &Ctx,
    activity: Option<&Arc<Activity>>,
) -> Response<ResponseBody> {
    if ctx.access_log.is_none() {
        return answer(req, peer, ctx, activity, None).await;
    }
    let mut dispatched = None;
    let mut resp = answer(req, peer, ctx, activity, Some(&mut dispatched)).await;
    if let Some(d) = dispatched {
        resp.extensions_mut().insert(d);
    }
    resp
}

/// The request's whole exchange; `dispatched`, when asked for, learns which worker
/// took it and how long it waited for one.
async fn answer(
    req: Request<Incoming>,
    peer: &str,
    ctx: &Ctx,
    activity: Option<&Arc<Activity>>,
    mut dispatched: Option<&mut Option<Dispatched>>,
) -> Response<ResponseBody> {
    let cfg = &ctx.config;
    let asked = dispatched.as_ref().map(|_| std::time::Instant::now());
    // RFC 9112 §3.2: exactly one Host in an HTTP/1.1 request (HTTP/2 has :authority).
    if req.version() == http::Version::HTTP_11
        && req.headers().get_all(header::HOST).iter().count() != 1
    {
        return error(
            StatusCode::BAD_REQUEST,
            "an HTTP/1.1 request needs exactly one Host header\n",
        );
    }
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|n| n > cfg.max_body_size) {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
    }
    let (parts, body) = req.into_parts();
    use http_body::Body as _;
    let mut inline = None;
    let mut streamed = None;
    if !body.is_end_stream() {
        match length {
            Some(n) if n <= INLINE_MAX => {
                let read = Limited::new(body, n as usize).collect();
                match tokio::time::timeout(cfg.body_read_timeout, read).await {
                    Ok(Ok(b)) => inline = Some(b.to_bytes()),
                    Ok(Err(_)) => {
                        return error(StatusCode::BAD_REQUEST, "could not read the request body\n")
                    }
                    Err(_) => return slow_upload(),
                }
            }
            _ => streamed = Some(body),
        }
    }
    let head = Head {
        parts: &parts,
        peer,
        inline: inline.as_ref(),
        streamed: streamed.is_some(),
        length,
    };
    // A request can be replayed on another worker only if its body is not a stream
    // we have already begun to consume.
    let replayable = streamed.is_none();
    let retryable = cfg.retry_idempotent && replayable && idempotent(&parts.method);
    let path = parts.uri.path();

    let mut avoid: Option<Arc<Channel>> = None;
    let mut attempts = 0;
    // Requests refused by retiring workers: each retirement starts a new worker, so
    // this bounds only a pathological run of them.
    let mut refusals = 0;
    loop {
        let lease = match ctx.pool.acquire_avoiding(avoid.as_ref()).await {
            Ok(l) => l,
            Err(NoSlot::QueueFull) => {
                ctx.events.emit(|| Event::QueueFull {
                    waiting: ctx.pool.waiting(),
                });
                return unavailable("all workers are busy and the queue is full\n");
            }
            Err(NoSlot::TimedOut) => return unavailable("no worker became free in time\n"),
        };
        let channel = lease.channel().clone();
        let waited = asked.map(|t| t.elapsed());
        let registered = channel.register(lease, &parts.method, &parts.uri, head.streamed, |id| {
            head.encode(id, channel.max_frame)
        });
        let exchange = match registered {
            Ok(x) => x,
            Err(Refused::Gone) => {
                // The worker died, began draining or was given its last request after
                // the lease: nothing was sent. It takes nothing more, so it leaves the
                // pool now (its supervisor would, but on this thread only after us).
                ctx.pool.remove(&channel);
                avoid = Some(channel);
                continue;
            }
            Err(Refused::Encode(e)) => {
                // Only a misconfiguration gets here: `Config::check` sizes frames for any head.
                tracing::error!(
                    "{} {path}: the request head does not fit in a frame: {e}",
                    parts.method
                );
                return error(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "request head too large\n",
                );
            }
        };
        // Only a request that reached a worker uses up a try: refusals sent nothing.
        attempts += 1;
        let id = exchange.id;
        if let (Some(d), Some(waited)) = (dispatched.as_deref_mut(), waited) {
            *d = Some(Dispatched {
                slot: channel.index,
                pid: channel.pid,
                id,
                waited,
            });
        }
        let mut guard = CancelGuard {
            channel: channel.clone(),
            id,
            armed: true,
        };

        // Made only for a streamed body: the pump's word that the client's upload failed.
        let mut upload_failed = None;
        if let (Some(body), Some(window)) = (streamed.take(), exchange.send_window) {
            let (failed, failure) = oneshot::channel();
            upload_failed = Some(failure);
            let limits = UploadLimits {
                max: cfg.max_body_size,
                gap: cfg.body_read_timeout,
                stall: cfg.request_timeout,
            };
            tokio::spawn(pump(body, channel.clone(), id, window, limits, failed));
        }
        // `--request-timeout` arrives as `Lost::TimedOut` (`Channel::expire_heads`).
        let outcome = match upload_failed {
            None => exchange.head.await,
            Some(failure) => tokio::select! {
                r = exchange.head => r,
                // The guard, still armed, cancels the request as it drops.
                Ok(status) = failure => return upload_error(status),
            },
        };
        let lost = match outcome {
            Ok(Ok(start)) => {
                if !matches!(start.body, StartBody::Streamed { .. }) {
                    // Finished: nothing left to cancel.
                    guard.armed = false;
                }
                return respond(start, guard, parts.method == Method::HEAD, activity);
            }
            Ok(Err(lost)) => lost,
            Err(_) => Lost::WorkerGone,
        };
        // A timed-out request is still running on the worker: the guard, left armed,
        // cancels it as it drops. Any other loss ended the request there already.
        guard.armed = matches!(lost, Lost::TimedOut);
        match lost {
            Lost::TimedOut => {
                tracing::warn!(
                    worker = channel.index,
                    pid = channel.pid,
                    "{} {path} timed out after {:?}",
                    parts.method,
                    cfg.request_timeout
                );
                ctx.events.emit(|| Event::RequestTimedOut {
                    slot: channel.index,
                    pid: channel.pid,
                    request: format!("{} {path}", parts.method),
                });
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the worker did not answer in time\n",
                );
            }
            // Never run: safe to send anywhere, whatever the method.
            Lost::Refused if replayable && refusals < MAX_REFUSALS => {
                refusals += 1;
                attempts -= 1;
                avoid = Some(channel);
            }
            Lost::Refused => {
                return unavailable("the worker retired before it took the request\n");
            }
            Lost::WorkerGone if retryable && attempts < 2 => {
                tracing::info!(
                    "retrying {} {path} on another worker: worker {} died",
                    parts.method,
                    channel.index
                );
                avoid = Some(channel);
            }
            Lost::WorkerGone => {
                return error(
                    StatusCode::BAD_GATEWAY,
                    "the worker died while handling the request\n",
                );
            }
            Lost::Failed(reason) => {
                tracing::warn!(
                    worker = channel.index,
                    "{} {path} failed in the worker: {reason}",
                    parts.method
                );
                return error(
                    StatusCode::BAD_GATEWAY,
                    "the worker failed to handle the request\n",
                );
            }
        }
    }
}

/// How many retiring workers may refuse one request before it gets 503.
const MAX_REFUSALS: u32 = 8;

/// What a client's upload is held to.
struct UploadLimits {
    /// `--max-body-size`.
    max: u64,
    /// `--body-read-timeout`: the longest pause between two reads.
    gap: std::time::Duration,
    /// `--request-timeout`: the longest the worker may leave the window closed (it
    /// is not reading the body), since the head's clock waits for the upload.
    stall: std::time::Duration,
}

/// Streams a request body to the worker, never more than its window ahead. A client
/// that sends too much, pauses too long or breaks the body's framing gets its status
/// through `failed` (413, 408, 400), and the worker's request is cancelled.
async fn pump(
    mut body: Incoming,
    channel: Arc<Channel>,
    id: u64,
    window: Arc<Semaphore>,
    limits: UploadLimits,
    failed: oneshot::Sender<StatusCode>,
) {
    let mut total = 0u64;
    let fail = |status| {
        let _ = failed.send(status);
        channel.cancel(id);
    };
    loop {
        let frame = match tokio::time::timeout(limits.gap, body.frame()).await {
            Ok(None) => {
                channel.end_body(id, vec![]);
                return;
            }
            Ok(Some(Err(e))) => {
                tracing::debug!("client request body failed: {e}");
                return fail(StatusCode::BAD_REQUEST);
            }
            Err(_) => {
                tracing::debug!("client paused its request body for {:?}", limits.gap);
                return fail(StatusCode::REQUEST_TIMEOUT);
            }
            Ok(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(mut data) => {
                total += data.len() as u64;
                if total > limits.max {
                    return fail(StatusCode::PAYLOAD_TOO_LARGE);
                }
                while !data.is_empty() {
                    let piece = data.split_to(data.len().min(channel.chunk_size));
                    let credit = window.acquire_many(piece.len() as u32);
                    match tokio::time::timeout(limits.stall, credit).await {
                        Ok(Ok(permit)) => permit.forget(),
                        // The request finished (or the worker died): stop sending.
                        Ok(Err(_)) => return,
                        // The worker stopped reading the body: its fault, as a timeout.
                        Err(_) => {
                            tracing::warn!(
                                worker = channel.index,
                                pid = channel.pid,
                                "the worker read none of a request body for {:?}",
                                limits.stall
                            );
                            return fail(StatusCode::GATEWAY_TIMEOUT);
                        }
                    }
                    if !channel.send_body_chunk(id, piece) {
                        return;
                    }
                }
            }
            Err(frame) => {
                let trailers = frame
                    .into_trailers()
                    .map(|t| headers_from_map(&t))
                    .unwrap_or_default();
                channel.end_body(id, trailers);
                return;
            }
        }
    }
}

/// Headers that describe the worker-to-master hop, not the response: hyper sets its own.
fn hop_by_hop(name: &[u8]) -> bool {
    const HOP: [&[u8]; 7] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"trailer",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// The client's response from the worker's head. `head_request`: the client asked
/// with HEAD, so it gets the body's length and no body. hyper drops such a body itself
/// for HTTP/1.1 but sends it for HTTP/2, where the client takes it as a protocol error.
fn respond(
    start: Start,
    guard: CancelGuard,
    head_request: bool,
    activity: Option<&Arc<Activity>>,
) -> Response<ResponseBody> {
    let Ok(status) = StatusCode::from_u16(start.status) else {
        return error(
            StatusCode::BAD_GATEWAY,
            "the worker sent an invalid status\n",
        );
    };
    // When we carry the body ourselves we know its length; a worker's own
    // Content-Length is kept only for bodiless responses (HEAD, 304).
    let keep_length = matches!(start.body, StartBody::Empty);
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    for h in start.headers {
        if hop_by_hop(&h.name) || (!keep_length && h.name.eq_ignore_ascii_case(b"content-length")) {
            continue;
        }
        match (
            http::HeaderName::from_bytes(&h.name),
            HeaderValue::from_maybe_shared(h.value),
        ) {
            (Ok(n), Ok(v)) => {
                headers.append(n, v);
            }
            _ => tracing::warn!(
                "dropping an invalid response header from worker {}",
                guard.channel.index
            ),
        }
    }
    if head_request {
        let length = match &start.body {
            StartBody::Empty => None,
            StartBody::Inline(b) => Some(b.len() as u64),
            StartBody::Streamed { length, .. } => *length,
        };
        if let Some(n) = length {
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        // A streamed body is not wanted: the guard, dropped here, cancels it.
        return resp;
    }
    *resp.body_mut() = match start.body {
        StartBody::Empty => ResponseBody::empty(),
        StartBody::Inline(b) => ResponseBody::full(b),
        StartBody::Streamed {
            length,
            pieces: rx,
            progress,
        } => {
            if let Some(a) = activity {
                progress.attach(a);
            }
            let credit_every = (DEFAULT_INITIAL_WINDOW / 4).max(1);
            ResponseBody::Stream(Stream {
                rx,
                guard,
                length,
                remaining: length,
                progress,
                uncredited: 0,
                credit_every,
            })
        }
    };
    resp
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

pub fn error(status: StatusCode, msg: &'static str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(msg));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// The answer to a client whose upload failed, by the status the pump chose.
fn upload_error(status: StatusCode) -> Response<ResponseBody> {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => error(status, "request body too large\n"),
        StatusCode::REQUEST_TIMEOUT => slow_upload(),
        StatusCode::GATEWAY_TIMEOUT => {
            error(status, "the worker did not read the request body in time\n")
        }
        _ => error(StatusCode::BAD_REQUEST, "could not read the request body\n"),
    }
}

/// 408: the client paused its request body for longer than `--body-read-timeout`.
/// The connection closes: what the client sends next is the rest of that body.
fn slow_upload() -> Response<ResponseBody> {
    let mut resp = error(
        StatusCode::REQUEST_TIMEOUT,
        "the request body came too slowly\n",
    );
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn unavailable(msg: &'static str) -> Response<ResponseBody> {
    let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, msg);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}
