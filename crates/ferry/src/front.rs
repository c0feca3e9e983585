//! The HTTP front: accepts connections and serves each with hyper: HTTP/1.1
//! (keep-alive, pipelining, `Expect: 100-continue`, chunked bodies), or HTTP/2 when
//! the client opens with the HTTP/2 preface (h2c with prior knowledge, as load
//! balancers and gRPC clients speak to a backend). Each comes with the limits that
//! keep a bad client from costing us: head size, header count (HTTP/1) or header
//! list size (HTTP/2), and a header read timeout.
//!
//! The timeout needs the timer: without `.timer(...)` hyper silently leaves it off,
//! and a slowloris client holds the connection forever. Telling the protocols apart
//! is bounded by the same timeout, so a client that sends nothing, or half a
//! preface, is dropped too. hyper closes an idle HTTP/1.1 keep-alive connection after
//! that timeout (it is waiting for the next head); HTTP/2 has no such wait, so an
//! HTTP/2 connection with no request in flight for as long is closed here (GOAWAY).

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ctx::Ctx;

/// hyper refuses read buffers under 8 KiB.
const MIN_BUF: usize = 8192;

/// What an HTTP/2 client sends first (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves until `shutdown`, then stops accepting and waits for every open
/// connection to finish its request in progress (idle keep-alive ones close at once).
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let cfg = &ctx.config;
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size((cfg.max_header_size as usize).max(MIN_BUF))
        .max_headers(cfg.max_headers);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        // Counted as HTTP/2 counts it: names and values plus 32 bytes per field.
        .max_header_list_size(cfg.max_header_size.min(u32::MAX as u64) as u32);
    let builders = Arc::new((h1, h2));
    // Every connection's task, so a graceful stop can wait for the HTTP/2 ones too
    // (hyper-util's watcher covers HTTP/1.1; HTTP/2 connections handle the stop
    // themselves, beside their idle check).
    let tasks = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Taken now, so a graceful stop waits for this connection from the start.
        let watcher = graceful.watcher();
        let (ctx, builders, shutdown) = (ctx.clone(), builders.clone(), shutdown.clone());
        tasks.spawn(async move {
            let timeout = ctx.config.header_read_timeout;
            let is_h2 = tokio::select! {
                r = tokio::time::timeout(timeout, opens_with_h2_preface(&stream)) => match r {
                    Ok(Ok(is_h2)) => is_h2,
                    // Closed, failed, or silent for too long: nothing to answer.
                    _ => return,
                },
                _ = shutdown.cancelled() => return,
            };
            let io = TokioIo::new(stream);
            let (h1, h2) = &*builders;
            let ended = if is_h2 {
                drop(watcher);
                let activity = Arc::new(Activity::new());
                let conn = h2.serve_connection(io, service(ctx, peer, Some(activity.clone())));
                serve_h2(conn, activity, timeout, shutdown).await
            } else {
                watcher
                    .watch(h1.serve_connection(io, service(ctx, peer, None)))
                    .await
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    tasks.close();
    tokio::join!(graceful.shutdown(), tasks.wait());
}

/// Requests in flight on one HTTP/2 connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    last_done: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            last_done: Mutex::new(Instant::now()),
        }
    }

    fn idle_for(&self) -> Option<Duration> {
        (self.in_flight.load(Ordering::Relaxed) == 0)
            .then(|| self.last_done.lock().unwrap().elapsed())
    }
}

/// Counts one request in flight while it lives.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last_done.lock().unwrap() = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves an HTTP/2 connection until it ends. It is shut down gracefully (GOAWAY:
/// streams in progress finish, no new ones) on a graceful stop, or once no request
/// has been in flight for `idle`.
async fn serve_h2<I, S, E, B>(
    conn: http2::Connection<I, S, E>,
    activity: Arc<Activity>,
    idle: Duration,
    shutdown: CancellationToken,
) -> hyper::Result<()>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    let mut conn = std::pin::pin!(conn);
    let mut check = tokio::time::interval((idle / 4).max(Duration::from_millis(10)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => return ended,
            _ = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = check.tick(), if !closing => {
                if activity.idle_for().is_some_and(|d| d >= idle) {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Every request of one connection goes to [`crate::proxy::handle`]. With
/// `activity`, each request counts as in flight until its response head is ready.
fn service(
    ctx: Arc<Ctx>,
    peer: SocketAddr,
    activity: Option<Arc<Activity>>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<crate::body::ResponseBody>,
    Error = Infallible,
    Future = impl std::future::Future<
        Output = Result<http::Response<crate::body::ResponseBody>, Infallible>,
    > + Send,
> + Clone {
    // Formatted once per connection, not once per request.
    let peer: Arc<str> = peer.to_string().into();
    service_fn(move |req| {
        let ctx = ctx.clone();
        let peer = peer.clone();
        let busy = activity.clone().map(Busy::new);
        async move {
            let _busy = busy;
            let resp = crate::proxy::handle(req, &peer, &ctx).await;
            ctx.stats.count_response(resp.status());
            Ok::<_, Infallible>(resp)
        }
    })
}

/// Whether the client's first bytes are the HTTP/2 preface. Peeks, so hyper still
/// reads everything. Decided at the first byte that differs (an HTTP/1 request differs
/// at its first or second byte); only a client that sends a prefix of the preface and
/// stops makes us wait, and the caller's timeout bounds that. (A `P…` request head
/// trickled byte by byte can so take up to twice `--header-read-timeout`: this wait,
/// then hyper's own.)
async fn opens_with_h2_preface(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A part of the preface, and no more yet: peek would return the same bytes at
        // once, so wait a moment instead of spinning.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
