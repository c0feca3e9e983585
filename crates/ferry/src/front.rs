//! The HTTP front: accepts connections and serves each with hyper: HTTP/1.1
//! (keep-alive, pipelining, `Expect: 100-continue`, chunked bodies), or HTTP/2 when
//! the client opens with the HTTP/2 preface (h2c with prior knowledge, as load
//! balancers and gRPC clients speak to a backend). Each comes with the limits that
//! keep a bad client from costing us: head size, header count (HTTP/1) or header
//! list size (HTTP/2), a header read timeout, a send timeout, at most
//! `--max-streams-per-connection` requests at once on one connection, and at most
//! `--max-connections` connections (at the cap, accepting pauses until one closes).
//!
//! The header timeout needs the timer: without `.timer(...)` hyper silently leaves it
//! off, and a slowloris client holds the connection forever. Telling the protocols
//! apart reads the first bytes once (bounded by the same timeout) and replays them
//! into hyper ([`crate::client_io::ClientIo`]), so a client that sends nothing, or
//! half a preface, costs one timer and no CPU. hyper closes an idle HTTP/1.1
//! keep-alive connection after that timeout (it is waiting for the next head); HTTP/2
//! has no such wait, so an HTTP/2 connection with nothing in progress for as long is
//! closed here (GOAWAY), and one whose every request is stalled (`activity.rs`) is
//! dropped.

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::{Dispatched, Record};
use crate::activity::{Activity, Busy};
use crate::body::ResponseBody;
use crate::client_io::{ClientIo, Prefix};
use crate::config::HYPER_MAX_HEADERS;
use crate::ctx::Ctx;
use crate::listen::{Listener, Stream};

/// hyper refuses read buffers under 8 KiB.
const MIN_BUF: usize = 8192;

/// What an HTTP/2 client sends first (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves until `shutdown`, then stops accepting and waits for every open
/// connection to finish its request in progress (idle keep-alive ones close at once).
/// At most `max_connections` are open at once, over all `listeners`.
pub async fn serve(
    listeners: Vec<Listener>,
    ctx: Arc<Ctx>,
    shutdown: CancellationToken,
    max_connections: usize,
) {
    let cfg = &ctx.config;
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size((cfg.max_header_size as usize).max(MIN_BUF));
    // Told any number, hyper fills a vector of that many slots per request (1-2% of
    // the master's CPU at c=64); left alone, it parses into a stack array.
    if cfg.max_headers != HYPER_MAX_HEADERS {
        h1.max_headers(cfg.max_headers);
    }
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        // Counted as HTTP/2 counts it: names and values plus 32 bytes per field.
        .max_header_list_size(cfg.max_header_size.min(u32::MAX as u64) as u32)
        // Each stream is a worker slot: one connection gets its share, not the pool.
        .max_concurrent_streams(cfg.streams_per_connection());
    let front = Front {
        ctx: ctx.clone(),
        builders: Arc::new((h1, h2)),
        graceful: GracefulShutdown::new(),
        // Every connection's task, so a graceful stop can wait for the HTTP/2 ones
        // too (hyper-util's watcher covers HTTP/1.1; HTTP/2 connections handle the
        // stop themselves, beside their idle check).
        tasks: TaskTracker::new(),
        open: Arc::new(Semaphore::new(max_connections)),
        max_connections,
        shutdown,
    };
    futures_util::future::join_all(listeners.into_iter().map(|l| front.accept_loop(l))).await;
    front.tasks.close();
    tokio::join!(front.graceful.shutdown(), front.tasks.wait());
}

/// What the accept loops of every listener share.
struct Front {
    ctx: Arc<Ctx>,
    builders: Arc<(http1::Builder, http2::Builder<TokioExecutor>)>,
    graceful: GracefulShutdown,
    tasks: TaskTracker,
    open: Arc<Semaphore>,
    max_connections: usize,
    shutdown: CancellationToken,
}

/// At a graceful stop, how long a connection accepted but silent so far still has to
/// send its first request (it may have been sent already, in flight to us).
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

impl Front {
    /// Accepts on one listener until the stop; the listener closes when it returns.
    async fn accept_loop(&self, listener: Listener) {
        let (open, shutdown, max_connections) = (&self.open, &self.shutdown, self.max_connections);
        let mut accept_errors = Every::second();
        let mut at_cap = Every::minute();
        loop {
            // At the cap, wait for a connection to close before accepting another: the
            // kernel's backlog holds the rest, and our descriptors stay free for workers.
            let permit = match open.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    if at_cap.due() {
                        tracing::warn!("{max_connections} connections open (--max-connections): accepting paused until one closes");
                    }
                    tokio::select! {
                        p = open.clone().acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.cancelled() => break,
            };
            let (stream, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning,
                    // and say so once a second, not twenty times.
                    if let Some(suppressed) = accept_errors.due_counting() {
                        tracing::warn!(
                            "accept failed on {}: {e} ({suppressed} more like it since the last report)",
                            listener.label()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Taken now, so a graceful stop waits for this connection from the start.
            let watcher = self.graceful.watcher();
            let (ctx, builders, shutdown) =
                (self.ctx.clone(), self.builders.clone(), shutdown.clone());
            self.tasks.spawn(async move {
                let _permit = permit;
                let cfg = &ctx.config;
                let (timeout, send_timeout) = (cfg.header_read_timeout, cfg.send_timeout);
                let mut stream = stream;
                let stopped = async {
                    shutdown.cancelled().await;
                    tokio::time::sleep(FIRST_REQUEST_GRACE).await;
                };
                let (prefix, is_h2) = tokio::select! {
                    r = tokio::time::timeout(timeout, sniff(&mut stream)) => match r {
                        Ok(Ok(sniffed)) => sniffed,
                        // Closed, failed, or silent for too long: nothing to answer.
                        _ => return,
                    },
                    () = stopped => return,
                };
                let io = TokioIo::new(ClientIo::new(stream, prefix, send_timeout));
                let (h1, h2) = &*builders;
                let ended = if is_h2 {
                    drop(watcher);
                    let activity = Arc::new(Activity::default());
                    let conn = h2.serve_connection(
                        io,
                        service(ctx.clone(), peer.clone(), Some(activity.clone())),
                    );
                    serve_h2(conn, activity, timeout, send_timeout, shutdown).await
                } else if shutdown.is_cancelled() {
                    // Accepted before the stop, its request came after: hyper's
                    // graceful signal would close it unread, so it is answered on its
                    // own, without keep-alive (bounded by the graceful timeout).
                    drop(watcher);
                    let mut once = h1.clone();
                    once.keep_alive(false);
                    once.serve_connection(io, service(ctx.clone(), peer.clone(), None))
                        .await
                } else {
                    watcher
                        .watch(h1.serve_connection(io, service(ctx.clone(), peer.clone(), None)))
                        .await
                };
                if let Err(e) = ended {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
            });
        }
    }
}

/// A log line at most once per period, counting the ones it held back.
struct Every {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Every {
    fn second() -> Self {
        Every {
            period: Duration::from_secs(1),
            last: None,
            suppressed: 0,
        }
    }

    fn minute() -> Self {
        Every {
            period: Duration::from_secs(60),
            last: None,
            suppressed: 0,
        }
    }

    /// Whether to log now.
    fn due(&mut self) -> bool {
        self.due_counting().is_some()
    }

    /// Whether to log now, with how many were held back since the last time.
    fn due_counting(&mut self) -> Option<u64> {
        if self.last.is_some_and(|at| at.elapsed() < self.period) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Reads the client's first bytes, just enough to tell the protocols apart: stops at
/// the first byte that differs from the HTTP/2 preface (an HTTP/1 request differs at
/// its first or second), or at the whole preface. Each read waits for the socket,
/// so a client that stops halfway costs nothing until the caller's timeout. (A `P…`
/// request head trickled byte by byte can so take up to twice
/// `--header-read-timeout`: this wait, then hyper's own.)
async fn sniff(stream: &mut Stream) -> io::Result<(Prefix, bool)> {
    let mut prefix = Prefix {
        buf: [0; 24],
        start: 0,
        end: 0,
    };
    loop {
        let n = stream.read(&mut prefix.buf[prefix.end..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        prefix.end += n;
        let seen = &prefix.buf[..prefix.end];
        if seen != &H2_PREFACE[..seen.len()] {
            return Ok((prefix, false));
        }
        if seen.len() == H2_PREFACE.len() {
            return Ok((prefix, true));
        }
    }
}

/// Serves an HTTP/2 connection until it ends. It is shut down gracefully (GOAWAY:
/// streams in progress finish, no new ones) on a graceful stop, or once nothing has
/// been in progress for `idle`; it is dropped at once (the client sees the
/// connection close) when every request in progress is stalled, since those
/// streams would never finish.
async fn serve_h2<I, S, E, B>(
    conn: http2::Connection<I, S, E>,
    activity: Arc<Activity>,
    idle: Duration,
    send_timeout: Duration,
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
    let mut idle_closed = None;
    loop {
        tokio::select! {
            ended = conn.as_mut() => return ended,
            _ = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = check.tick() => {
                // Streams that would never finish: every one stalled, or bodies waiting
                // on a window the client has not opened for the send timeout (hyper
                // then asks no body for data, so nothing else would notice).
                if activity.all_stalled()
                    || activity.blocked_for().is_some_and(|d| d >= send_timeout)
                {
                    return Ok(());
                }
                // Closed as idle, yet streams remain: their responses are all with h2,
                // waiting for a window the client does not open. They get the send
                // timeout, not forever. (A graceful stop is bounded by its own timeout.)
                if idle_closed.is_some_and(|at: Instant| at.elapsed() >= send_timeout) {
                    return Ok(());
                }
                if !closing && activity.idle_for().is_some_and(|d| d >= idle) {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    idle_closed = Some(Instant::now());
                }
            }
        }
    }
}

/// Every request of one connection goes to [`crate::proxy::handle`]. With
/// `activity`, each request counts as in progress until its response is done.
fn service(
    ctx: Arc<Ctx>,
    peer: Arc<str>,
    activity: Option<Arc<Activity>>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<Logged>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<http::Response<Logged>, Infallible>> + Send,
> + Clone {
    service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let ctx = ctx.clone();
        let peer = peer.clone();
        let activity = activity.clone();
        let busy = activity.clone().map(Busy::new);
        // Boxed: the future is about 2 KiB, and hyper moves it into its dispatcher
        // (and the call moves it before that); a box moves 8 bytes instead. memcpy
        // fell from 4.4 % to 3.7 % of the master's samples (hello, c=64).
        Box::pin(async move {
            let record = ctx.access_log.as_ref().map(|_| begin(&req, &peer));
            let mut resp = crate::proxy::handle(req, &peer, &ctx, activity.as_ref()).await;
            ctx.stats.count_response(resp.status());
            let log = record.map(|mut record| {
                record.status = resp.status().as_u16();
                record.dispatched = resp.extensions_mut().remove::<Dispatched>();
                (record, ctx.clone())
            });
            if let Some(b) = &busy {
                // Its data waits for hyper from the start.
                b.activity().set_blocked(true);
            }
            Ok::<_, Infallible>(resp.map(|body| Logged {
                body,
                log,
                blocked: busy.is_some(),
                busy,
            }))
        })
    })
}

/// The access log's record of a request as it arrives.
fn begin(req: &http::Request<hyper::body::Incoming>, peer: &Arc<str>) -> Box<Record> {
    let uri = req.uri();
    // HTTP/2 requests carry an absolute URI; the log shows the origin form.
    let target = uri
        .path_and_query()
        .map_or_else(|| uri.to_string(), |pq| pq.as_str().to_owned());
    Box::new(Record {
        started: Instant::now(),
        at: std::time::SystemTime::now(),
        method: req.method().clone(),
        target,
        version: req.version(),
        peer: peer.clone(),
        referer: req.headers().get(http::header::REFERER).cloned(),
        user_agent: req.headers().get(http::header::USER_AGENT).cloned(),
        status: 0,
        dispatched: None,
        bytes: 0,
    })
}

/// A response body on its way to the client: counted for the access log (its line
/// is written when hyper is done with it: sent, or the client went away), and, over
/// HTTP/2, keeping its connection busy and telling it whether hyper has come back
/// for its data (`Activity::blocked_for`). Otherwise it only passes the body through.
pub struct Logged {
    body: ResponseBody,
    log: Option<(Box<Record>, Arc<Ctx>)>,
    busy: Option<Busy>,
    /// Counted in the connection's blocked bodies: data waits for hyper.
    blocked: bool,
}

impl http_body::Body for Logged {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let me = &mut *self;
        if let Some(b) = &me.busy {
            b.activity().polled();
            if me.blocked {
                b.activity().set_blocked(false);
                me.blocked = false;
            }
        }
        let polled = Pin::new(&mut me.body).poll_frame(cx);
        // Data handed over and more to come: the next piece waits for hyper again.
        if let (Some(b), Poll::Ready(Some(Ok(_)))) = (&me.busy, &polled) {
            if !me.body.is_end_stream() {
                b.activity().set_blocked(true);
                me.blocked = true;
            }
        }
        if let (Poll::Ready(Some(Ok(frame))), Some((record, _))) = (&polled, &mut me.log) {
            if let Some(data) = frame.data_ref() {
                record.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let (Some(b), true) = (&self.busy, self.blocked) {
            b.activity().set_blocked(false);
        }
        if let Some((record, ctx)) = self.log.take() {
            if let Some(log) = &ctx.access_log {
                log.write(&record);
            }
        }
    }
}
