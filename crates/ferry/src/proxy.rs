//! One request's trip through the pool: turn the hyper request into a `RequestHead`,
//! get a worker slot, send the head (and stream the body under flow control), wait
//! for the response head, and turn it into a hyper response.
//!
//! Every failure here has its own status: 400 unreadable body, 413 body too large,
//! 503 no worker slot (queue full or timed out), 504 request timeout, 502 worker
//! failed or died.

use ferry_protocol::*;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{oneshot, Semaphore};

use crate::body::{CancelGuard, ResponseBody, Stream};
use crate::channel::{Channel, Lost};
use crate::master::Ctx;
use crate::pool::NoSlot;

use crate::config::INLINE_BODY_MAX as INLINE_MAX;

pub async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
) -> Response<ResponseBody> {
    let cfg = &ctx.config;
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|n| n > cfg.max_body_size) {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
    }
    let (parts, body) = req.into_parts();
    let target = match parts.uri.path_and_query() {
        Some(pq) if parts.uri.scheme().is_none() => pq.as_str().to_owned(),
        _ => parts.uri.to_string(),
    };
    let mut head = RequestHead {
        id: 0,
        method: parts.method.as_str().to_owned(),
        target,
        version: version(parts.version),
        headers: headers_from_map(&parts.headers),
        peer: peer.to_string(),
        body: BodyKind::Empty,
    };
    use http_body::Body as _;
    let mut streamed = None;
    if !body.is_end_stream() {
        match length {
            Some(n) if n <= INLINE_MAX => match Limited::new(body, n as usize).collect().await {
                Ok(b) => head.body = BodyKind::Inline(b.to_bytes()),
                Err(_) => {
                    return error(StatusCode::BAD_REQUEST, "could not read the request body\n")
                }
            },
            _ => {
                head.body = BodyKind::Streamed { length };
                streamed = Some(body);
            }
        }
    }
    // A request can be replayed on another worker only if its body is not a stream
    // we have already begun to consume.
    let retryable = cfg.retry_idempotent && streamed.is_none() && idempotent(&parts.method);
    let path = parts.uri.path().to_owned();

    let mut avoid: Option<Arc<Channel>> = None;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let lease = match ctx.pool.acquire_avoiding(avoid.as_ref()).await {
            Ok(l) => l,
            Err(NoSlot::QueueFull) => {
                return unavailable("all workers are busy and the queue is full\n")
            }
            Err(NoSlot::TimedOut) => return unavailable("no worker became free in time\n"),
        };
        let channel = lease.channel().clone();
        let Some(exchange) = channel.register(lease, &head.method, &path) else {
            // The worker died between lease and registration: nothing was sent.
            avoid = Some(channel);
            continue;
        };
        let id = exchange.id;
        let mut msg = head.clone();
        msg.id = id;
        channel.send(MasterMsg::RequestHead(msg));
        let mut guard = CancelGuard {
            channel: channel.clone(),
            id,
            armed: true,
        };

        let (too_large_tx, too_large) = oneshot::channel();
        if let Some(body) = streamed.take() {
            tokio::spawn(pump(
                body,
                channel.clone(),
                id,
                exchange.send_window.clone(),
                cfg.max_body_size,
                too_large_tx,
            ));
        }
        let outcome = tokio::select! {
            r = tokio::time::timeout(cfg.request_timeout, exchange.head) => r,
            Ok(()) = too_large => return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
        };
        let lost = match outcome {
            Err(_) => {
                tracing::warn!(
                    worker = channel.index,
                    pid = channel.pid,
                    "{} {path} timed out after {:?}",
                    head.method,
                    cfg.request_timeout
                );
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the worker did not answer in time\n",
                );
            }
            Ok(Ok(Ok(start))) => {
                let terminal = !matches!(start.body, BodyKind::Streamed { .. });
                if terminal {
                    guard.armed = false;
                }
                return respond(start, exchange.body, guard);
            }
            Ok(Ok(Err(lost))) => lost,
            Ok(Err(_)) => Lost::WorkerGone,
        };
        guard.armed = false;
        match lost {
            Lost::WorkerGone if retryable && attempts < 2 => {
                tracing::info!(
                    "retrying {} {path} on another worker: worker {} died",
                    head.method,
                    channel.index
                );
                avoid = Some(channel);
            }
            Lost::WorkerGone => {
                return error(
                    StatusCode::BAD_GATEWAY,
                    "the worker died while handling the request\n",
                )
            }
            Lost::Failed(reason) => {
                tracing::warn!(
                    worker = channel.index,
                    "{} {path} failed in the worker: {reason}",
                    head.method
                );
                return error(
                    StatusCode::BAD_GATEWAY,
                    "the worker failed to handle the request\n",
                );
            }
        }
    }
}

/// Streams a request body to the worker, never more than its window ahead.
async fn pump(
    mut body: Incoming,
    channel: Arc<Channel>,
    id: u64,
    window: Arc<Semaphore>,
    max: u64,
    too_large: oneshot::Sender<()>,
) {
    let mut total = 0u64;
    loop {
        let frame = match body.frame().await {
            None => {
                channel.send(MasterMsg::BodyEnd(BodyEnd {
                    id,
                    trailers: vec![],
                }));
                return;
            }
            Some(Err(e)) => {
                tracing::debug!("client request body failed: {e}");
                channel.cancel(id);
                return;
            }
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(mut data) => {
                total += data.len() as u64;
                if total > max {
                    let _ = too_large.send(());
                    channel.cancel(id);
                    return;
                }
                while !data.is_empty() {
                    let piece = data.split_to(data.len().min(channel.chunk_size));
                    match window.acquire_many(piece.len() as u32).await {
                        Ok(permit) => permit.forget(),
                        // The request finished (or the worker died): stop sending.
                        Err(_) => return,
                    }
                    channel.send(MasterMsg::BodyChunk(BodyChunk { id, data: piece }));
                }
            }
            Err(frame) => {
                let trailers = frame
                    .into_trailers()
                    .map(|t| headers_from_map(&t))
                    .unwrap_or_default();
                channel.send(MasterMsg::BodyEnd(BodyEnd { id, trailers }));
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

fn respond(
    start: crate::channel::Start,
    rx: tokio::sync::mpsc::UnboundedReceiver<crate::channel::Piece>,
    guard: CancelGuard,
) -> Response<ResponseBody> {
    let Ok(status) = StatusCode::from_u16(start.status) else {
        return error(
            StatusCode::BAD_GATEWAY,
            "the worker sent an invalid status\n",
        );
    };
    // When we carry the body ourselves we know its length; a worker's own
    // Content-Length is kept only for bodiless responses (HEAD, 304).
    let keep_length = matches!(start.body, BodyKind::Empty);
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
    *resp.body_mut() = match start.body {
        BodyKind::Empty => ResponseBody::empty(),
        BodyKind::Inline(b) => ResponseBody::full(b),
        BodyKind::Streamed { length } => {
            let credit_every = (DEFAULT_INITIAL_WINDOW / 4).max(1);
            ResponseBody::Stream(Stream {
                rx,
                guard,
                length,
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

fn version(v: http::Version) -> HttpVersion {
    match v {
        http::Version::HTTP_09 => HttpVersion::Http09,
        http::Version::HTTP_10 => HttpVersion::Http10,
        http::Version::HTTP_2 => HttpVersion::Http2,
        http::Version::HTTP_3 => HttpVersion::Http3,
        _ => HttpVersion::Http11,
    }
}

pub fn error(status: StatusCode, msg: &'static str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(msg));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

fn unavailable(msg: &'static str) -> Response<ResponseBody> {
    let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, msg);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}
