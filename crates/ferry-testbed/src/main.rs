//! `ferry-testbed`: a worker whose routes exercise every behaviour of Ferry, for
//! tests, benchmarks and demos. Run it as `ferry -- ferry-testbed`.
//!
//! `ferry-testbed --direct ADDR [--threads N]` serves the same routes straight over
//! HTTP, without ferry (the benchmark's ceiling); ADDR may be `unix:PATH` (behind
//! nginx, the benchmark's reverse-proxy peer).
//!
//! Routes: `GET /` hello; `/pid`; `/retire` (asks the master to retire this worker,
//! answers with its pid); `POST /echo` (body back, streamed, same
//! content-type); `/sleep?ms=N` (async wait); `/spin?ms=N` (blocks the thread);
//! `/crash` (abort mid-request); `/panic`; `/exit?code=N`; `/stream?bytes=N`
//! (chunked body of N bytes, in chunks of `&chunk=C` bytes, `&every=MS` apart; with
//! `&claim=M` its size hint says M, a lie unless M = N); `/headers` (request headers as JSON pairs); `/target` (request target and version);
//! `/spawn` (starts a `sleep` grandchild in the worker's process group, returns its pid);
//! `/big-header?bytes=N` (a response header of N bytes); `/whoami` (the peer the
//! master reported, and this process's pid, parent, ids, groups, umask, HOME and
//! folder, one `key=value` per line).
//!
//! `pid=P` on /sleep, /spin, /crash or /exit restricts it to the worker with pid P.
//!
//! `/sleep` logs `sleeping N ms` to stderr when it starts (tests wait for that line
//! instead of guessing with timers) and reports how many requests this process had
//! in flight. If `FERRY_TESTBED_FAIL_IF_EXISTS` names a file that exists, the worker
//! exits with status 1 at start, before its handshake (to test restart backoff).

use bytes::Bytes;
use ferry_worker::{Body, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Requests this process is handling right now.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

struct InFlight;

impl InFlight {
    fn enter() -> (Self, usize) {
        (InFlight, IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

// The allocator a production worker would pick; `--direct` uses it too, so the
// benchmark's ceiling and ferry's workers allocate alike.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::io::Result<()> {
    if let Some(marker) = std::env::var_os("FERRY_TESTBED_FAIL_IF_EXISTS") {
        if std::path::Path::new(&marker).exists() {
            eprintln!(
                "ferry-testbed: {} exists; failing at start on purpose",
                marker.to_string_lossy()
            );
            std::process::exit(1);
        }
    }
    use std::io::IsTerminal;
    let log = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        // Our stderr is a pipe to the master: when the master is gone, a failed write
        // must not become a panic (the default reports it with `eprintln!`, which
        // panics on the same broken pipe).
        .log_internal_errors(false);
    // Under ferry the master stamps every line it relays: a second timestamp is noise.
    if std::env::var_os("FERRY_FD").is_some() {
        log.without_time().init();
    } else {
        log.init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--direct") {
        // Direct mode: the same routes over HTTP with no master, on as many threads as
        // there are CPUs (or `--threads N`): the ceiling Ferry's benchmark compares with.
        let addr = args
            .get(at + 1)
            .expect("usage: ferry-testbed --direct ADDR|unix:PATH [--threads N]");
        let threads = args
            .iter()
            .position(|a| a == "--threads")
            .and_then(|i| args.get(i + 1)?.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?;
        if let Some(path) = addr.strip_prefix("unix:") {
            return rt.block_on(ferry_worker::serve_direct_unix(path.as_ref(), route));
        }
        let addr = addr.parse().expect("--direct HOST:PORT or unix:PATH");
        return rt.block_on(ferry_worker::serve_direct(addr, route));
    }
    // Under ferry: one thread per worker process; ferry runs one worker per core.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(ferry_worker::serve(route))
}

async fn route(req: Request<Body>) -> Response<Body> {
    let (_guard, in_flight) = InFlight::enter();
    // Owned, so that no borrow of the (non-`Sync`) request is held across an await.
    let q = req.uri().query().unwrap_or("").to_owned();
    let query = |key: &str| -> Option<u64> {
        q.split('&')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    // `pid=P` limits /sleep, /spin, /crash and /exit to the worker with pid P (the
    // others answer at once): tests use it to make exactly one worker misbehave.
    let for_me = query("pid").is_none_or(|p| p == std::process::id() as u64);
    match (method.as_str(), path.as_str()) {
        ("GET" | "HEAD", "/") => text("Hello, world!\n"),
        ("GET", "/pid") => text(format!("{}\n", std::process::id())),
        ("GET", "/retire") => {
            ferry_worker::retire();
            text(format!("{} retires\n", std::process::id()))
        }
        ("POST" | "PUT", "/echo") => {
            let mut resp = Response::new(Body::empty());
            if let Some(ct) = req.headers().get(http::header::CONTENT_TYPE) {
                resp.headers_mut()
                    .insert(http::header::CONTENT_TYPE, ct.clone());
            }
            *resp.body_mut() = req.into_body();
            resp
        }
        (_, "/sleep") => {
            let ms = if for_me { query("ms").unwrap_or(0) } else { 0 };
            eprintln!("sleeping {ms} ms");
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(format!(
                "slept {ms} ms in {} with {in_flight} in flight\n",
                std::process::id()
            ))
        }
        ("GET", "/spin") => {
            let ms = if for_me { query("ms").unwrap_or(0) } else { 0 };
            let until = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            text(format!("spun {ms} ms in {}\n", std::process::id()))
        }
        ("GET", "/crash") if for_me => {
            // No core dump: a core handler piped from core_pattern could keep the dying
            // process around for a while, and tests time the crash.
            unsafe {
                libc::prctl(libc::PR_SET_DUMPABLE, 0);
            }
            std::process::abort()
        }
        ("GET", "/panic") => panic!("the /panic route panics on purpose"),
        ("GET", "/exit") if for_me => std::process::exit(query("code").unwrap_or(0) as i32),
        ("GET", "/crash" | "/exit") => {
            text(format!("not pid {}, carrying on\n", std::process::id()))
        }
        ("GET" | "HEAD", "/stream") => {
            let mut resp = Response::new(Body::new(Repeat {
                left: query("bytes").unwrap_or(0),
                claim: query("claim"),
                chunk: query("chunk").unwrap_or(64 * 1024).clamp(1, 1 << 20) as usize,
                every: query("every").map(Duration::from_millis),
                pause: None,
            }));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/octet-stream"),
            );
            resp
        }
        ("GET", "/big-header") => {
            let n = query("bytes").unwrap_or(0) as usize;
            let mut resp = text("big header\n");
            resp.headers_mut().insert(
                "x-big",
                http::HeaderValue::from_str(&"b".repeat(n)).expect("ascii"),
            );
            resp
        }
        ("GET", "/spawn") => match std::process::Command::new("sleep").arg("600").spawn() {
            Ok(child) => text(format!("{}\n", child.id())),
            Err(e) => text(format!("spawn failed: {e}\n")),
        },
        ("GET", "/whoami") => text(whoami(&req)),
        ("GET", "/target") => text(format!("{} {:?}\n", req.uri(), req.version())),
        ("GET", "/headers") => {
            let pairs: Vec<(String, String)> = req
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut resp = Response::new(Body::from(
                serde_json::to_string(&pairs).expect("strings serialize"),
            ));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            resp
        }
        _ => {
            let mut resp = text("not found\n");
            *resp.status_mut() = StatusCode::NOT_FOUND;
            resp
        }
    }
}

fn text(body: impl Into<Body>) -> Response<Body> {
    let mut resp = Response::new(body.into());
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// `left` bytes of a repeating pattern, in 64 KiB chunks, with no length announced
/// (so clients see a chunked body).
struct Repeat {
    left: u64,
    /// The exact size the body claims to have (a lie, unless it equals `left`).
    claim: Option<u64>,
    /// Bytes per chunk (`chunk=N`, default 64 KiB).
    chunk: usize,
    /// A pause before each chunk after the first (`every=MS`): a slow event stream.
    every: Option<Duration>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

const PATTERN: &[u8; 64] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n";

/// `n` bytes of the repeating pattern (n ≤ 1 MiB, the chunk bound): a slice of one
/// buffer built once, so a streamed response costs what sending it costs, as a
/// file server's would, not a byte-by-byte fill per chunk (the benchmark's 1 MiB
/// workload measures the transport).
fn pattern(n: usize) -> Bytes {
    static BUF: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    BUF.get_or_init(|| {
        PATTERN
            .iter()
            .copied()
            .cycle()
            .take(1 << 20)
            .collect::<Vec<u8>>()
            .into()
    })
    .slice(..n)
}

impl http_body::Body for Repeat {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        if let Some(pause) = &mut self.pause {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        self.pause = self.every.map(|d| Box::pin(tokio::time::sleep(d)));
        let n = self.left.min(self.chunk as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(pattern(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        self.claim
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// What `/whoami` says: who asked (as the master reported it), and who answers.
fn whoami(req: &Request<Body>) -> String {
    let peer = req
        .extensions()
        .get::<ferry_worker::RequestInfo>()
        .map_or_else(|| "direct".to_owned(), |i| i.peer.clone());
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or_else(String::new, |v| {
                v.split_whitespace().collect::<Vec<_>>().join(" ")
            })
    };
    let cwd = std::env::current_dir().map_or_else(|e| e.to_string(), |d| d.display().to_string());
    format!(
        "peer={peer}\npid={}\nppid={}\nuid={}\ngid={}\ngroups={}\numask={}\nhome={}\ncwd={cwd}\n",
        std::process::id(),
        std::os::unix::process::parent_id(),
        field("Uid:"),
        field("Gid:"),
        field("Groups:"),
        field("Umask:"),
        std::env::var("HOME").unwrap_or_default(),
    )
}
