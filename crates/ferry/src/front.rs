//! The HTTP front: accepts connections and serves each with hyper's HTTP/1.1
//! server (keep-alive, pipelining, `Expect: 100-continue`, chunked bodies), with
//! the limits that keep a bad client from costing us: head size, header count and
//! a header read timeout. The timeout needs the timer: without `.timer(...)` hyper
//! silently leaves it off, and a slowloris client holds the connection forever.

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use crate::master::Ctx;

/// hyper refuses read buffers under 8 KiB.
const MIN_BUF: usize = 8192;

pub async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let cfg = &ctx.config;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(cfg.header_read_timeout)
                .max_buf_size((cfg.max_header_size as usize).max(MIN_BUF))
                .max_headers(cfg.max_headers);
            let svc_ctx = ctx.clone();
            let svc = service_fn(move |req| {
                let ctx = svc_ctx.clone();
                async move { Ok::<_, Infallible>(crate::proxy::handle(req, peer, ctx).await) }
            });
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}
