//! The HTTP front: accepts connections and serves each with hyper's HTTP/1.1
//! server (keep-alive, pipelining, `Expect: 100-continue`, chunked bodies), with
//! the limits that keep a bad client from costing us: head size, header count and
//! a header read timeout. The timeout needs the timer: without `.timer(...)` hyper
//! silently leaves it off, and a slowloris client holds the connection forever.

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::master::Ctx;

/// hyper refuses read buffers under 8 KiB.
const MIN_BUF: usize = 8192;

/// Serves until `shutdown`, then stops accepting and waits for every open
/// connection to finish its request in progress (idle keep-alive ones close at once).
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let cfg = &ctx.config;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size((cfg.max_header_size as usize).max(MIN_BUF))
        .max_headers(cfg.max_headers);
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
        let svc_ctx = ctx.clone();
        // Formatted once per connection, not once per request.
        let peer_text: Arc<str> = peer.to_string().into();
        let svc = service_fn(move |req| {
            let ctx = svc_ctx.clone();
            let peer = peer_text.clone();
            async move {
                let resp = crate::proxy::handle(req, &peer, ctx.clone()).await;
                ctx.stats.count_response(resp.status());
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
