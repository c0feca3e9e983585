//! Write [Ferry](https://github.com/) workers in Rust.
//!
//! A worker is a long-lived process started by the `ferry` master. The master
//! parses HTTP and sends each request over a private channel; this crate receives
//! it, runs your handler, and streams the response back. Your handler is either a
//! plain async function or any [`tower::Service`], so an axum `Router` drops in.
//!
//! ```no_run
//! use ferry_worker::{Body, Request, Response};
//!
//! async fn hello(_req: Request<Body>) -> Response<Body> {
//!     Response::new(Body::from("Hello, world!\n"))
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> std::io::Result<()> {
//!     ferry_worker::serve(hello).await
//! }
//! ```
//!
//! Run it with `ferry -- path/to/your-worker`.
//!
//! # What the SDK does for you
//! - the handshake, announcing how many requests it accepts at once
//!   ([`Worker::max_in_flight`]);
//! - answering the master's heartbeat pings while handlers run;
//! - streaming request and response bodies under flow control;
//! - `Cancel` (the client left or the request timed out): the handler's future is dropped;
//! - `Drain` (reload, recycling, shutdown): in-flight requests finish, then
//!   [`serve`] returns `Ok(())` and your `main` exits 0;
//! - the master going away (EOF on the channel before this worker is done, even
//!   mid-drain): under ferry, where the worker leads its own process group, the group
//!   is killed at once, this process and everything it started included, so nothing
//!   outlives the master. Run outside ferry (not a group leader), [`serve`] just
//!   returns `Ok(())`;
//! - a handler panic: that request gets a 500, the process keeps serving, the panic is logged.
//!
//! # Threads, blocking and CPU-heavy handlers
//! Ferry's parallelism is processes: run one worker per core (`ferry --workers N`)
//! and give each a single-threaded runtime (`#[tokio::main(flavor = "current_thread")]`).
//! On a single-threaded runtime a handler starts running on the task that reads the
//! channel (most answer at once, and this saves a task per request); when it first
//! waits it moves to a task of its own. Heartbeats are answered on the same thread as your handlers, so a handler that
//! blocks the thread (a synchronous database driver, a long computation) stops the
//! heartbeat too, and the master treats the worker as stuck after
//! `--heartbeat-timeout`. For such work either
//! - move it off the runtime thread with [`tokio::task::spawn_blocking`], or
//! - run the classic one-request-per-process model: `ferry --concurrency 1` with more
//!   workers, and a heartbeat timeout longer than your slowest request.

mod body;
mod channel;
mod direct;
mod outbox;
mod response;
mod session;
mod writer;

pub use body::{Body, BoxError};
pub use http::{Request, Response, StatusCode};

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;

/// Asks the master to retire this worker: it is sent no new requests, those it has
/// finish, and then it exits (status 0), while the master starts its replacement.
/// Requests already on their way when the master heard it run on another worker,
/// never here and never lost. For a worker that knows it should go: it has grown
/// too big, holds a resource gone stale, or served its share
/// (RoadRunner's StopRequest). Safe to call from any thread, more than once.
///
/// ```no_run
/// # async fn handler(_: ferry_worker::Request<ferry_worker::Body>) -> ferry_worker::Response<ferry_worker::Body> {
/// if too_big() {
///     ferry_worker::retire();
/// }
/// # unimplemented!() }
/// # fn too_big() -> bool { false }
/// ```
pub fn retire() {
    session::RETIRE.notify_one();
}

/// Facts about a request that are not part of HTTP: found in the request's extensions.
///
/// ```
/// # fn f(req: &ferry_worker::Request<ferry_worker::Body>) {
/// let info = req.extensions().get::<ferry_worker::RequestInfo>().unwrap();
/// println!("request {} from {}", info.id, info.peer);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// The request's id on this worker's channel.
    pub id: u64,
    /// The client's address, `ip:port`, as the master saw it; `unix` for a client of
    /// a Unix-socket listener.
    pub peer: String,
}

/// Worker settings. [`serve`] and [`serve_service`] use the defaults.
///
/// ```no_run
/// # async fn handler(_: ferry_worker::Request<ferry_worker::Body>) -> ferry_worker::Response<ferry_worker::Body> { unimplemented!() }
/// # async fn run() -> std::io::Result<()> {
/// ferry_worker::Worker::new().max_in_flight(16).serve(handler).await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Worker {
    max_in_flight: u32,
    initial_window: u32,
}

impl Default for Worker {
    fn default() -> Self {
        Worker {
            max_in_flight: 1024,
            initial_window: ferry_protocol::DEFAULT_INITIAL_WINDOW,
        }
    }
}

impl Worker {
    /// Default settings: up to 1024 requests in flight (the master's `--concurrency`
    /// usually caps it lower), a 256 KiB flow-control window per request body.
    ///
    /// ```
    /// let w = ferry_worker::Worker::new();
    /// # let _ = w;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Most requests this worker accepts at once; the master never exceeds it.
    ///
    /// ```
    /// let w = ferry_worker::Worker::new().max_in_flight(1);
    /// # let _ = w;
    /// ```
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Request-body bytes the master may send ahead of what the handler has read.
    ///
    /// ```
    /// let w = ferry_worker::Worker::new().initial_window(64 * 1024);
    /// # let _ = w;
    /// ```
    pub fn initial_window(mut self, bytes: u32) -> Self {
        self.initial_window = bytes.max(1);
        self
    }

    /// Serves `handler` on this process's channel; see [`serve`].
    ///
    /// ```no_run
    /// # async fn handler(_: ferry_worker::Request<ferry_worker::Body>) -> ferry_worker::Response<ferry_worker::Body> { unimplemented!() }
    /// # async fn run() -> std::io::Result<()> {
    /// ferry_worker::Worker::new().serve(handler).await
    /// # }
    /// ```
    pub async fn serve<H, F>(self, handler: H) -> io::Result<()>
    where
        H: Fn(Request<Body>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        self.serve_service(handler_service(handler)).await
    }

    /// Serves any `tower::Service` on this process's channel; see [`serve_service`].
    ///
    /// ```no_run
    /// # async fn run() -> std::io::Result<()> {
    /// let svc = tower::service_fn(|_req: ferry_worker::Request<ferry_worker::Body>| async {
    ///     Ok::<_, std::convert::Infallible>(ferry_worker::Response::new(ferry_worker::Body::from("hi")))
    /// });
    /// ferry_worker::Worker::new().serve_service(svc).await
    /// # }
    /// ```
    pub async fn serve_service<S, B>(self, svc: S) -> io::Result<()>
    where
        S: tower_service::Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        match session::run(self, svc).await? {
            session::End::Drained => tracing::info!("drained; exiting"),
            session::End::MasterGone => tracing::info!("the master closed the channel; exiting"),
        }
        Ok(())
    }
}

/// Serves `handler` directly over HTTP on `addr`, with no master: for local debugging
/// (and Ferry's benchmark ceiling). Runs until the process is stopped.
///
/// ```no_run
/// use ferry_worker::{Body, Request, Response};
/// # async fn run() -> std::io::Result<()> {
/// let addr = "127.0.0.1:3000".parse().unwrap();
/// ferry_worker::serve_direct(addr, |_req: Request<Body>| async { Response::new(Body::from("hi")) }).await
/// # }
/// ```
pub async fn serve_direct<H, F>(addr: std::net::SocketAddr, handler: H) -> io::Result<()>
where
    H: Fn(Request<Body>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    serve_service_direct(addr, handler_service(handler)).await
}

/// [`serve_direct`] for any `tower::Service`.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let svc = tower::service_fn(|_req: ferry_worker::Request<ferry_worker::Body>| async {
///     Ok::<_, std::convert::Infallible>(ferry_worker::Response::new(ferry_worker::Body::from("hi")))
/// });
/// ferry_worker::serve_service_direct("127.0.0.1:3000".parse().unwrap(), svc).await
/// # }
/// ```
pub async fn serve_service_direct<S, B>(addr: std::net::SocketAddr, svc: S) -> io::Result<()>
where
    S: tower_service::Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    direct::serve(addr, svc).await
}

/// [`serve_direct`] on a Unix socket at `path` (a stale socket file is replaced):
/// the handler behind a reverse proxy on the same host, with no ferry.
pub async fn serve_direct_unix<H, F>(path: &std::path::Path, handler: H) -> io::Result<()>
where
    H: Fn(Request<Body>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    direct::serve_unix(path, handler_service(handler)).await
}

/// An async fn as a `tower::Service` that never fails.
fn handler_service<H, F>(
    handler: H,
) -> impl tower_service::Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static
where
    H: Fn(Request<Body>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    tower::service_fn(move |req| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler(req).await) }
    })
}

/// Serves an async function until the master drains this worker or goes away.
///
/// Returns `Ok(())` after a drain or when the master is gone, and an error if the
/// channel is missing (not started by `ferry`) or the handshake fails.
///
/// ```no_run
/// use ferry_worker::{Body, Request, Response};
/// # async fn run() -> std::io::Result<()> {
/// ferry_worker::serve(|req: Request<Body>| async move {
///     Response::new(Body::from(format!("you asked for {}\n", req.uri().path())))
/// })
/// .await
/// # }
/// ```
pub async fn serve<H, F>(handler: H) -> io::Result<()>
where
    H: Fn(Request<Body>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    Worker::new().serve(handler).await
}

/// Serves any `tower::Service`, such as an axum `Router`.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let svc = tower::service_fn(|_req: ferry_worker::Request<ferry_worker::Body>| async {
///     Ok::<_, std::convert::Infallible>(ferry_worker::Response::new(ferry_worker::Body::from("hi")))
/// });
/// ferry_worker::serve_service(svc).await
/// # }
/// ```
pub async fn serve_service<S, B>(svc: S) -> io::Result<()>
where
    S: tower_service::Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Worker::new().serve_service(svc).await
}
