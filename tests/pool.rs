//! How the pool's processes come and go: spares and one process per request, the
//! pool that sizes itself, and workers that retire themselves.

mod harness;

use harness::*;
use http::StatusCode;
use std::collections::HashMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// `clients` connections each send `each` GETs of `path`; the pids that answered
/// (by how many answers each gave) and the statuses of any failures.
async fn load(
    addr: std::net::SocketAddr,
    clients: usize,
    each: usize,
    path: &str,
) -> (HashMap<u32, usize>, Vec<StatusCode>) {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut out = Vec::new();
            for _ in 0..each {
                let r = conn.get(&path).await;
                out.push((
                    r.status,
                    (r.status == StatusCode::OK).then(|| pid_in(&r.text())),
                ));
            }
            out
        }));
    }
    let mut pids: HashMap<u32, usize> = HashMap::new();
    let mut bad = Vec::new();
    for t in tasks {
        for (status, pid) in t.await.unwrap() {
            match pid {
                Some(pid) => *pids.entry(pid).or_default() += 1,
                None => bad.push(status),
            }
        }
    }
    (pids, bad)
}

/// A control socket path in a fresh folder of this test's own.
fn socket_path(name: &str) -> std::path::PathBuf {
    fresh_dir(&format!("pool-{name}")).join("control.sock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_1_runs_every_request_in_a_fresh_process() {
    let f = Ferry::testbed(&[
        "--workers",
        "2",
        "--max-requests",
        "1",
        "--retry-idempotent",
        "false",
    ]);
    let (pids, bad) = load(f.addr, 4, 125, "/pid").await;
    assert!(bad.is_empty(), "failed requests: {bad:?}\n{}", f.log.text());
    let reused: Vec<_> = pids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(reused.is_empty(), "processes that served twice: {reused:?}");
    assert_eq!(pids.len(), 500, "500 requests, 500 processes");
    // The spares took over: replacements were not started on the requests' path.
    assert!(
        f.log.wait_for("the spare takes over", WAIT).is_some(),
        "{}",
        f.log.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spare_is_kept_beside_the_pool_and_takes_over_from_a_dead_worker() {
    let f = Ferry::testbed(&["--workers", "1", "--spare-workers", "1"]);
    // Two processes: the worker and its spare, which serves nothing until it must.
    assert!(
        f.log.wait_for_nth("worker started", 2, WAIT).is_some(),
        "{}",
        f.log.text()
    );
    let pids = f.worker_pids();
    assert_eq!(pids.len(), 2, "{pids:?}");
    let serving = pid_in(&get(f.addr, "/pid").await.text());
    let spare = *pids
        .iter()
        .find(|p| **p != serving)
        .expect("a second process");
    for _ in 0..20 {
        assert_eq!(pid_in(&get(f.addr, "/pid").await.text()), serving);
    }
    unsafe { libc::kill(serving as i32, libc::SIGKILL) };
    assert!(
        f.log.wait_for("the spare takes over", WAIT).is_some(),
        "{}",
        f.log.text()
    );
    // The spare answers now, and a new spare is started behind it.
    let r = get(f.addr, "/pid").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(pid_in(&r.text()), spare, "the spare took over");
    assert!(
        f.log.wait_for_nth("worker started", 3, WAIT).is_some(),
        "{}",
        f.log.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_sizing_pool_grows_under_a_burst_and_shrinks_back_when_idle() {
    let sock = socket_path("sizing");
    let f = Ferry::testbed(&[
        "--min-workers",
        "1",
        "--max-workers",
        "3",
        "--concurrency",
        "1",
        "--scale-up-after",
        "20ms",
        "--idle-timeout",
        "400ms",
        "--control-socket",
        sock.to_str().unwrap(),
    ]);
    assert_eq!(f.worker_pids().len(), 1, "it starts at --min-workers");
    // Six slow requests at once, one slot per worker: the queue makes it grow.
    let mut burst = Vec::new();
    for _ in 0..6 {
        let addr = f.addr;
        burst.push(tokio::spawn(
            async move { get(addr, "/sleep?ms=400").await },
        ));
    }
    assert!(
        f.log
            .wait_for_nth("(--scale-up-after): adding a worker", 2, WAIT)
            .is_some(),
        "{}",
        f.log.text()
    );
    for r in burst {
        assert_eq!(r.await.unwrap().status, StatusCode::OK);
    }
    let grown = f.log.count("(--scale-up-after): adding a worker");
    assert_eq!(grown, 2, "never past --max-workers:\n{}", f.log.text());
    // Idle: back down to the minimum, one worker at a time.
    assert!(
        f.log
            .wait_for_nth("(--idle-timeout): draining and removing a worker", 2, WAIT)
            .is_some(),
        "{}",
        f.log.text()
    );
    assert!(f.log.wait_for_nth("worker removed", 2, WAIT).is_some());
    let (code, out, _) = ctl(&sock, &["--json", "status"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        status["status"]["workers"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    // By hand, within the same bounds.
    let (code, _, err) = ctl(&sock, &["scale", "4"]);
    assert_ne!(code, 0);
    assert!(err.contains("between 1 and 3"), "{err}");
    let (code, out, err) = ctl(&sock, &["scale", "+1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(f
        .log
        .wait_for("ferry ctl scale: adding a worker", WAIT)
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_retire_under_load_lose_no_request() {
    // No retries of idempotent requests: what is sent after a Goodbye must come back
    // by the retirement's own rule (never run, so sent elsewhere), for POSTs too.
    let f = Ferry::testbed(&[
        "--workers",
        "2",
        "--retry-idempotent",
        "false",
        "--spare-workers",
        "0",
    ]);
    let mut tasks = Vec::new();
    for client in 0..8 {
        let addr = f.addr;
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut bad = Vec::new();
            for i in 0..150 {
                let r = if (client + i) % 50 == 0 {
                    conn.get("/retire").await
                } else if i % 3 == 0 {
                    conn.send(
                        http::Request::post(format!("http://{addr}/echo"))
                            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                b"kept",
                            )))
                            .unwrap(),
                    )
                    .await
                } else {
                    conn.get("/pid").await
                };
                if r.status != StatusCode::OK {
                    bad.push(r.status);
                }
            }
            bad
        }));
    }
    for t in tasks {
        let bad = t.await.unwrap();
        assert!(
            bad.is_empty(),
            "failed during retirements: {bad:?}\n{}",
            f.log.text()
        );
    }
    let log = f.log.text();
    let retired = log.matches("worker says goodbye: retired").count();
    assert!(retired >= 10, "workers retired: {retired}\n{log}");
    // Replaced as recycled workers are, not restarted after a crash backoff.
    assert!(!log.contains("restarting in"), "{log}");
    assert!(
        log.contains("recycling worker: it retires (retired)"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_every_worker_refuses_gets_503_after_eight_retries() {
    let ferry = Ferry::builder(&["--workers", "2"], &[&misbehave(), "refuse"]).start();
    // Each worker it meets retires instead of taking it; a request never started may
    // go anywhere, but not forever: eight retries, then 503 with Retry-After.
    let r = get(ferry.addr, "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.headers["retry-after"], "1");
    assert!(r.text().contains("retired before it took the request"));
    // Each refusal is logged before the request moves on: the ninth gave the 503.
    let refusals = "worker says goodbye: refusing on purpose";
    assert!(ferry.log.wait_for_nth(refusals, 9, WAIT).is_some());
    assert_eq!(ferry.log.count(refusals), 9, "{}", ferry.log.text());

    // A streamed upload cannot be replayed: 503 at the first refusal.
    let before = ferry.log.count(refusals);
    let answer = raw(
        ferry.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "",
    );
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("retired before it took the request"),
        "{answer}"
    );
    assert!(ferry.log.wait_for_nth(refusals, before + 1, WAIT).is_some());
    assert_eq!(ferry.log.count(refusals), before + 1);
    // The pool is whole again: both slots have a worker (each a fresh one).
    assert!(ferry.log.wait_for_nth("worker started", 12, WAIT).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spare_that_cannot_start_is_retried_with_backoff_while_the_worker_serves() {
    let dir = fresh_dir("spare-backoff");
    let fail = dir.join("fail");
    let f = Ferry::builder(&["--workers", "1", "--spare-workers", "1"], &[&testbed()])
        .env("FERRY_TESTBED_FAIL_IF_EXISTS", &fail.to_string_lossy())
        .start();
    assert!(f.log.wait_for_nth("worker started", 2, WAIT).is_some());
    let serving = pid_in(&get(f.addr, "/pid").await.text());
    let spare = *f.worker_pids().iter().find(|p| **p != serving).unwrap();
    // From now on no worker can start: the spare dies, and every start of another
    // fails, each retry twice as far off as the last.
    std::fs::write(&fail, b"").unwrap();
    unsafe { libc::kill(spare as i32, libc::SIGKILL) };
    let failed = "spare worker failed to start (next attempt in ";
    for (n, delay) in [(1, "200ms"), (2, "400ms"), (3, "800ms")] {
        let line = f
            .log
            .wait_for_nth(failed, n, WAIT)
            .unwrap_or_else(|| panic!("{}", f.log.text()));
        assert!(line.contains(&format!("in {delay})")), "{line}");
        // The worker in the pool serves on meanwhile.
        assert_eq!(pid_in(&get(f.addr, "/pid").await.text()), serving);
    }
    // Once starts work again, a spare is back beside the worker.
    std::fs::remove_file(&fail).unwrap();
    assert!(
        f.log.wait_for_nth("worker started", 3, WAIT).is_some(),
        "{}",
        f.log.text()
    );
    assert_eq!(f.worker_pids().len(), 2);
}
