//! What an operator reads: the access log (both formats, reopened on SIGUSR1) and
//! the slow log.

mod harness;

use harness::*;
use http::StatusCode;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// A fresh file path in a folder of this test's own.
fn log_path(name: &str) -> std::path::PathBuf {
    fresh_dir(&format!("ops-{name}")).join("access.log")
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

fn socket_path(name: &str) -> std::path::PathBuf {
    log_path(name).with_file_name("control.sock")
}

#[test]
fn ctl_reports_workers_scales_and_stops() {
    use std::os::unix::fs::PermissionsExt;
    let sock = socket_path("ctl");
    let mut f = Ferry::testbed(&["--workers", "1", "--control-socket", sock.to_str().unwrap()]);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only the owner may connect");
    let pid = f.worker_pids()[0];
    let (code, out, _) = ctl(&sock, &["workers"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&pid.to_string()) && out.contains("ready"),
        "{out}"
    );
    assert!(out.contains("CPU s"), "{out}");
    let (code, out, _) = ctl(&sock, &["--json", "status"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"]["workers"][0]["pid"], pid);
    // Scale within the bounds, and refused outside them.
    let (code, out, _) = ctl(&sock, &["scale", "+1"]);
    assert_eq!(code, 0, "{out}");
    assert!(f.log.wait_for_nth("worker started", 2, WAIT).is_some());
    assert_eq!(f.worker_pids().len(), 2);
    let (code, _, err) = ctl(&sock, &["scale", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("between 1 and 1024"), "{err}");
    let (code, _, _) = ctl(&sock, &["scale", "-1"]);
    assert_eq!(code, 0);
    assert!(f.log.wait_for("worker removed", WAIT).is_some());
    // Stop: gracefully, exit 0, and the socket file goes with the master.
    let (code, out, _) = ctl(&sock, &["stop"]);
    assert_eq!(code, 0, "{out}");
    let status = f.wait_exit(WAIT).expect("ferry stopped");
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "the socket file is removed");
    let (code, _, err) = ctl(&sock, &["status"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(sock.to_str().unwrap()),
        "names the path it tried: {err}"
    );
}

#[test]
fn ctl_reload_reports_each_slot_and_fails_when_a_replacement_does() {
    let sock = socket_path("reload");
    let marker = sock.with_file_name("fail");
    let f = Ferry::builder(
        &["--workers", "2", "--control-socket", sock.to_str().unwrap()],
        &[&testbed()],
    )
    .env("FERRY_TESTBED_FAIL_IF_EXISTS", marker.to_str().unwrap())
    .start();
    let before = f.worker_pids();
    let (code, out, _) = ctl(&sock, &["reload"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches(": replaced ").count(), 2, "{out}");
    // The old workers drain on their own once their replacements serve.
    assert!(f.log.wait_for_nth("worker replaced", 2, WAIT).is_some());
    let after = f.worker_pids();
    assert!(
        before.iter().all(|p| !after.contains(p)),
        "every worker is new"
    );
    // A broken deploy: the replacements fail, the old workers keep serving, exit 1.
    std::fs::write(&marker, b"").unwrap();
    let (code, out, _) = ctl(&sock, &["reload"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.matches("KEPT").count(), 2, "{out}");
    assert_eq!(f.worker_pids(), after);
    assert!(f.log.wait_for("reload failed", WAIT).is_some());
}

#[test]
fn a_stale_control_socket_is_replaced_and_a_live_one_refused() {
    let sock = socket_path("stale");
    // A socket file nobody listens on, as a killed master leaves it.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let _f = Ferry::testbed(&["--workers", "1", "--control-socket", sock.to_str().unwrap()]);
    assert_eq!(ctl(&sock, &["workers"]).0, 0);
    // A second master on the same socket: refused, and the first keeps it.
    let (status, log) = Ferry::builder(
        &["--workers", "1", "--control-socket", sock.to_str().unwrap()],
        &[&testbed()],
    )
    .run_to_exit(WAIT);
    assert!(!status.success());
    assert!(log.contains("another ferry is answering"), "{log}");
    assert_eq!(
        ctl(&sock, &["workers"]).0,
        0,
        "the first master still answers"
    );
}

#[test]
fn a_malformed_control_request_gets_an_error_and_the_connection_stays_usable() {
    use std::io::{BufRead, BufReader, Write};
    let sock = socket_path("malformed");
    let _f = Ferry::testbed(&["--workers", "1", "--control-socket", sock.to_str().unwrap()]);
    let conn = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut ask = |line: &str| {
        (&conn).write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        serde_json::from_str::<serde_json::Value>(&answer).unwrap()
    };
    let bad = ask("this is not json\n");
    assert_eq!(bad["ok"], false);
    assert!(bad["error"]
        .as_str()
        .unwrap()
        .contains("one JSON object per line"));
    let unknown = ask("{\"cmd\":\"dance\"}\n");
    assert!(unknown["error"]
        .as_str()
        .unwrap()
        .contains("status, workers, reload, retire, scale, upgrade, stop, events"));
    let fine = ask("{\"cmd\":\"workers\"}\n");
    assert_eq!(fine["ok"], true);
}

#[test]
fn ctl_finds_the_default_socket_by_port() {
    let runtime = log_path("default").with_file_name("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    let f = Ferry::builder(&["--workers", "1"], &[&testbed()])
        .env("XDG_RUNTIME_DIR", runtime.to_str().unwrap())
        .start();
    let expected = runtime
        .join("ferry")
        .join(format!("{}.sock", f.addr.port()));
    assert!(expected.exists(), "{}", f.log.text());
    let out = std::process::Command::new(bin("ferry"))
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["ctl", "--port", &f.addr.port().to_string(), "workers"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&f.worker_pids()[0].to_string()));
}

/// `{"cmd":"events"}` streams lifecycle events: a killed worker's exit, with why,
/// and its replacement's start.
#[test]
fn events_stream_worker_exits_and_starts() {
    use std::io::{BufRead, BufReader, Write};
    let sock = socket_path("events");
    let f = Ferry::testbed(&["--workers", "1", "--control-socket", sock.to_str().unwrap()]);
    let victim = f.worker_pids()[0];
    let mut conn = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    conn.write_all(b"{\"cmd\":\"events\"}\n").unwrap();
    let mut lines = BufReader::new(conn).lines();
    let ack: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(ack["ok"], true, "subscribed before anything happens");
    unsafe {
        libc::kill(victim as i32, libc::SIGKILL);
    }
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let done = v["event"] == "worker_started";
        seen.push(v);
        if done {
            break;
        }
    }
    let exited = seen
        .iter()
        .find(|v| v["event"] == "worker_exited")
        .unwrap_or_else(|| panic!("{seen:?}"));
    assert_eq!(exited["pid"], victim);
    assert_eq!(exited["reason"], "exited");
    assert!(
        exited["status"].as_str().unwrap().contains("signal 9"),
        "{exited}"
    );
    let started = seen.last().unwrap();
    assert_ne!(started["pid"], victim);
}

#[test]
fn ctl_retire_replaces_one_worker_by_pid() {
    let sock = socket_path("retire");
    let f = Ferry::testbed(&["--workers", "2", "--control-socket", sock.to_str().unwrap()]);
    let before = f.worker_pids();
    let victim = before[0].to_string();
    let (code, out, _) = ctl(&sock, &["retire", &victim]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("replaced {victim} with")), "{out}");
    assert!(f.log.wait_for("worker replaced", WAIT).is_some());
    let after = f.worker_pids();
    assert_eq!(after.len(), 2);
    assert!(
        !after.contains(&before[0]) && after.contains(&before[1]),
        "{before:?} -> {after:?}"
    );
    let (code, _, err) = ctl(&sock, &["retire", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("no worker has pid 1"), "{err}");
}

/// systemd's `NOTIFY_SOCKET` hears READY=1 once the workers are up, STATUS= and
/// WATCHDOG=1 pings when a watchdog is set, RELOADING=1 then READY=1 around a
/// SIGHUP, and STOPPING=1 at a graceful stop.
#[test]
fn systemd_hears_ready_reloading_watchdog_and_stopping() {
    let path = log_path("notify").with_file_name("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut f = Ferry::builder(&["--workers", "1"], &[&testbed()])
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .env("WATCHDOG_USEC", "200000")
        .start();
    // Reads datagrams until one contains `needle`; all of them, for the message.
    let mut heard = Vec::new();
    let mut wait_for = |needle: &str| {
        let mut buf = [0u8; 4096];
        loop {
            let n = sock
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("waiting for {needle}: {e}; heard {heard:?}"));
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            heard.push(msg.clone());
            if msg.lines().any(|l| l == needle) {
                return msg;
            }
        }
    };
    let ready = wait_for("READY=1");
    assert!(ready.contains("STATUS=1 worker(s) ready"), "{ready}");
    wait_for("WATCHDOG=1");
    f.signal(libc::SIGHUP);
    let reloading = wait_for("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    wait_for("READY=1");
    f.signal(libc::SIGTERM);
    wait_for("STOPPING=1");
    assert!(f.wait_exit(WAIT).expect("stopped").success());
}
