//! Supervision, end to end: crashes, hangs, timeouts, protocol violations, restart
//! backoff, orphans, recycling, graceful stop and rolling reload.

mod harness;

use bytes::Bytes;
use harness::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

fn sole_worker(f: &Ferry) -> u32 {
    let pids = f.worker_pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    pids[0]
}

/// Puts 5 GETs and 5 POSTs in flight on the only worker (they sleep there, and only
/// there), runs `kill` on it, and checks what the ten clients get.
async fn ten_in_flight_then(kill: impl FnOnce(&Ferry, u32) -> Option<std::thread::JoinHandle<()>>) {
    let f = Ferry::testbed(&["--workers", "1"]);
    let victim = sole_worker(&f);
    let path = format!("/sleep?ms=60000&pid={victim}");
    let mut gets = Vec::new();
    let mut posts = Vec::new();
    for _ in 0..5 {
        let (addr, p) = (f.addr, path.clone());
        gets.push(tokio::spawn(async move { get(addr, &p).await }));
        let (addr, p) = (f.addr, path.clone());
        posts.push(tokio::spawn(async move { post(addr, &p).await }));
    }
    assert!(
        f.log.wait_for_nth("sleeping 60000 ms", 10, WAIT).is_some(),
        "{}",
        f.log.text()
    );
    let t0 = Instant::now();
    let background = kill(&f, victim);
    for g in gets {
        let r = g.await.unwrap();
        assert_eq!(
            r.status,
            StatusCode::OK,
            "a GET is retried on the replacement: {}",
            r.text()
        );
        assert_ne!(pid_in(&r.text()), victim);
    }
    for p in posts {
        assert_eq!(
            p.await.unwrap().status,
            StatusCode::BAD_GATEWAY,
            "a POST is not retried"
        );
    }
    // At once: about 0.2 s on an idle machine (the issue asks for 1 s), against the
    // handlers' 60 s sleep. The bound leaves room for a loaded CI machine.
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "all ten answered at once, took {:?}",
        t0.elapsed()
    );
    if let Some(b) = background {
        b.join()
            .expect("the request that killed the worker was retried: 200");
    }
    // Back to one worker, serving.
    assert_eq!(get(f.addr, "/").await.status, StatusCode::OK);
    assert_eq!(f.worker_pids().len(), 1);
    assert!(!alive(victim));
    assert!(f.log.wait_for("worker exited", WAIT).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_worker_holding_ten_requests() {
    ten_in_flight_then(|_, pid| {
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
        None
    })
    .await;
}

/// Sends `GET path` from a thread of its own (the test's runtime is busy waiting for
/// the ten requests). The request itself is idempotent, so it is retried on the
/// replacement, which is not the targeted pid and answers 200.
fn get_in_background(f: &Ferry, path: String) -> Option<std::thread::JoinHandle<()>> {
    let addr = f.addr;
    Some(std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(get(addr, &path)).status, StatusCode::OK);
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_route_behaves_like_kill_9() {
    ten_in_flight_then(|f, pid| get_in_background(f, format!("/crash?pid={pid}"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_route_behaves_like_kill_9() {
    ten_in_flight_then(|f, pid| get_in_background(f, format!("/exit?code=3&pid={pid}"))).await;
}

#[tokio::test]
async fn crash_without_retry_gives_502_at_once() {
    let f = Ferry::testbed(&["--workers", "2", "--retry-idempotent", "false"]);
    let t0 = Instant::now();
    assert_eq!(get(f.addr, "/crash").await.status, StatusCode::BAD_GATEWAY);
    // At once, not at the 30 s request timeout.
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(
        f.log.wait_for("killed by signal 6", WAIT).is_some(),
        "exit logged with the signal: {}",
        f.log.text()
    );
}

#[tokio::test]
async fn request_timeout_gives_504_near_the_timeout_and_frees_the_slot() {
    let f = Ferry::testbed(&[
        "--workers",
        "1",
        "--concurrency",
        "1",
        "--request-timeout",
        "500ms",
    ]);
    let t0 = Instant::now();
    let r = get(f.addr, "/sleep?ms=30000").await;
    let took = t0.elapsed();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        // The 504 itself proves the timeout acted (the handler sleeps 30 s); the bound
        // only checks it acted near its time, with room for a loaded machine.
        took >= Duration::from_millis(500) && took < Duration::from_secs(10),
        "504 after {took:?}"
    );
    // The worker confirmed the cancel, so its only slot is free again at once.
    let t1 = Instant::now();
    assert_eq!(get(f.addr, "/").await.status, StatusCode::OK);
    // Not after the cancelled handler's 30 s sleep.
    assert!(t1.elapsed() < Duration::from_secs(10));
    assert_eq!(
        f.log.count("worker exited"),
        0,
        "a cancelled request does not cost the worker"
    );
}

#[tokio::test]
async fn a_response_head_after_the_timeout_is_late_not_a_violation() {
    // The handler blocks its thread past the timeout, then answers before it can
    // read the Cancel: its head reaches the master after the 504 went out.
    let f = Ferry::testbed(&[
        "--workers",
        "1",
        "--concurrency",
        "1",
        "--request-timeout",
        "300ms",
        "--heartbeat-timeout",
        "10s",
    ]);
    let worker = sole_worker(&f);
    let r = get(f.addr, "/spin?ms=3000").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    // The next request waits in the master for the only slot, which the late head
    // frees; the same worker answers it: it was not killed for the late head.
    assert_eq!(pid_in(&get(f.addr, "/pid").await.text()), worker);
    assert!(
        !f.log.text().contains("protocol violation"),
        "{}",
        f.log.text()
    );
    assert_eq!(f.worker_pids(), [worker]);
}

#[tokio::test]
async fn spinning_worker_is_killed_and_replaced() {
    let f = Ferry::testbed(&[
        "--workers",
        "1",
        "--retry-idempotent",
        "false",
        "--heartbeat-interval",
        "100ms",
        "--heartbeat-timeout",
        "1s",
        "--kill-timeout",
        "1s",
    ]);
    let victim = sole_worker(&f);
    let r = get(f.addr, "/spin?ms=60000").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    let line = f
        .log
        .wait_for("worker is stuck", WAIT)
        .expect("stuck log line");
    assert!(
        line.contains(&victim.to_string())
            && line.contains("answered no heartbeat")
            && line.contains("GET /spin"),
        "{line}"
    );
    let r = get(f.addr, "/pid").await;
    assert_ne!(pid_in(&r.text()), victim, "replaced");
    assert!(!alive(victim));
}

#[tokio::test]
async fn worker_that_never_confirms_a_cancel_is_treated_as_stuck() {
    let f = Ferry::testbed(&[
        "--workers",
        "1",
        "--request-timeout",
        "300ms",
        "--cancel-grace",
        "500ms",
        "--heartbeat-interval",
        "100ms",
        "--heartbeat-timeout",
        "60s",
        "--kill-timeout",
        "1s",
    ]);
    let victim = sole_worker(&f);
    assert_eq!(
        get(f.addr, "/spin?ms=60000").await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
    let line = f
        .log
        .wait_for("worker is stuck", WAIT)
        .expect("stuck log line");
    assert!(
        line.contains("did not confirm the cancellation of GET /spin"),
        "{line}"
    );
    assert_ne!(pid_in(&get(f.addr, "/pid").await.text()), victim);
}

/// What the client of the request that provoked the violation sees.
enum Client {
    /// A 502: the worker broke the protocol before any response went out.
    BadGateway,
    /// A cut connection: the response had already started.
    Cut,
}

async fn violation(mode: &str, expect: &str, client: Client) {
    let f = Ferry::builder(&["--workers", "2"], &[&misbehave(), mode]).start();
    let before = f.worker_pids();
    let r = Conn::open(f.addr)
        .await
        .try_send(
            Request::post("/evil")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    match client {
        Client::BadGateway => assert_eq!(
            r.expect("a response").status,
            StatusCode::BAD_GATEWAY,
            "{mode}"
        ),
        Client::Cut => assert!(
            r.is_err(),
            "{mode}: the started response must be cut, not completed"
        ),
    }
    let line = f
        .log
        .wait_for("protocol violation", WAIT)
        .unwrap_or_else(|| panic!("{mode}: {}", f.log.text()));
    assert!(line.contains(expect), "{mode}: {line}");
    // The other worker was untouched, and the pool is whole again.
    assert!(f.log.wait_for_nth("worker started", 3, WAIT).is_some());
    for _ in 0..4 {
        assert_eq!(get(f.addr, "/").await.status, StatusCode::OK);
    }
    let after = f.worker_pids();
    assert_eq!(after.len(), 2);
    assert_eq!(
        before.iter().filter(|p| after.contains(p)).count(),
        1,
        "exactly one worker replaced"
    );
    assert!(!f.log.text().contains("panicked"));
}

#[tokio::test]
async fn garbage_frame_kills_only_that_worker() {
    violation("garbage", "unknown message type 0x5a", Client::BadGateway).await;
}

#[tokio::test]
async fn oversized_frame_kills_only_that_worker() {
    violation(
        "oversize",
        "exceeds the 1048576-byte limit",
        Client::BadGateway,
    )
    .await;
}

#[tokio::test]
async fn response_for_an_unknown_id_kills_only_that_worker() {
    violation("unknown-id", "which is not in flight", Client::BadGateway).await;
}

#[tokio::test]
async fn second_response_head_kills_only_that_worker() {
    violation("second-head", "a second ResponseHead", Client::Cut).await;
}

#[tokio::test]
async fn body_longer_than_declared_kills_only_that_worker() {
    violation(
        "long-body",
        "body chunks run past the declared length",
        Client::Cut,
    )
    .await;
}

#[tokio::test]
async fn body_shorter_than_declared_kills_only_that_worker() {
    violation(
        "short-body",
        "the body ended 5 bytes short of its declared length",
        Client::Cut,
    )
    .await;
}

/// Seconds since midnight of a log line's RFC 3339 timestamp.
fn stamp(line: &str) -> f64 {
    let t = line.split('T').nth(1).unwrap();
    let hms: Vec<f64> = t[..t.find('Z').unwrap()]
        .split(':')
        .map(|x| x.parse().unwrap())
        .collect();
    hms[0] * 3600.0 + hms[1] * 60.0 + hms[2]
}

/// A file whose existence makes new testbed workers fail at start
/// (`FERRY_TESTBED_FAIL_IF_EXISTS`). Absent at first; its folder goes on drop.
struct FailMarker {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl FailMarker {
    fn set(&self) {
        std::fs::write(&self.path, b"").unwrap();
    }

    fn clear(&self) {
        std::fs::remove_file(&self.path).unwrap();
    }
}

impl Drop for FailMarker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `ferry ARGS -- ferry-testbed`, whose workers fail at start while the marker is set.
fn testbed_failing_on(name: &str, args: &[&str]) -> (Ferry, FailMarker) {
    let dir = std::env::temp_dir().join(format!("ferry-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = FailMarker {
        path: dir.join("fail"),
        dir,
    };
    let _ = std::fs::remove_file(&marker.path);
    let f = Ferry::builder(args, &[&testbed()])
        .env(
            "FERRY_TESTBED_FAIL_IF_EXISTS",
            marker.path.to_str().unwrap(),
        )
        .start();
    (f, marker)
}

#[tokio::test]
async fn failing_replacements_back_off_and_recover_by_themselves() {
    let (f, marker) =
        testbed_failing_on("backoff", &["--workers", "1", "--queue-timeout", "300ms"]);
    marker.set();
    let victim = sole_worker(&f);
    unsafe {
        libc::kill(victim as i32, libc::SIGKILL);
    }
    // The crashed worker was young: its restart waits 100 ms; then each failed start
    // doubles the delay.
    let crash = f
        .log
        .wait_for("restarting in 100ms", WAIT)
        .expect("the crash's restart delay");
    let lines: Vec<String> = (1..=3)
        .map(|n| {
            f.log
                .wait_for_nth("failed to start", n, WAIT)
                .expect("attempt")
        })
        .collect();
    for (line, delay) in lines.iter().zip(["200ms", "400ms", "800ms"]) {
        assert!(
            line.contains(&format!("(next attempt in {delay})")),
            "{line}"
        );
    }
    let stamps: Vec<f64> = std::iter::once(&crash)
        .chain(&lines)
        .map(|l| stamp(l))
        .collect();
    let gaps: Vec<f64> = stamps.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[0] >= 0.09 && gaps[1] >= 0.19 && gaps[2] >= 0.39,
        "the log timestamps show the backoff: {gaps:?}"
    );
    // No worker: the queue times out into 503, and ferry stays up.
    let r = get(f.addr, "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers["retry-after"], "1");
    // Fixed: the next attempt succeeds without anyone's help.
    marker.clear();
    assert!(
        f.log
            .wait_for_nth("worker started", 2, Duration::from_secs(20))
            .is_some(),
        "{}",
        f.log.text()
    );
    assert_eq!(get(f.addr, "/").await.status, StatusCode::OK);
}

fn wait_dead(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    !alive(pid)
}

#[tokio::test]
async fn killing_a_worker_leaves_none_of_its_process_group() {
    let f = Ferry::testbed(&["--workers", "1"]);
    let worker = sole_worker(&f);
    let grandchild: u32 = get(f.addr, "/spawn").await.text().trim().parse().unwrap();
    assert!(alive(grandchild));
    unsafe {
        libc::kill(worker as i32, libc::SIGKILL);
    }
    assert!(
        wait_dead(grandchild, Duration::from_secs(1)),
        "the grandchild outlived its worker"
    );
}

#[tokio::test]
async fn kill_9_of_the_master_leaves_no_child_or_grandchild() {
    let mut f = Ferry::testbed(&["--workers", "2"]);
    let workers = f.worker_pids();
    let mut grandchildren = Vec::new();
    for _ in 0..4 {
        grandchildren.push(
            get(f.addr, "/spawn")
                .await
                .text()
                .trim()
                .parse::<u32>()
                .unwrap(),
        );
    }
    f.signal(libc::SIGKILL);
    f.wait_exit(WAIT).expect("master gone");
    for pid in workers.iter().chain(&grandchildren) {
        assert!(
            wait_dead(*pid, Duration::from_secs(1)),
            "process {pid} outlived the master: {:?} {:?} (workers {workers:?}, grandchildren {grandchildren:?})",
            std::fs::read_to_string(format!("/proc/{pid}/stat")),
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        );
    }
}

/// The race behind the test above, made deterministic: the master's exit closes the
/// channel before the kernel sends the parent-death signal, so a worker must take its
/// group down on EOF by itself, with its stderr (a pipe the master read) gone too.
/// Here the test is the master, by hand.
#[test]
fn worker_whose_master_vanishes_takes_its_group_down_on_eof() {
    use ferry_protocol::*;
    use std::os::unix::process::ExitStatusExt;

    // stderr closed: the worker's next log line meets a broken pipe.
    let mut m = harness::hand::HandMaster::spawn(&testbed(), &[], false);
    m.handshake(8);
    m.get(1, "/spawn");
    let grandchild: u32 = match m.recv() {
        Some(WorkerMsg::ResponseHead(ResponseHead {
            status: 200,
            body: BodyKind::Inline(pid),
            ..
        })) => std::str::from_utf8(&pid).unwrap().trim().parse().unwrap(),
        other => panic!("expected /spawn's answer, got {other:?}"),
    };
    assert!(alive(grandchild));

    drop(m.channel.take());
    let status = m.wait_exit(WAIT);
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the worker should have killed its own group, but ended with {status}"
    );
    assert!(
        wait_dead(grandchild, Duration::from_secs(1)),
        "the grandchild outlived its worker"
    );
}

/// Answering a second head for an id in flight would put two terminal messages on
/// that id (the master kills a worker for that): the Rust SDK ends the session at
/// once instead, and says why.
#[test]
fn a_request_head_for_an_id_in_flight_ends_the_rust_worker() {
    let mut m = harness::hand::HandMaster::spawn(&testbed(), &[], true);
    m.handshake(8);
    m.get(1, "/sleep?ms=5000");
    m.get(1, "/");
    if let Some(msg) = m.recv() {
        panic!("nothing may answer request 1, got {msg:?}");
    }
    assert!(!m.wait_exit(WAIT).success());
    let err = m.stderr();
    assert!(
        err.contains("a RequestHead for request 1, still in flight"),
        "{err}"
    );
}

/// Over the in-flight limit: that request alone fails; the worker serves on.
#[test]
fn a_request_head_over_the_limit_fails_alone_in_the_rust_worker() {
    use ferry_protocol::*;

    let mut m = harness::hand::HandMaster::spawn(&testbed(), &[], true);
    m.handshake(1);
    m.get(1, "/sleep?ms=300");
    m.get(2, "/");
    match m.recv() {
        Some(WorkerMsg::Failed(f)) => {
            assert_eq!(f.id, 2);
            assert!(f.reason.contains("in-flight limit"), "{}", f.reason);
        }
        other => panic!("expected request 2 to fail, got {other:?}"),
    }
    assert!(matches!(m.recv(), Some(WorkerMsg::ResponseHead(h)) if h.id == 1 && h.status == 200));
    m.get(3, "/");
    assert!(matches!(m.recv(), Some(WorkerMsg::ResponseHead(h)) if h.id == 3 && h.status == 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_recycles_one_at_a_time_without_failures() {
    let f = Ferry::testbed(&[
        "--retry-idempotent",
        "false",
        "--workers",
        "2",
        "--max-requests",
        "50",
        "--max-requests-jitter",
        "10",
        "--heartbeat-interval",
        "50ms",
        // Replacements started on demand, under the one-at-a-time lock (spares, tested
        // below, start beside it).
        "--spare-workers",
        "0",
    ]);
    // At least 2,000 requests, and on until ten replacements are done: how many fit in
    // 2,000 depends on how fast this machine starts processes.
    let enough = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (log, enough) = (f.log.clone(), enough.clone());
        std::thread::spawn(move || {
            let seen = log.wait_for_nth("worker replaced", 10, Duration::from_secs(60));
            enough.store(true, std::sync::atomic::Ordering::Relaxed);
            seen.is_some()
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (addr, enough) = (f.addr, enough.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut bad = Vec::new();
            let mut pids = Vec::new();
            let mut sent = 0;
            while sent < 250 || !enough.load(std::sync::atomic::Ordering::Relaxed) {
                let r = conn.get("/pid").await;
                if r.status != StatusCode::OK {
                    bad.push(r.status);
                } else {
                    pids.push(pid_in(&r.text()));
                }
                sent += 1;
            }
            (bad, pids)
        }));
    }
    let mut served: std::collections::HashMap<u32, u32> = Default::default();
    for t in tasks {
        let (bad, pids) = t.await.unwrap();
        assert!(bad.is_empty(), "failed requests during recycling: {bad:?}");
        for pid in pids {
            *served.entry(pid).or_default() += 1;
        }
    }
    // Exact: a worker leaves the pool when it is given its limit, not at a later tick.
    let most = served.values().max().copied().unwrap_or_default();
    assert!(
        most <= 60,
        "a worker served {most} requests; the limit is 50 + 10: {served:?}"
    );
    let log = f.log.text();
    assert!(
        watcher.join().unwrap(),
        "ten replacements under load (at most 60 requests per worker):\n{log}"
    );
    // One start at a time: every "recycling" is followed by its "replacement ready"
    // before the next (old workers may drain side by side).
    let mut open = 0;
    for line in log.lines() {
        if line.contains("recycling worker") {
            open += 1;
            assert!(open <= 1, "two replacements starting at once:\n{log}");
        }
        if line.contains("replacement ready") {
            open -= 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_hundred_slow_requests_finish_then_exits_0() {
    let mut f = Ferry::testbed(&["--workers", "2"]);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let addr = f.addr;
        tasks.push(tokio::spawn(
            async move { get(addr, "/sleep?ms=1000").await },
        ));
    }
    assert!(
        f.log.wait_for_nth("sleeping 1000 ms", 100, WAIT).is_some(),
        "all 100 in flight"
    );
    f.signal(libc::SIGTERM);
    for t in tasks {
        assert_eq!(t.await.unwrap().status, StatusCode::OK);
    }
    let status = f
        .wait_exit(WAIT)
        .expect("ferry exits after a graceful stop");
    assert!(status.success(), "{status:?}\n{}", f.log.text());
    // The exit can be seen before the reader thread has taken the last log line.
    assert!(
        f.log.wait_for("stopped gracefully", WAIT).is_some(),
        "{}",
        f.log.text()
    );
}

#[test]
fn a_connection_accepted_before_a_graceful_stop_still_gets_its_first_request_answered() {
    use std::io::{Read, Write};
    let mut f = Ferry::testbed(&["--workers", "1"]);
    // Connected, but its request not sent yet (it may be on the wire as the stop
    // begins). A second connection answered after it shows the first was accepted:
    // one listener's queue is accepted in order.
    let mut quiet = std::net::TcpStream::connect(f.addr).unwrap();
    let answered = raw(
        f.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "",
    );
    assert!(answered.ends_with("Hello, world!\n"), "{answered}");
    f.signal(libc::SIGTERM);
    assert!(f
        .log
        .wait_for("stopping gracefully: accepting no new", WAIT)
        .is_some());
    quiet.set_read_timeout(Some(WAIT)).unwrap();
    quiet
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = quiet.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(f.wait_exit(WAIT).is_some_and(|s| s.success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_stops_at_once_with_non_zero() {
    let mut f = Ferry::testbed(&["--workers", "1"]);
    let worker = sole_worker(&f);
    let addr = f.addr;
    let slow = tokio::spawn(async move {
        Conn::open(addr)
            .await
            .try_send(
                Request::get("/sleep?ms=60000")
                    .body(Full::default())
                    .unwrap(),
            )
            .await
    });
    assert!(f.log.wait_for("sleeping 60000 ms", WAIT).is_some());
    f.signal(libc::SIGQUIT);
    let status = f.wait_exit(WAIT).expect("exits at once");
    assert!(!status.success());
    assert!(wait_dead(worker, Duration::from_secs(1)));
    assert!(
        slow.await.unwrap().is_err(),
        "the in-flight request was cut"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sighup_reloads_under_load_fail_nothing() {
    // No retries: a response lost by a draining worker must show, not be papered over.
    let f = Ferry::testbed(&["--workers", "2", "--retry-idempotent", "false"]);
    let first = f.worker_pids();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..6 {
        let (addr, stop) = (f.addr, stop.clone());
        load.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let (mut ok, mut bad) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = conn.get("/").await;
                if r.status == StatusCode::OK {
                    ok += 1
                } else {
                    bad.push(r.status)
                }
            }
            (ok, bad)
        }));
    }
    for n in 1..=20 {
        f.signal(libc::SIGHUP);
        assert!(
            f.log
                .wait_for_nth("reload complete", n, Duration::from_secs(30))
                .is_some(),
            "reload {n}:\n{}",
            f.log.text()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for t in load {
        let (ok, bad) = t.await.unwrap();
        assert!(bad.is_empty(), "failed requests during reloads: {bad:?}");
        total += ok;
    }
    assert!(total > 100, "the load really ran ({total} requests)");
    // Old workers drain on their own after their replacements took over.
    assert!(
        f.log
            .wait_for_nth("worker replaced", 40, Duration::from_secs(30))
            .is_some(),
        "{}",
        f.log.text()
    );
    assert!(f
        .log
        .wait_for_nth(
            "worker drained: exited with status 0",
            40,
            Duration::from_secs(30)
        )
        .is_some());
    let now = f.worker_pids();
    assert_eq!(now.len(), 2);
    assert!(
        now.iter().all(|p| !first.contains(p)),
        "every worker was replaced"
    );
    assert_eq!(f.log.count("worker replaced"), 40);
    // Drained workers exit by themselves, cleanly, not by our SIGKILL.
    assert_eq!(
        f.log.count("worker drained: exited with status 0"),
        40,
        "{}",
        f.log.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigttin_adds_a_worker_and_sigttou_drains_one_away() {
    // No retries: a worker killed instead of drained would fail its request.
    let (f, marker) =
        testbed_failing_on("ttin", &["--workers", "1", "--retry-idempotent", "false"]);
    let first = sole_worker(&f);

    // A worker that cannot start is not added, and nothing else changes.
    marker.set();
    f.signal(libc::SIGTTIN);
    assert!(
        f.log.wait_for("could not add a worker", WAIT).is_some(),
        "{}",
        f.log.text()
    );
    assert_eq!(f.worker_pids(), [first]);
    marker.clear();

    f.signal(libc::SIGTTIN);
    assert!(f.log.wait_for_nth("worker started", 2, WAIT).is_some());
    let pids = f.worker_pids();
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(pids.contains(&first));

    // One slow request on each worker; the added worker (the last slot) drains away,
    // finishing its own.
    let added = *pids.iter().find(|p| **p != first).unwrap();
    let addr = f.addr;
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get(addr, "/sleep?ms=500").await }))
        .collect();
    assert!(f.log.wait_for_nth("sleeping 500 ms", 2, WAIT).is_some());
    f.signal(libc::SIGTTOU);
    let mut served_by = Vec::new();
    for t in slow {
        let r = t.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", f.log.text());
        served_by.push(pid_in(&r.text()));
    }
    served_by.sort();
    let mut both = vec![first, added];
    both.sort();
    assert_eq!(served_by, both, "one slow request on each worker");
    assert!(f.log.wait_for("worker removed", WAIT).is_some());
    let drained = f.log.wait_for("worker drained", WAIT).unwrap();
    assert!(drained.contains(&format!("pid={added}")), "{drained}");
    assert_eq!(f.worker_pids(), [first], "the added worker went");

    // Never below one worker.
    f.signal(libc::SIGTTOU);
    assert!(f.log.wait_for("at its minimum", WAIT).is_some());
    assert_eq!(f.worker_pids(), [first]);
    assert_eq!(get(f.addr, "/").await.status, StatusCode::OK);
    assert!(!f.log.text().contains("panicked"));
}
