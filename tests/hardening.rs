//! Attacks and accidents, short forms: what a hostile or unlucky client or worker can
//! do to the pool, and that it stays served. Each test fails on a master without the
//! bound it checks.

// `heavy()`'s guard is held across awaits on purpose: each test has a runtime (and
// a thread) of its own, and the lock only orders whole tests.
#![allow(clippy::await_holding_lock)]

mod harness;

use bytes::Bytes;
use harness::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// Held by the tests that load the machine or time what they see (floods, storms):
/// they run one at a time, so none of them slows another past its bound on a small
/// CI machine. The light tests run beside them.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first line of a raw HTTP/1.1 answer.
fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

#[test]
fn an_http11_request_needs_exactly_one_host() {
    let f = Ferry::testbed(&["--workers", "1"]);
    let none = raw(f.addr, b"GET / HTTP/1.1\r\n\r\n", "\r\n\r\n");
    assert!(status_line(&none).contains(" 400 "), "{none}");
    let two = raw(
        f.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "\r\n\r\n",
    );
    assert!(status_line(&two).contains(" 400 "), "{two}");
    let one = raw(
        f.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "",
    );
    assert!(status_line(&one).contains(" 200 "), "{one}");
    // HTTP/1.0 needs none.
    let old = raw(f.addr, b"GET / HTTP/1.0\r\n\r\n", "");
    assert!(status_line(&old).contains(" 200 "), "{old}");
}

#[test]
fn a_malformed_chunked_body_is_the_clients_fault() {
    let f = Ferry::testbed(&["--workers", "1"]);
    let answer = raw(
        f.addr,
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz-not-a-size\r\n",
        "\r\n\r\n",
    );
    assert!(status_line(&answer).contains(" 400 "), "{answer}");
    // Neither blamed on the worker nor costing it its life.
    let text = f.log.text();
    assert!(!text.contains("failed in the worker"), "{text}");
    assert_eq!(f.worker_pids().len(), 1);
}

#[test]
fn a_paused_upload_gets_408_and_frees_its_slot() {
    let f = Ferry::testbed(&[
        "--workers",
        "1",
        "--concurrency",
        "1",
        "--body-read-timeout",
        "300ms",
        "--queue-timeout",
        "5s",
    ]);
    let mut s = TcpStream::connect(f.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let started = Instant::now();
    // 100 KiB announced (so streamed, holding the only slot), 10 bytes sent.
    // A handler that answers only after a minute: the 408 comes from the master.
    s.write_all(
        b"POST /sleep?ms=60000 HTTP/1.1\r\nHost: a\r\nContent-Length: 102400\r\n\r\n0123456789",
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(status_line(&answer).contains(" 408 "), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The slot came back: the only one there is serves the next request.
    let r = raw(
        f.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "",
    );
    assert!(status_line(&r).contains(" 200 "), "{r}");
}

#[tokio::test]
async fn a_slow_honest_upload_is_not_a_request_timeout() {
    let _one_at_a_time = heavy();
    let f = Ferry::testbed(&[
        "--workers",
        "1",
        "--request-timeout",
        "400ms",
        "--body-read-timeout",
        "2s",
    ]);
    let addr = f.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n")
            .unwrap();
        // Ten pieces, 100 ms apart: a second of upload, longer than the request timeout.
        for _ in 0..10 {
            s.write_all(&[b'u'; 10_000]).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        status_line(&text).contains(" 200 "),
        "{}",
        status_line(&text)
    );
    assert!(answer.ends_with(&[b'u'; 1000]), "the body came back whole");
}

/// Clients that ask for a big streamed response and never read it hold no slot for
/// longer than `--send-timeout`: afterwards the pool's only two slots serve again.
#[test]
fn clients_that_never_read_lose_their_slots_after_the_send_timeout() {
    let _one_at_a_time = heavy();
    let f = Ferry::testbed(&[
        "--workers",
        "1",
        "--concurrency",
        "2",
        "--send-timeout",
        "500ms",
        "--queue-timeout",
        "8s",
    ]);
    let stuck: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(f.addr).unwrap();
            s.write_all(b"GET /stream?bytes=104857600 HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    // Both slots are taken (the worker streams to each) until the master cuts them.
    let started = Instant::now();
    let r = raw(
        f.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "",
    );
    assert!(status_line(&r).contains(" 200 "), "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "served only after {:?}",
        started.elapsed()
    );
    drop(stuck);
}

/// One HTTP/2 connection that never opens its flow-control window asks for many
/// streamed responses: it gets its share of the pool, no more, and everybody else is
/// served meanwhile.
#[tokio::test]
async fn one_h2_connection_with_a_closed_window_cannot_hold_the_pool() {
    let _one_at_a_time = heavy();
    let f = Ferry::testbed(&["--workers", "2", "--admin-listen", "127.0.0.1:0"]);
    let (client, _connection) = closed_window_client(f.addr).await;
    let mut streams = open_streams(&client, f.addr, "/stream?bytes=1048576", 200);
    // Let the streams reach the workers.
    let _ = tokio::time::timeout(Duration::from_millis(500), futures_ready(&mut streams)).await;
    // They are real, and they hold their share of the slots: a quarter of 2 x 64.
    let admin = f.admin_addr();
    let deadline = Instant::now() + WAIT;
    let held = loop {
        let held = in_flight(admin).await;
        if held >= 32 || Instant::now() > deadline {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(held, 32, "slots held by the one connection");
    let mut ok = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(2), get(f.addr, "/")).await;
        if r.is_ok_and(|r| r.status == StatusCode::OK) && started.elapsed() < Duration::from_secs(2)
        {
            ok += 1;
        }
    }
    assert!(ok >= 19, "{ok} of 20 probes served within 2 s");
    drop(client);
}

/// Requests in flight on all workers, from `/status`.
async fn in_flight(admin: SocketAddr) -> u64 {
    let r = get(admin, "/status").await;
    let s: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["in_flight"].as_u64().unwrap())
        .sum()
}

/// Waits until at least one of the spawned streams has its response head.
async fn futures_ready(streams: &mut [HeldStream]) {
    loop {
        if streams.iter().any(|s| s.is_finished()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Workers killed one after another while serving are replaced at once: the pool is
/// never empty for long, and whole again soon after.
#[tokio::test]
async fn a_crash_storm_never_empties_the_pool_for_long() {
    let _one_at_a_time = heavy();
    let f = Ferry::testbed(&["--workers", "2", "--queue-timeout", "3s"]);
    let storm_end = Instant::now() + Duration::from_secs(3);
    let addr = f.addr;
    let probes = tokio::spawn(async move {
        let mut worst = Duration::ZERO;
        let mut failed = 0;
        while Instant::now() < storm_end + Duration::from_secs(1) {
            let started = Instant::now();
            match tokio::time::timeout(Duration::from_secs(4), try_get(addr, "/")).await {
                Ok(Some(StatusCode::OK)) => {}
                _ => failed += 1,
            }
            worst = worst.max(started.elapsed());
        }
        (worst, failed)
    });
    let mut killed = 0;
    while Instant::now() < storm_end {
        if let Some(&victim) = f.worker_pids().first() {
            unsafe {
                libc::kill(victim as i32, libc::SIGKILL);
            }
            killed += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (worst, failed) = probes.await.unwrap();
    assert!(killed >= 10, "{killed}");
    // A probe that met a dying worker may get 502; none waits long for a worker.
    assert!(
        worst < Duration::from_secs(2),
        "a probe waited {worst:?}; {failed} failed"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while f.worker_pids().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the pool is not whole 3 s after the storm"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !f.log.text().contains("restarting in 2s"),
        "no long backoff"
    );
}

/// A GET whose failure (a cut connection) is an answer, not a panic.
async fn try_get(addr: SocketAddr, path: &str) -> Option<StatusCode> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.ok()?;
    Some(resp.status())
}

/// Half an HTTP/2 preface, from many connections at once, costs the master no CPU:
/// each waits on its socket, with no re-peeking loop.
#[test]
fn half_prefaces_do_not_pin_the_master() {
    let _one_at_a_time = heavy();
    let f = Ferry::testbed(&["--workers", "1", "--header-read-timeout", "20s"]);
    let idle: Vec<TcpStream> = (0..400)
        .map(|_| {
            let mut s = TcpStream::connect(f.addr).unwrap();
            s.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
            s
        })
        .collect();
    // Served all the same.
    let r = raw(
        f.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "",
    );
    assert!(status_line(&r).contains(" 200 "), "{r}");
    let before = cpu_ticks(f.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(f.pid()) - before;
    // Clock ticks are 10 ms: 2 s is 200 of them. Re-peeking 400 sockets every 5 ms
    // took most of a core; waiting takes next to none.
    assert!(
        used < 40,
        "the master used {used} ticks of CPU in 2 s of idle connections"
    );
    drop(idle);
}

/// A client socket whose receive buffer is set small before it connects, so the
/// kernel holds little of what the server sends it.
fn connect_with_small_receive_buffer(addr: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("loopback v4")
    };
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let small: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &small as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        );
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            &sin as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(r, 0, "connect");
        TcpStream::from_raw_fd(fd)
    }
}

/// Resident memory of a process now, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb * 1024
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// At `--max-connections` the master stops accepting until a connection closes.
#[test]
fn at_the_connection_cap_accepting_waits_for_a_close() {
    let _one_at_a_time = heavy();
    let f = Ferry::testbed(&[
        "--workers",
        "1",
        "--max-connections",
        "3",
        "--header-read-timeout",
        "20s",
    ]);
    let mut open: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(f.addr).unwrap())
        .collect();
    // Accepted by the kernel, not by the master: no answer while the cap holds.
    let mut extra = TcpStream::connect(f.addr).unwrap();
    extra
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    extra
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(extra.read(&mut buf).is_err(), "answered above the cap");
    assert!(f.log.wait_for("--max-connections", WAIT).is_some());
    // One closes: the waiting one is served.
    open.pop();
    extra.set_read_timeout(Some(WAIT)).unwrap();
    let n = extra.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains(" 200 "));
}

async fn violation_by(mode: &str, request: Request<Full<Bytes>>, expect: &str) {
    let f = Ferry::builder(&["--workers", "2"], &[&misbehave(), mode]).start();
    let r = Conn::open(f.addr).await.try_send(request).await;
    assert_eq!(
        r.expect("a response").status,
        StatusCode::BAD_GATEWAY,
        "{mode}"
    );
    let line = f
        .log
        .wait_for("protocol violation", WAIT)
        .unwrap_or_else(|| panic!("{mode}: {}", f.log.text()));
    assert!(line.contains(expect), "{mode}: {line}");
    assert!(f.log.wait_for_nth("worker started", 3, WAIT).is_some());
    assert_eq!(get(f.addr, "/").await.status, StatusCode::OK);
    assert!(!f.log.text().contains("panicked"));
}

#[tokio::test]
async fn a_response_head_of_40000_fields_is_a_violation_not_a_panic() {
    let req = Request::post("/evil")
        .body(Full::new(Bytes::new()))
        .unwrap();
    violation_by("many-fields", req, "fields").await;
}

#[tokio::test]
async fn credits_for_bytes_never_sent_are_a_violation_not_a_panic() {
    // A streamed upload (over 64 KiB), so the request has a window to inflate.
    let body = Bytes::from(vec![b'b'; 200 * 1024]);
    let req = Request::post("/evil").body(Full::new(body)).unwrap();
    violation_by("credit-flood", req, "credits").await;
}

#[tokio::test]
async fn junk_on_a_workers_stderr_is_relayed_and_its_pipe_kept_open() {
    let f = Ferry::builder(&["--workers", "1"], &[&misbehave(), "stderr-junk"]).start();
    let victim = f.worker_pids()[0];
    let r = Conn::open(f.addr)
        .await
        .try_send(
            Request::post("/evil")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .expect("an answer");
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        f.log.wait_for("after the junk", WAIT).is_some(),
        "{}",
        f.log.text().len()
    );
    assert!(
        f.log.text().contains("not utf-8"),
        "lossy, not the end of the relay"
    );
    // The same worker serves on.
    assert_eq!(get(f.addr, "/").await.status, StatusCode::OK);
    assert_eq!(f.worker_pids(), vec![victim]);
}

/// A worker whose channel can no longer be written to is replaced at once: its
/// requests fail now, not at the heartbeat timeout.
#[tokio::test]
async fn a_broken_channel_fails_its_requests_at_once() {
    let f = Ferry::builder(
        &[
            "--workers",
            "1",
            "--heartbeat-timeout",
            "60s",
            "--request-timeout",
            "60s",
        ],
        &[&misbehave(), "deaf"],
    )
    .start();
    let started = Instant::now();
    let r = Conn::open(f.addr)
        .await
        .try_send(
            Request::post("/evil")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .expect("an answer");
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(f
        .log
        .wait_for("a write to its channel failed", WAIT)
        .is_some());
    assert!(
        f.log.wait_for_nth("worker started", 2, WAIT).is_some(),
        "replaced"
    );
}

/// A worker streaming tiny chunks, one at a time, to a client that does not read:
/// the master holds at most a window of them, each copied out of the channel's read
/// buffer. (As slices, each would pin a whole read buffer, 64 KiB or more once a big
/// frame has grown it: a window of 100-byte chunks could pin over 100 MiB.)
#[test]
fn tiny_chunks_to_a_stalled_client_keep_the_master_small() {
    let _one_at_a_time = heavy();
    let f = Ferry::testbed(&["--workers", "1"]);
    // A big response first, so the channel's read buffer has grown.
    let warm = raw(
        f.addr,
        b"GET /stream?bytes=1048576 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "",
    );
    assert!(warm.len() > 1 << 20);
    let base = rss(f.pid());
    let mut s = connect_with_small_receive_buffer(f.addr);
    // 100-byte chunks, a millisecond apart (so each arrives in a read of its own),
    // and the client reads nothing for 4 s: over 3,000 chunks, the window is 2,621,
    // and the kernel holds little of it for a client whose receive buffer is small.
    s.write_all(b"GET /stream?bytes=1048576&chunk=100&every=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let grew = rss(f.pid()).saturating_sub(base);
    eprintln!(
        "master RSS grew by {} KiB (from {} KiB)",
        grew >> 10,
        base >> 10
    );
    assert!(grew < 16 << 20, "the master grew by {} KiB", grew >> 10);
    drop(s);
}

/// Over HTTP/2, a response still streaming is activity: the connection is not
/// closed as idle under it, and takes new streams.
#[tokio::test]
async fn an_h2_connection_streaming_a_long_response_is_not_idle() {
    let _one_at_a_time = heavy();
    let f = Ferry::testbed(&["--workers", "1", "--header-read-timeout", "500ms"]);
    let tcp = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let uri = |path: &str| format!("http://{}{path}", f.addr);
    // 15 chunks 100 ms apart: 1.5 s, three times the idle limit.
    let req = Request::get(uri("/stream?bytes=15000&chunk=1000&every=100"))
        .body(())
        .unwrap();
    let (resp, _) = client
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(req, true)
        .unwrap();
    let mut body = resp.await.unwrap().into_body();
    let mut got = 0;
    let mut second = None;
    let started = Instant::now();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        got += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
        if second.is_none() && started.elapsed() > Duration::from_secs(1) {
            // Past the idle limit, mid-stream: a new stream is still taken.
            let req = Request::get(uri("/")).body(()).unwrap();
            let mut c = client.clone().ready().await.expect("no GOAWAY");
            let (r, _) = c.send_request(req, true).expect("a new stream");
            second = Some(r.await.expect("answered").status());
        }
    }
    assert_eq!(got, 15000);
    assert_eq!(second, Some(StatusCode::OK));
}

/// Past the descriptor limit: connections wait, worker restarts still work, and
/// once the flood is gone new clients are served at once.
#[tokio::test]
async fn a_descriptor_flood_neither_stops_restarts_nor_outlasts_itself() {
    let _one_at_a_time = heavy();
    // A hard limit of 256 descriptors, less what the workers need, for connections.
    let f = Ferry::builder(&["--workers", "1"], &[&testbed()])
        .limit_fds(256)
        .start();
    let flood: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect(f.addr).ok())
        .collect();
    assert!(flood.len() > 200, "{} connected", flood.len());
    assert!(f.log.wait_for("--max-connections", WAIT).is_some());
    // A worker killed now is replaced: its descriptors were kept back.
    let victim = f.worker_pids()[0];
    unsafe {
        libc::kill(victim as i32, libc::SIGKILL);
    }
    assert!(
        f.log.wait_for_nth("worker started", 2, WAIT).is_some(),
        "{}",
        f.log.text()
    );
    drop(flood);
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), get(f.addr, "/")).await;
    assert!(r.is_ok_and(|r| r.status == StatusCode::OK));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

/// HTTP/2 streams whose client never opens its window are cancelled after
/// `--send-timeout` (their slots come back), and a connection left with nothing but
/// stalled streams is closed.
#[tokio::test]
async fn stalled_h2_streams_lose_their_slots_and_then_their_connection() {
    let _one_at_a_time = heavy();
    let f = Ferry::testbed(&[
        "--workers",
        "1",
        "--concurrency",
        "8",
        "--max-streams-per-connection",
        "4",
        "--send-timeout",
        "1s",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let admin = f.admin_addr();
    let (client, connection) = closed_window_client(f.addr).await;
    let streams = open_streams(&client, f.addr, "/stream?bytes=1048576", 4);
    let deadline = Instant::now() + WAIT;
    while in_flight(admin).await < 4 {
        assert!(
            Instant::now() < deadline,
            "the streams never reached the worker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Cancelled after the send timeout (checked on the heartbeat tick), confirmed
    // by the worker: the slots are free again.
    while in_flight(admin).await > 0 {
        assert!(
            Instant::now() < deadline,
            "stalled streams still hold their slots"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(f.log.wait_for("--send-timeout", WAIT).is_some());
    // And the connection, with only stalled streams, is closed by the master.
    let closed = tokio::time::timeout(WAIT, connection).await;
    assert!(closed.is_ok(), "the connection is still open");
    drop((client, streams));
}

/// Small answers too: an HTTP/2 client that never opens its window for them keeps
/// its connection no longer than the idle timeout plus `--send-timeout` (the answers
/// wait in h2's send buffer for a window that never opens, holding no slot, so only
/// the connection can notice).
#[tokio::test]
async fn an_h2_client_that_never_takes_small_answers_loses_its_connection() {
    let _one_at_a_time = heavy();
    let f = Ferry::testbed(&[
        "--workers",
        "1",
        "--send-timeout",
        "1s",
        "--header-read-timeout",
        "500ms",
    ]);
    let (client, connection) = closed_window_client(f.addr).await;
    let mut heads = Vec::new();
    for _ in 0..4 {
        let req = Request::get(format!("http://{}/", f.addr))
            .body(())
            .unwrap();
        let mut c = client.clone().ready().await.unwrap();
        let (resp, _) = c.send_request(req, true).unwrap();
        heads.push(resp);
    }
    for head in heads {
        let resp = head.await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "the heads arrive; the bodies cannot"
        );
    }
    let started = Instant::now();
    let closed = tokio::time::timeout(WAIT, connection).await;
    assert!(
        closed.is_ok(),
        "the connection is still open after {WAIT:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "not before the timeout"
    );
    drop(client);
}

/// A worker that never reads a streamed request body (its handler is stuck) leaves
/// the upload waiting for credit: after `--request-timeout` the client gets 504 and
/// the request is cancelled, as when it sends no head.
#[tokio::test]
async fn an_upload_the_worker_never_reads_times_out() {
    let f = Ferry::testbed(&["--workers", "1", "--request-timeout", "1s"]);
    let body = Bytes::from(vec![b'u'; 1 << 20]);
    let started = Instant::now();
    let r = Conn::open(f.addr)
        .await
        .try_send(
            Request::post("/sleep?ms=60000")
                .body(Full::new(body))
                .unwrap(),
        )
        .await
        .expect("an answer");
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}
