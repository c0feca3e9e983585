//! What an operator reads: the access log (both formats, reopened on SIGUSR1) and
//! the slow log.

mod harness;

use harness::*;
use http::StatusCode;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// A fresh file path in a folder of this test's own.
fn log_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferry-ops-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("access.log")
}

/// Waits until the file has `n` lines; returns them.
fn lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn the_combined_access_log_has_a_line_per_response() {
    let path = log_path("combined");
    let f = Ferry::testbed(&["--workers", "1", "--access-log", path.to_str().unwrap()]);
    assert_eq!(get(f.addr, "/").await.status, StatusCode::OK);
    assert_eq!(get(f.addr, "/sleep?ms=200").await.status, StatusCode::OK);
    assert_eq!(
        get(f.addr, "/stream?bytes=100000").await.status,
        StatusCode::OK
    );
    assert_eq!(get(f.addr, "/missing").await.status, StatusCode::NOT_FOUND);
    let lines = lines(&path, 4);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[0].starts_with("127.0.0.1 - - ["), "{}", lines[0]);
    assert!(
        lines[0].contains("] \"GET / HTTP/1.1\" 200 14 \"-\" \"-\" "),
        "{}",
        lines[0]
    );
    let slept: f64 = lines[1].rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        slept >= 0.2,
        "the request time covers the handler's sleep: {}",
        lines[1]
    );
    assert!(
        lines[2].contains("\"GET /stream?bytes=100000 HTTP/1.1\" 200 100000 "),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].contains("\"GET /missing HTTP/1.1\" 404 "),
        "{}",
        lines[3]
    );
}

#[tokio::test]
async fn the_json_access_log_names_the_worker_and_reopens_on_sigusr1() {
    let path = log_path("json");
    let f = Ferry::testbed(&[
        "--workers",
        "1",
        "--access-log",
        path.to_str().unwrap(),
        "--access-log-format",
        "json",
    ]);
    let pid = f.worker_pids()[0];
    assert_eq!(get(f.addr, "/sleep?ms=100").await.status, StatusCode::OK);
    let first = lines(&path, 1);
    let v: serde_json::Value = serde_json::from_str(&first[0]).unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["target"], "/sleep?ms=100");
    assert_eq!(v["status"], 200);
    assert_eq!(v["worker_pid"], pid);
    assert_eq!(v["worker_slot"], 0);
    assert_eq!(v["request_id"], 1);
    assert!(v["duration_ms"].as_f64().unwrap() >= 100.0, "{v}");
    assert!(v["wait_ms"].as_f64().unwrap() >= 0.0, "{v}");
    // logrotate moves the file away, then signals: new lines go to a new file.
    let rotated = path.with_extension("log.1");
    std::fs::rename(&path, &rotated).unwrap();
    f.signal(libc::SIGUSR1);
    assert!(f.log.wait_for("reopening the access log", WAIT).is_some());
    assert_eq!(get(f.addr, "/").await.status, StatusCode::OK);
    let fresh = lines(&path, 1);
    assert_eq!(fresh.len(), 1, "a line in the reopened file");
    assert_eq!(
        lines(&rotated, 1).len(),
        1,
        "the rotated file keeps its line"
    );
}

// Two runtime threads: the log is waited for by blocking, while the requests run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slow_log_names_the_worker_once_per_request() {
    let f = Ferry::testbed(&["--workers", "1", "--slow-request-threshold", "200ms"]);
    let pid = f.worker_pids()[0];
    let addr = f.addr;
    let one = tokio::spawn(async move { get(addr, "/sleep?ms=1200").await });
    let two = tokio::spawn(async move { get(addr, "/sleep?ms=1300").await });
    let line = f
        .log
        .wait_for("slow request: GET /sleep", WAIT)
        .expect("a slow log line");
    assert!(line.contains(&format!("pid={pid}")), "{line}");
    assert_eq!(one.await.unwrap().status, StatusCode::OK);
    assert_eq!(two.await.unwrap().status, StatusCode::OK);
    assert!(f.log.text().contains("has 2 in flight"), "{}", f.log.text());
    assert_eq!(f.log.count("slow request:"), 2, "once per request");
}
