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
//! preface, is dropped too.

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::master::Ctx;

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
        tokio::spawn(async move {
            let timeout = ctx.config.header_read_timeout;
            let is_h2 = tokio::select! {
                r = tokio::time::timeout(timeout, opens_with_h2_preface(&stream)) => match r {
                    Ok(Ok(is_h2)) => is_h2,
                    // Closed, failed, or silent for too long: nothing to answer.
                    _ => return,
                },
                _ = shutdown.cancelled() => return,
            };
            let svc = service(ctx, peer);
            let io = TokioIo::new(stream);
            let (h1, h2) = &*builders;
            let ended = if is_h2 {
                watcher.watch(h2.serve_connection(io, svc)).await
            } else {
                watcher.watch(h1.serve_connection(io, svc)).await
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Every request of one connection goes to [`crate::proxy::handle`].
fn service(
    ctx: Arc<Ctx>,
    peer: SocketAddr,
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
        async move {
            let resp = crate::proxy::handle(req, &peer, ctx.clone()).await;
            ctx.stats.count_response(resp.status());
            Ok::<_, Infallible>(resp)
        }
    })
}

/// Whether the client's first bytes are the HTTP/2 preface. Peeks, so hyper still
/// reads everything. Decided at the first byte that differs (any HTTP/1 request
/// differs at its first byte); only a client that sends a prefix of the preface
/// and stops makes us wait, and the caller's timeout bounds that.
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
