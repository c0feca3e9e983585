//! The admin endpoint, end to end: /status and /metrics agree with what the test
//! did to the pool.

mod harness;

use harness::*;
use http::StatusCode;
use std::net::SocketAddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

async fn status(admin: SocketAddr) -> serde_json::Value {
    let r = get(admin, "/status").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/json");
    serde_json::from_slice(&r.body).unwrap()
}

fn pids_of(s: &serde_json::Value) -> Vec<u32> {
    let mut pids: Vec<u32> = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_u64().unwrap() as u32)
        .collect();
    pids.sort();
    pids
}

fn sum(s: &serde_json::Value, field: &str) -> u64 {
    s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w[field].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_show_the_pool() {
    let f = Ferry::testbed(&["--workers", "2", "--admin-listen", "127.0.0.1:0"]);
    let admin = f.admin_addr();
    assert_ne!(admin, f.addr);
    for _ in 0..10 {
        assert_eq!(get(f.addr, "/").await.status, StatusCode::OK);
    }
    let addr = f.addr;
    // In flight for as long as the test looks (it is dropped, never answered).
    let slow = tokio::spawn(async move { get(addr, "/sleep?ms=60000").await });
    assert!(f.log.wait_for("sleeping 60000 ms", WAIT).is_some());

    let s = status(admin).await;
    let mut workers = f.worker_pids();
    workers.sort();
    assert_eq!(pids_of(&s), workers);
    for w in s["workers"].as_array().unwrap() {
        assert_eq!(w["state"], "ready", "{s}");
        assert!(w["rss_bytes"].as_u64().unwrap() > 0, "{s}");
        assert!(w["cpu_seconds"].as_f64().is_some(), "{s}");
    }
    assert_eq!(sum(&s, "in_flight"), 1, "{s}");
    assert_eq!(sum(&s, "served"), 10, "{s}");
    assert_eq!(s["responses"]["2xx"], 10, "{s}");
    assert_eq!(s["queue"]["waiting"], 0, "{s}");
    assert_eq!(s["worker_starts"], 2, "{s}");
    assert_eq!(s["worker_exits"], 0, "{s}");

    let m = get(admin, "/metrics").await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(m.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = m.text();
    for line in [
        "ferry_responses_total{class=\"2xx\"} 10",
        "ferry_workers{state=\"ready\"} 2",
        "ferry_queue_waiting 0",
        "# EOF",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }
    slow.abort();

    // A worker killed and replaced: one exit, one more start, the new pid listed.
    unsafe {
        libc::kill(workers[0] as i32, libc::SIGKILL);
    }
    assert!(f.log.wait_for_nth("worker started", 3, WAIT).is_some());
    let s = status(admin).await;
    assert_eq!(s["worker_exits"], 1, "{s}");
    assert_eq!(s["worker_starts"], 3, "{s}");
    let mut now = f.worker_pids();
    now.sort();
    assert_eq!(pids_of(&s), now);
    assert!(!pids_of(&s).contains(&workers[0]));
    assert_eq!(s["responses"]["2xx"], 10, "{s}");
}

#[tokio::test]
async fn admin_endpoint_answers_only_what_it_knows() {
    let f = Ferry::testbed(&["--workers", "1", "--admin-listen", "127.0.0.1:0"]);
    let admin = f.admin_addr();
    assert_eq!(get(admin, "/nope").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        post(admin, "/status").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // The public listener still belongs to the workers.
    assert_eq!(get(f.addr, "/status").await.status, StatusCode::NOT_FOUND);
}

#[test]
fn an_admin_address_in_use_fails_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    let (status, stderr) =
        Ferry::builder(&["--admin-listen", &at], &[&testbed()]).run_to_exit(WAIT);
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("cannot listen on {at} for the admin endpoint")),
        "{stderr}"
    );
}

/// `/healthz` says the master runs; `/readyz` turns 503 the moment a graceful stop
/// begins, while a request in flight still finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_at_the_start_of_a_graceful_stop() {
    let f = Ferry::testbed(&["--workers", "1", "--admin-listen", "127.0.0.1:0"]);
    let admin = f.admin_addr();
    assert_eq!(get(admin, "/healthz").await.status, StatusCode::OK);
    let ready = get(admin, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
    let addr = f.addr;
    let slow = tokio::spawn(async move { get(addr, "/sleep?ms=1500").await });
    assert!(f.log.wait_for("sleeping 1500 ms", WAIT).is_some());
    f.signal(libc::SIGTERM);
    assert!(f.log.wait_for("stopping gracefully", WAIT).is_some());
    let r = get(admin, "/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.text(), "not ready: stopping\n");
    assert_eq!(get(admin, "/healthz").await.status, StatusCode::OK);
    assert_eq!(
        slow.await.unwrap().status,
        StatusCode::OK,
        "in flight, finished"
    );
}

/// `--drain-delay`: a lame duck. `/readyz` turns 503 at the SIGTERM, yet new
/// connections are still accepted and served for the delay; then the graceful stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_delay_keeps_serving_while_readyz_says_503() {
    let mut f = Ferry::testbed(&[
        "--workers",
        "1",
        "--admin-listen",
        "127.0.0.1:0",
        "--drain-delay",
        "1500ms",
    ]);
    let admin = f.admin_addr();
    f.signal(libc::SIGTERM);
    assert!(
        f.log.wait_for("lame duck", WAIT).is_some(),
        "{}",
        f.log.text()
    );
    assert_eq!(
        get(admin, "/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // A new connection, after the signal: still accepted and answered.
    let r = get(f.addr, "/").await;
    assert_eq!(r.status, StatusCode::OK);
    // Served before the graceful stop began (its log line comes after the delay).
    assert_eq!(f.log.count("stopping gracefully"), 0, "{}", f.log.text());
    let status = f.wait_exit(WAIT).expect("ferry stops after the delay");
    assert!(status.success(), "{status:?}");
    assert!(f.log.wait_for("stopped gracefully", WAIT).is_some());
}
