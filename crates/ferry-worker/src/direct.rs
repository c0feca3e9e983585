//! Direct mode: the same handler served straight over HTTP by hyper, with no master
//! and no channel. For local debugging, and as the benchmark's ceiling (the cost of
//! Ferry is the difference between this and the same handler behind `ferry`).

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response, StatusCode};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use tower::ServiceExt;

use crate::body::{Body, BoxError};

pub(crate) async fn serve<S, B>(addr: SocketAddr, svc: S) -> io::Result<()>
where
    S: tower_service::Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!("serving directly on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        connection(stream, svc.clone());
    }
}

/// [`serve`] on a Unix socket at `path` (a stale file there is replaced): how a
/// reverse proxy on the same host reaches a process pool.
pub(crate) async fn serve_unix<S, B>(path: &std::path::Path, svc: S) -> io::Result<()>
where
    S: tower_service::Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    tracing::info!("serving directly on unix:{}", path.display());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => connection(stream, svc.clone()),
            Err(e) => tracing::warn!("accept failed: {e}"),
        }
    }
}

/// Serves one connection on a task of its own.
fn connection<I, S, B>(stream: I, svc: S)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tower_service::Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    tokio::spawn(async move {
        let handler = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let svc = svc.clone();
            async move { Ok::<_, std::convert::Infallible>(call(svc, req.map(Body::new)).await) }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(10));
        let _ = builder
            .serve_connection(TokioIo::new(stream), handler)
            .await;
    });
}

/// Runs one request as the channel session does: errors and panics become 500s.
async fn call<S, B>(svc: S, req: Request<Body>) -> Response<Body>
where
    S: tower_service::Service<Request<Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match AssertUnwindSafe(svc.oneshot(req)).catch_unwind().await {
        Ok(Ok(resp)) => resp.map(Body::new),
        Ok(Err(e)) => {
            tracing::error!("handler failed: {}", e.into());
            internal_error()
        }
        Err(_) => {
            tracing::error!("handler panicked");
            internal_error()
        }
    }
}

fn internal_error() -> Response<Body> {
    let mut resp = Response::new(Body::from("Internal Server Error\n"));
    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    resp
}
