//! The request path, end to end: HTTP in, through a worker, HTTP out.

mod harness;

use bytes::Bytes;
use harness::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::collections::HashSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn hello_through_two_workers_reaches_every_worker() {
    let f = Ferry::testbed(&["--workers", "2"]);
    let r = get(f.addr, "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "Hello, world!\n");
    assert_eq!(r.headers["content-type"], "text/plain");

    let mut pids = HashSet::new();
    for _ in 0..20 {
        pids.insert(pid_in(&get(f.addr, "/pid").await.text()));
    }
    assert_eq!(
        pids.len(),
        2,
        "requests from many connections reach both workers: {pids:?}"
    );
    assert_eq!(
        pids,
        f.worker_pids().into_iter().collect(),
        "the pids are the master's children"
    );
}

/// A body that identifies its request: a mix-up between requests cannot go unseen.
fn body_for(n: usize, len: usize) -> Bytes {
    let seed = (n as u64).wrapping_mul(0x9e3779b97f4a7c15) | 1;
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_requests_over_fifty_connections_no_cross_talk() {
    // On a multi-threaded master (the default is one thread), so both runtimes are covered.
    let f = Ferry::testbed(&["--workers", "2", "--threads", "2"]);
    const MIB: usize = 1 << 20;
    // Sizes around the frame limit (1 MiB) and well past it, among many small ones.
    let special = [0, 1, MIB - 1, MIB, MIB + 1, 5 * MIB];
    let mut tasks = Vec::new();
    for c in 0..50 {
        let addr = f.addr;
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            for i in 0..40 {
                let n = c * 40 + i;
                let len = if n % 97 == 0 {
                    special[(n / 97) % special.len()]
                } else {
                    (n * 7919) % 20_000
                };
                let body = body_for(n, len);
                let req = Request::post("/echo")
                    .header("content-type", format!("test/{n}"))
                    .body(Full::new(body.clone()))
                    .unwrap();
                let r = conn.send(req).await;
                assert_eq!(r.status, StatusCode::OK, "request {n}");
                assert_eq!(
                    r.headers["content-type"],
                    format!("test/{n}").as_str(),
                    "request {n}"
                );
                assert!(
                    r.body == body,
                    "request {n}: body of {len} bytes came back different ({} bytes)",
                    r.body.len()
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// `left` bytes of 0x5a, produced lazily in 256 KiB frames.
struct Repeat {
    chunk: Bytes,
    left: u64,
}

impl http_body::Body for Repeat {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(self.chunk.slice(..n)))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_streamed_upload_keeps_master_memory_bounded() {
    let f = Ferry::testbed(&["--workers", "1", "--max-body-size", "2GiB"]);
    const TOTAL: u64 = 1 << 30;
    let stream = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    // No Content-Length: the upload is chunked, the master streams it under flow control.
    let body = Repeat {
        chunk: Bytes::from(vec![0x5au8; 256 * 1024]),
        left: TOTAL,
    };
    let resp = sender
        .send_request(
            Request::post("/echo")
                .header("host", "x")
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.unwrap().data_ref() {
            assert!(d.iter().all(|&b| b == 0x5a));
            got += d.len() as u64;
        }
    }
    assert_eq!(got, TOTAL, "every byte came back");
    let peak = peak_rss(f.pid());
    assert!(
        peak < 100 << 20,
        "master peak RSS {} MiB for a 1 GiB body: not bounded",
        peak >> 20
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let f = Ferry::testbed(&["--workers", "2"]);
    // The slow one first: responses must still come back in request order.
    let req = b"GET /sleep?ms=200 HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\nhost: x\r\n\r\nGET /pid HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let out = raw(f.addr, req, "");
    let slept = out.find("slept 200 ms").expect(&out);
    let hello = out.find("Hello, world!").expect(&out);
    assert!(slept < hello, "in order:\n{out}");
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 3, "{out}");
}

#[tokio::test]
async fn duplicate_headers_are_preserved_in_order() {
    let f = Ferry::testbed(&["--workers", "1"]);
    let mut c = Conn::open(f.addr).await;
    let req = Request::get("/headers")
        .header("x-dup", "first")
        .header("x-other", "o")
        .header("x-dup", "second")
        .body(Full::default())
        .unwrap();
    let r = c.send(req).await;
    let pairs: Vec<(String, String)> = serde_json::from_slice(&r.body).unwrap();
    let dups: Vec<&str> = pairs
        .iter()
        .filter(|(n, _)| n == "x-dup")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(dups, ["first", "second"]);
    assert!(pairs.iter().any(|(n, v)| n == "x-other" && v == "o"));
}

#[test]
fn head_gets_headers_and_no_body() {
    let f = Ferry::testbed(&["--workers", "1"]);
    let out = raw(
        f.addr,
        b"HEAD / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "",
    );
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.contains("content-length: 14"), "{out}");
    assert!(
        out.ends_with("\r\n\r\n"),
        "no body after the head:\n{out:?}"
    );
}

#[test]
fn expect_100_continue() {
    use std::io::{Read, Write};
    let f = Ferry::testbed(&["--workers", "1"]);
    let mut s = std::net::TcpStream::connect(f.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n").unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    s.write_all(b"hello").unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("200 OK") && rest.ends_with("hello"), "{rest}");
}

#[test]
fn body_over_the_limit_gets_413() {
    let f = Ferry::testbed(&["--workers", "1", "--max-body-size", "1KiB"]);
    let big = "x".repeat(2000);
    let req = format!("POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2000\r\n\r\n{big}");
    let out = raw(f.addr, req.as_bytes(), "\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 413"), "declared length: {out}");
    // Chunked: the limit is only found while streaming.
    let chunked = format!("POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n7d0\r\n{big}\r\n0\r\n\r\n");
    let out = raw(f.addr, chunked.as_bytes(), "\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 413"), "chunked: {out}");
    // Exactly the limit passes.
    let ok = "y".repeat(1024);
    let req = format!(
        "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1024\r\nconnection: close\r\n\r\n{ok}"
    );
    let out = raw(f.addr, req.as_bytes(), "");
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with(&ok),
        "{out}"
    );
}

#[test]
fn oversized_headers_get_431_and_garbage_gets_400() {
    let f = Ferry::testbed(&["--workers", "1", "--max-header-size", "16KiB"]);
    let huge = "a".repeat(20_000);
    let out = raw(
        f.addr,
        format!("GET / HTTP/1.1\r\nhost: x\r\nx-huge: {huge}\r\n\r\n").as_bytes(),
        "\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    let out = raw(f.addr, b"THIS IS NOT HTTP\r\n\r\n", "\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // And the server still serves.
    let out = raw(
        f.addr,
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "",
    );
    assert!(out.contains("Hello, world!"), "{out}");
}

#[test]
fn too_many_header_fields_get_431_at_the_default_and_at_a_set_limit() {
    // The default (100) is left to hyper; any other number is passed to it: both paths.
    for (args, limit) in [(&[][..], 100usize), (&["--max-headers", "8"][..], 8)] {
        let f = Ferry::testbed(&[&["--workers", "1"][..], args].concat());
        let head = |fields: usize| {
            let mut h = String::from("GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n");
            for i in 2..fields {
                h.push_str(&format!("x-f{i}: v\r\n"));
            }
            h + "\r\n"
        };
        let out = raw(f.addr, head(limit).as_bytes(), "");
        assert!(out.contains("Hello, world!"), "{limit} fields pass: {out}");
        let out = raw(f.addr, head(limit + 1).as_bytes(), "\r\n\r\n");
        assert!(
            out.starts_with("HTTP/1.1 431"),
            "{} fields: {out}",
            limit + 1
        );
    }
}

#[tokio::test]
async fn panic_gives_500_and_the_same_worker_serves_on() {
    let f = Ferry::testbed(&["--workers", "1"]);
    let before = pid_in(&get(f.addr, "/pid").await.text());
    let r = get(f.addr, "/panic").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        pid_in(&get(f.addr, "/pid").await.text()),
        before,
        "the worker survived its handler's panic"
    );
    assert!(
        f.log.wait_for("handler panicked", WAIT).is_some(),
        "the panic is logged"
    );
}

#[tokio::test]
async fn a_body_that_lies_about_its_size_fails_only_its_own_request() {
    let f = Ferry::testbed(&["--workers", "1"]);
    let before = pid_in(&get(f.addr, "/pid").await.text());
    for (bytes, claim, says) in [
        (100_000, 200_000, "ended 100000 bytes short"),
        (200_000, 100_000, "ran past its declared length"),
    ] {
        let r = Conn::open(f.addr)
            .await
            .try_send(
                Request::get(format!("/stream?bytes={bytes}&claim={claim}"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
        assert!(r.is_err(), "a response promised {claim} bytes must be cut");
        assert!(f.log.wait_for(says, WAIT).is_some(), "{}", f.log.text());
    }
    // The SDK caught it: no protocol violation, the same worker serves on.
    assert_eq!(pid_in(&get(f.addr, "/pid").await.text()), before);
    assert!(
        !f.log.text().contains("protocol violation"),
        "{}",
        f.log.text()
    );
    // An honest exact size streams as before.
    let ok = get(f.addr, "/stream?bytes=100000&claim=100000").await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body.len(), 100_000);
    assert_eq!(ok.headers["content-length"], "100000");
}

/// The in-flight counts the testbed reports for `n` concurrent `/sleep`s.
async fn in_flight_seen(f: &Ferry, n: usize, ms: u32) -> Vec<u32> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let addr = f.addr;
        tasks.push(tokio::spawn(async move {
            get(addr, &format!("/sleep?ms={ms}")).await
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        let text = r.text();
        seen.push(
            text.split(" with ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap(),
        );
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_one_never_gives_a_worker_two_requests() {
    let f = Ferry::testbed(&["--workers", "2", "--concurrency", "1"]);
    let seen = in_flight_seen(&f, 6, 150).await;
    assert!(
        seen.iter().all(|&n| n == 1),
        "a worker had two requests at once: {seen:?}"
    );
    // The control: without the limit the same probe does see overlap.
    let g = Ferry::testbed(&["--workers", "1"]);
    let seen = in_flight_seen(&g, 4, 300).await;
    assert!(
        seen.iter().any(|&n| n > 1),
        "the probe must be able to see overlap: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_gave_up_waiting_free_their_place_in_the_queue() {
    let f = Ferry::testbed(&[
        "--workers",
        "1",
        "--concurrency",
        "1",
        "--queue-size",
        "1",
        "--queue-timeout",
        "200ms",
    ]);
    let addr = f.addr;
    let slow = tokio::spawn(async move { get(addr, "/sleep?ms=3000").await });
    assert!(f.log.wait_for("sleeping 3000 ms", WAIT).is_some());
    for _ in 0..3 {
        // Each waits its 200 ms in the (one-place) queue, then gives up: the place is
        // free again for the next, which must wait too rather than be turned away.
        let r = get(f.addr, "/").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.text(), "no worker became free in time\n");
    }
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn a_response_head_too_large_for_a_frame_fails_cleanly() {
    let f = Ferry::testbed(&[
        "--workers",
        "1",
        "--max-frame-size",
        "128KiB",
        "--max-header-size",
        "16KiB",
    ]);
    let before = pid_in(&get(f.addr, "/pid").await.text());
    let t0 = std::time::Instant::now();
    let r = get(f.addr, "/big-header?bytes=200000").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "answered at once, not by a timeout"
    );
    // Just under the limit passes; the worker was never blamed.
    assert_eq!(
        get(f.addr, "/big-header?bytes=100000").await.status,
        StatusCode::OK
    );
    assert_eq!(pid_in(&get(f.addr, "/pid").await.text()), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_503_with_retry_after() {
    let f = Ferry::testbed(&["--workers", "1", "--concurrency", "1", "--queue-size", "1"]);
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let addr = f.addr;
        tasks.push(tokio::spawn(
            async move { get(addr, "/sleep?ms=500").await },
        ));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(r.headers["retry-after"], "1");
        }
        statuses.push(r.status.as_u16());
    }
    statuses.sort_unstable();
    // One running, one waiting in the queue, one turned away.
    assert_eq!(statuses, [200, 200, 503]);
}

/// With one slow request in flight, where do ten fast ones go?
async fn fast_pids_beside_a_slow_request(balance: &str) -> (u32, Vec<u32>) {
    let f = Ferry::testbed(&["--workers", "2", "--balance", balance]);
    let addr = f.addr;
    let slow = tokio::spawn(async move { get(addr, "/sleep?ms=1500").await });
    // The worker logs when the slow request starts: then it is surely in flight.
    assert!(
        f.log.wait_for("sleeping 1500 ms", WAIT).is_some(),
        "{}",
        f.log.text()
    );
    let mut fast = Vec::new();
    let mut conn = Conn::open(f.addr).await;
    for _ in 0..10 {
        fast.push(pid_in(&conn.get("/pid").await.text()));
    }
    let slow_pid = pid_in(&slow.await.unwrap().text());
    (slow_pid, fast)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_outstanding_sends_fast_requests_to_the_idle_worker() {
    let (slow, fast) = fast_pids_beside_a_slow_request("least-outstanding").await;
    assert!(
        fast.iter().all(|&p| p != slow),
        "no fast request waited behind the slow one: slow {slow}, fast {fast:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates_regardless_of_load() {
    let (slow, fast) = fast_pids_beside_a_slow_request("round-robin").await;
    let on_busy = fast.iter().filter(|&&p| p == slow).count();
    assert_eq!(
        on_busy, 5,
        "every other request goes to the busy worker: slow {slow}, fast {fast:?}"
    );
}

#[tokio::test]
async fn an_axum_router_drops_in() {
    let example = bin("examples/axum").to_string_lossy().into_owned();
    let f = Ferry::builder(&["--workers", "1"], &[&example]).start();
    assert_eq!(get(f.addr, "/").await.text(), "Hello from axum!\n");
    assert_eq!(get(f.addr, "/users/7").await.text(), "user 7\n");
    assert_eq!(get(f.addr, "/nope").await.status, StatusCode::NOT_FOUND);
    let body = body_for(3, 200_000);
    let r = Conn::open(f.addr)
        .await
        .send(
            Request::post("/echo")
                .body(Full::new(body.clone()))
                .unwrap(),
        )
        .await;
    assert!(
        r.status == StatusCode::OK && r.body == body,
        "a streamed body through axum"
    );
}

#[tokio::test]
async fn direct_mode_serves_the_same_routes_without_a_master() {
    let d = Direct::start();
    let r = get(d.addr, "/").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::OK, "Hello, world!\n")
    );
    assert_eq!(
        pid_in(&get(d.addr, "/pid").await.text()),
        d.child.id(),
        "served by the testbed process itself"
    );
    let mut c = Conn::open(d.addr).await;
    let body = body_for(7, 100_000);
    let r = c
        .send(
            Request::post("/echo")
                .body(Full::new(body.clone()))
                .unwrap(),
        )
        .await;
    assert!(r.body == body);
    assert_eq!(
        get(d.addr, "/panic").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        get(d.addr, "/").await.status,
        StatusCode::OK,
        "still serving after a panic"
    );
}

type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// An HTTP/2 connection with prior knowledge (h2c): no upgrade, the preface first.
async fn h2c(addr: std::net::SocketAddr) -> H2 {
    h2c_watched(addr).await.0
}

/// [`h2c`], and a receiver that resolves when the connection has ended.
async fn h2c_watched(addr: std::net::SocketAddr) -> (H2, tokio::sync::oneshot::Receiver<()>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake");
    let (ended, ended_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = conn.await;
        let _ = ended.send(());
    });
    (sender, ended_rx)
}

async fn h2_send(h2: &mut H2, req: Request<Full<Bytes>>) -> Result<Resp, hyper::Error> {
    h2.ready().await?;
    let resp = h2.send_request(req).await?;
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let (parts, body) = resp.into_parts();
    Ok(Resp {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}

async fn h2_get(h2: &mut H2, uri: String) -> Result<Resp, hyper::Error> {
    h2_send(h2, Request::get(uri).body(Full::default()).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge_multiplexes_requests_over_workers() {
    let f = Ferry::testbed(&["--workers", "2"]);
    let base = format!("http://{}", f.addr);
    let h2 = h2c(f.addr).await;

    // Twenty slow requests at once on one connection: all in flight together, and
    // spread over both workers.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let mut h2 = h2.clone();
            let uri = format!("{base}/sleep?ms=300");
            tokio::spawn(async move { h2_get(&mut h2, uri).await })
        })
        .collect();
    assert!(f.log.wait_for_nth("sleeping 300 ms", 20, WAIT).is_some());
    let mut pids = HashSet::new();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert_eq!(r.status, StatusCode::OK);
        pids.insert(pid_in(&r.text()));
    }
    assert_eq!(pids.len(), 2, "{pids:?}");

    // The worker sees what HTTP/1.1 would have given it: origin form, and a host.
    let mut h2 = h2.clone();
    let r = h2_get(&mut h2, format!("{base}/target?x=1")).await.unwrap();
    assert_eq!(r.text(), "/target?x=1 HTTP/2.0\n");
    let r = h2_get(&mut h2, format!("{base}/headers")).await.unwrap();
    let pairs: Vec<(String, String)> = serde_json::from_slice(&r.body).unwrap();
    assert!(
        pairs.contains(&("host".into(), f.addr.to_string())),
        "{pairs:?}"
    );
    // Cookies sent as separate HTTP/2 fields arrive as HTTP/1.1's one header.
    let r = h2_send(
        &mut h2,
        Request::get(format!("{base}/headers"))
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap();
    let pairs: Vec<(String, String)> = serde_json::from_slice(&r.body).unwrap();
    let cookies: Vec<_> = pairs.iter().filter(|(n, _)| n == "cookie").collect();
    assert_eq!(cookies, [&("cookie".to_string(), "a=1; b=2".to_string())]);

    // Bodies both ways, streamed past the inline limit.
    let body = body_for(7, 300_000);
    let r = h2_send(
        &mut h2,
        Request::post(format!("{base}/echo"))
            .body(Full::new(body.clone()))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, body);
}

#[tokio::test]
async fn h2c_head_gets_the_length_and_no_body() {
    let f = Ferry::testbed(&["--workers", "1"]);
    let base = format!("http://{}", f.addr);
    let mut h2 = h2c(f.addr).await;
    for (path, length) in [
        ("/", Some("14")),
        ("/stream?bytes=100000&claim=100000", Some("100000")),
        ("/stream?bytes=100000", None),
    ] {
        let r = h2_send(
            &mut h2,
            Request::head(format!("{base}{path}"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("HEAD {path}: {e}"));
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(
            r.headers.get("content-length").map(|v| v.to_str().unwrap()),
            length,
            "{path}"
        );
        assert!(r.body.is_empty(), "{path}");
    }
    // The connection is still good, and so is the worker.
    assert_eq!(
        h2_get(&mut h2, format!("{base}/")).await.unwrap().text(),
        "Hello, world!\n"
    );
}

#[tokio::test]
async fn h2c_header_list_over_the_limit_is_refused_and_the_server_serves_on() {
    let f = Ferry::testbed(&["--workers", "1", "--max-header-size", "8KiB"]);
    let base = format!("http://{}", f.addr);
    let mut h2 = h2c(f.addr).await;
    let big = Request::get(format!("{base}/sleep?ms=0"))
        .header("x-big", "b".repeat(16 * 1024))
        .body(Full::default())
        .unwrap();
    let r = h2_send(&mut h2, big).await.expect("an answer, not a reset");
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // Refused in the master: the worker never saw it.
    assert!(!f.log.text().contains("sleeping 0 ms"), "{}", f.log.text());
    let mut h2 = h2c(f.addr).await;
    let r = h2_get(&mut h2, format!("{base}/")).await.unwrap();
    assert_eq!(r.text(), "Hello, world!\n");
    assert!(!f.log.text().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2c_connection_is_closed_like_an_idle_keep_alive_one() {
    let f = Ferry::testbed(&["--workers", "1", "--header-read-timeout", "300ms"]);
    let (mut h2, ended) = h2c_watched(f.addr).await;
    // A request in flight for longer than the idle limit is not cut.
    let r = h2_get(&mut h2, format!("http://{}/sleep?ms=800", f.addr))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    // Idle afterwards: the master says GOAWAY and the connection ends.
    tokio::time::timeout(WAIT, ended)
        .await
        .expect("the idle connection was closed")
        .unwrap();
}

/// Slowloris: a client that sends nothing, half a request head, or half the HTTP/2
/// preface is dropped after `--header-read-timeout`, not kept forever.
#[test]
fn clients_that_stall_before_a_whole_head_are_dropped() {
    let f = Ferry::testbed(&["--workers", "1", "--header-read-timeout", "300ms"]);
    for (what, sent) in [
        ("nothing", &b""[..]),
        ("half a head", b"GET / HTTP/1.1\r\nHost: x\r\n"),
        ("half the HTTP/2 preface", b"PRI * HTTP/2.0\r\n"),
    ] {
        let mut s = std::net::TcpStream::connect(f.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        std::io::Write::write_all(&mut s, sent).unwrap();
        let mut got = Vec::new();
        match std::io::Read::read_to_end(&mut s, &mut got) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("{what}: the connection was kept open ({e})"),
        }
        let got = String::from_utf8_lossy(&got);
        assert!(
            got.is_empty() || got.starts_with("HTTP/1.1 408"),
            "{what}: {got}"
        );
    }
    // The server is fine.
    let mut s = std::net::TcpStream::connect(f.addr).unwrap();
    std::io::Write::write_all(
        &mut s,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut got = String::new();
    std::io::Read::read_to_string(&mut s, &mut got).unwrap();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}
