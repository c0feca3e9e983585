//! Heap allocations on the master's hot path, counted with a counting allocator.
//!
//! One request through the real pool, channel table, writer queue, write queue, decoder
//! and router, phase by phase (no sockets: the I/O buffers are reused and so
//! allocate nothing per frame once warm). Frames themselves must cost nothing
//! beyond their own data: encoding none, decoding only the header list a message
//! carries. The per-request bookkeeping (the request's table entry and its
//! channels) is bounded too, so a regression shows up as a failing count.

use bytes::{Bytes, BytesMut};
use ferry::config::Balance;
use ferry::dispatch::channel::Channel;
use ferry::dispatch::pool::Pool;
use ferry::dispatch::writer;
use ferry::head::Head;
use ferry_channel::WriteQueue;
use ferry_protocol::frame::{decode_worker, encode_worker, split_frame};
use ferry_protocol::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.load(Ordering::Relaxed)
}

const MAX: usize = DEFAULT_MAX_FRAME_SIZE;

/// A typical browser-ish GET: 12 headers, no body, as hyper hands it over.
fn request_parts() -> http::request::Parts {
    let mut req = http::Request::get("/api/items?page=2");
    for (n, v) in [
        ("host", "example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        ("connection", "keep-alive"),
        ("cookie", "session=abc123; theme=dark"),
        ("cache-control", "no-cache"),
        ("pragma", "no-cache"),
        ("referer", "https://example.com/"),
        ("x-request-id", "7f0c2a"),
        ("x-forwarded-for", "10.0.0.1"),
    ] {
        req = req.header(n, v);
    }
    req.body(()).unwrap().into_parts().0
}

#[derive(Default, Debug)]
struct Phases {
    bookkeeping: usize,
    head: usize,
    write: usize,
    read: usize,
}

#[test]
fn master_hot_path_allocations_per_request() {
    const WARMUP: usize = 200;
    const N: usize = 2000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let phases = rt.block_on(async {
        let pool = Pool::new(Balance::LeastOutstanding, 16, Duration::from_secs(5));
        let (channel, mut rx) = Channel::detached(64);
        pool.add(channel.clone(), 64);

        // Everything a request brings with it is built before counting starts.
        let total = WARMUP + N;
        let requests: Vec<http::request::Parts> = (0..total).map(|_| request_parts()).collect();
        // hyper's URIs share the connection's read buffer; ours, parsed from a &str, are
        // made shared by a first clone, as hyper's already are.
        let _shared: Vec<http::Uri> = requests.iter().map(|p| p.uri.clone()).collect();
        let mut incoming = BytesMut::new();
        for id in 1..=total as u64 {
            let resp = WorkerMsg::ResponseHead(ResponseHead {
                id,
                status: 200,
                headers: vec![Header::new(
                    Bytes::from_static(b"content-type"),
                    Bytes::from_static(b"text/plain"),
                )],
                body: BodyKind::Inline(Bytes::from_static(b"Hello, world!\n")),
            });
            encode_worker(&resp, &mut incoming, MAX).unwrap();
        }
        let mut out = WriteQueue::new();
        let mut socket = tokio::io::sink();

        let mut sum = Phases::default();
        for (i, parts) in requests.iter().enumerate() {
            let head = Head {
                parts,
                peer: "",
                inline: None,
                streamed: false,
                length: None,
            };
            let a0 = allocs();
            let mut head_allocs = 0;
            let lease = pool.acquire_avoiding(None).await.unwrap();
            let mut exchange = channel
                .register(lease, &parts.method, &parts.uri, false, |id| {
                    let before = allocs();
                    let frame = head.encode(id, MAX);
                    head_allocs = allocs() - before;
                    frame
                })
                .unwrap();
            let a2 = allocs();
            let a1 = a2 - head_allocs;
            let item = rx.try_recv().unwrap();
            writer::queue(&mut out, item, MAX).unwrap();
            out.flush(&mut socket).await.unwrap();
            let a3 = allocs();
            let payload = split_frame(&mut incoming, MAX).unwrap().unwrap();
            channel.handle(decode_worker(payload).unwrap()).unwrap();
            let start = (&mut exchange.head).await.unwrap().unwrap();
            let a4 = allocs();
            drop(start);
            drop(exchange);
            if i >= WARMUP {
                sum.bookkeeping += a1 - a0;
                sum.head += a2 - a1;
                sum.write += a3 - a2;
                sum.read += a4 - a3;
            }
        }
        sum
    });
    let per = |n: usize| n as f64 / N as f64;
    eprintln!(
        "allocations per request: bookkeeping {:.2}, head {:.2}, write path {:.2}, read path {:.2}",
        per(phases.bookkeeping),
        per(phases.head),
        per(phases.write),
        per(phases.read)
    );
    // Writing a frame (queue + encode into the reused buffer) allocates nothing;
    // tokio's queue allocates one block per 32 messages (amortised, < 0.1).
    assert!(per(phases.write) < 0.1, "{phases:?}");
    // Reading a response head: its one header list (decoded borrowed, then rebased
    // onto the frame: two vectors), nothing per byte or per header.
    assert!(per(phases.read) <= 2.05, "{phases:?}");
    // Encoding the head straight from hyper's request (`RequestHeadRef`, headers
    // serialized from the map in place): the frame buffer and the shared handle of
    // the `Bytes` it becomes. Nothing per header, no list, no text field copied.
    assert!(per(phases.head) <= 2.05, "{phases:?}");
    // The request's table entry: only its one-shot response slot.
    assert!(per(phases.bookkeeping) <= 1.05, "{phases:?}");
}
