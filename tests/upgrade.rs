//! Replacing the master binary with no request lost (SIGUSR2): the new master takes
//! the listening sockets over, and the old one drains only once the new one serves;
//! a new binary that fails leaves the old master serving.

mod harness;

use harness::*;
use http::StatusCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Kills a master this test did not start itself (and so its workers, by their
/// parent-death signal).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let workers = children_of(self.0);
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        for w in workers {
            unsafe { libc::kill(-(w as i32), libc::SIGKILL) };
        }
    }
}

/// What a client loop saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// A keep-alive connection closed by the server as idle, before this request
    /// was read: retried on a new connection, as RFC 9112 section 9.3.1 allows and
    /// every client and load balancer does.
    retried: AtomicU64,
    failed: AtomicU64,
}

/// `clients` keep-alive connections sending GETs until `stop`.
fn load(
    addr: std::net::SocketAddr,
    clients: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    (0..clients)
        .map(|_| {
            let (stop, tally) = (stop.clone(), tally.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut conn = None;
                while !stop.load(Ordering::Relaxed) {
                    let fresh = conn.is_none();
                    if fresh {
                        // A refused connection panics here, and fails the test.
                        conn = Some(Conn::open(addr).await);
                    }
                    let c = conn.as_mut().unwrap();
                    match c.try_send(request("/")).await {
                        Ok(r) if r.status == StatusCode::OK => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                            failures.push(format!("status {}", r.status));
                        }
                        Err(e) if !fresh && e.is_incomplete_message() => {
                            tally.retried.fetch_add(1, Ordering::Relaxed);
                            conn = None;
                        }
                        Err(e) if e.is_closed() || e.is_canceled() => {
                            // Closed after an answer with `Connection: close`.
                            conn = None;
                            if fresh {
                                tally.failed.fetch_add(1, Ordering::Relaxed);
                                failures.push(format!("fresh connection: {e}"));
                            } else {
                                tally.retried.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                            failures.push(format!("request: {e}"));
                            conn = None;
                        }
                    }
                }
                failures
            })
        })
        .collect()
}

fn request(path: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    http::Request::get(path)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap()
}

/// Waits until `tally` has counted `more` answers beyond what it had.
async fn answers(tally: &Tally, more: u64) {
    let target = tally.ok.load(Ordering::Relaxed) + more;
    let deadline = std::time::Instant::now() + WAIT;
    while tally.ok.load(Ordering::Relaxed) < target {
        assert!(std::time::Instant::now() < deadline, "the load stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_upgrades_the_master_under_load_with_nothing_lost() {
    let dir = fresh_dir("upgrade");
    let control = dir.join("c.sock");
    let control_arg = control.to_string_lossy().into_owned();
    let mut ferry = Ferry::testbed(&[
        "--workers",
        "2",
        "--control-socket",
        &control_arg,
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let old = ferry.pid();
    let addr = ferry.addr;
    let admin = ferry.admin_addr();
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let clients = load(addr, 64, stop.clone(), tally.clone());
    answers(&tally, 500).await;

    // `bench/fleet.sh` upgrades many times over; CI once.
    let rounds: usize = std::env::var("FERRY_FLEET_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let mut masters = vec![];
    let mut current = old;
    for round in 1..=rounds {
        unsafe { libc::kill(current as i32, libc::SIGUSR2) };
        let line = ferry
            .log
            .wait_for_nth("upgrade: the new master (", round, WAIT)
            .unwrap_or_else(|| panic!("no upgrade; log:\n{}", ferry.log.text()));
        let new: u32 = line
            .split("upgrade: the new master (")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .and_then(|p| p.parse().ok())
            .expect("the new master's pid");
        masters.push(KillOnDrop(new));
        assert_ne!(new, current);
        if current == old {
            let status = ferry.wait_exit(WAIT).expect("the old master exits");
            assert!(status.success(), "{status:?}; log:\n{}", ferry.log.text());
        } else {
            let deadline = std::time::Instant::now() + WAIT;
            while alive(current) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{current} did not exit"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        answers(&tally, 300).await;
        current = new;
    }
    let new = current;
    // The load goes on against the new master alone.
    answers(&tally, 500).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    let (ok, retried) = (
        tally.ok.load(Ordering::Relaxed),
        tally.retried.load(Ordering::Relaxed),
    );
    eprintln!("{ok} answered, {retried} retried on a new connection after an idle close");
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );

    // Its workers are the new master's children, and the control socket is its own.
    let me = get(addr, "/pid").await.text();
    let worker = pid_in(&me);
    assert!(
        children_of(new).contains(&worker),
        "{worker} is not {new}'s"
    );
    let (code, out, err) = ctl(&control, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("pid {new}")), "{out}");
    assert!(!dir.join(format!("c.sock.{new}.new")).exists());

    // `ferry ctl upgrade` does the same, and says how it went.
    let (code, out, err) = ctl(&control, &["upgrade"]);
    assert_eq!(code, 0, "{err}");
    let newest: u32 = out
        .split("upgraded: master ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    masters.push(KillOnDrop(newest));
    assert!(out.contains(&format!("master {new} drains")), "{out}");
    let deadline = std::time::Instant::now() + WAIT;
    while alive(new) {
        assert!(std::time::Instant::now() < deadline, "{new} did not exit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, out, _) = ctl(&control, &["status"]);
    assert!(out.contains(&format!("pid {newest}")), "{out}");
    assert_eq!(get(addr, "/").await.text(), "Hello, world!\n");
    // The admin endpoint was handed over too: same port, the newest master answers.
    let status: serde_json::Value =
        serde_json::from_slice(&get(admin, "/status").await.body).unwrap();
    assert_eq!(status["pid"], newest, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_binary_that_fails_leaves_the_old_master_serving() {
    let dir = fresh_dir("upgrade-broken");
    let copy = dir.join("ferry");
    std::fs::copy(bin("ferry"), &copy).unwrap();
    let (sock, control, fail) = (dir.join("a.sock"), dir.join("c.sock"), dir.join("fail"));
    let unix = format!("unix:{}", sock.display());
    let control_arg = control.to_string_lossy().into_owned();
    let args = [
        "--workers",
        "1",
        "--start-timeout",
        "2s",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        &unix,
        "--control-socket",
        &control_arg,
    ];
    let ferry = Ferry::builder(&args, &[&testbed()])
        .env("FERRY_TESTBED_FAIL_IF_EXISTS", &fail.to_string_lossy())
        .binary(&copy)
        .start();

    // A real new master whose workers cannot start exits; the old master's socket
    // files stay, and it serves on.
    std::fs::write(&fail, b"").unwrap();
    upgrade_fails(&ferry, 1, "exited before it was ready");
    std::fs::remove_file(&fail).unwrap();
    assert_eq!(get(ferry.addr, "/").await.text(), "Hello, world!\n");
    assert!(
        sock.exists(),
        "the failed master removed the old one's socket file"
    );
    assert!(get_unix(&sock, "/").ends_with("Hello, world!\n"));
    let (code, status, _) = ctl(&control, &["status"]);
    assert_eq!(code, 0);
    assert!(status.contains(&format!("pid {}", ferry.pid())), "{status}");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".new"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Installed over the binary as a package manager would: a new file renamed in.
    let install = |script: &str| {
        use std::os::unix::fs::PermissionsExt;
        let next = dir.join("ferry.next");
        std::fs::write(&next, script).unwrap();
        std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&next, &copy).unwrap();
    };

    install("#!/bin/sh\nexit 1\n");
    upgrade_fails(&ferry, 2, "exited before it was ready");
    assert_eq!(get(ferry.addr, "/").await.text(), "Hello, world!\n");
    // Asked through `ferry ctl`, the failure is the answer: exit 1, and why.
    let (code, _, err) = ctl(&control, &["upgrade"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("upgrade failed") && err.contains("exited before it was ready"),
        "{err}"
    );

    // One that hangs is killed after --start-timeout.
    install("#!/bin/sh\nexec sleep 60\n");
    upgrade_fails(&ferry, 4, "not ready within 2s");
    assert_eq!(get(ferry.addr, "/").await.text(), "Hello, world!\n");
    // The fourth new master, killed, is reaped.
    let ended = ferry
        .log
        .wait_for_nth("upgrade: the new master (", 4, WAIT)
        .expect("the hung new master is reaped");
    assert!(ended.contains("ended"), "{ended}");
    assert!(alive(ferry.pid()));
}

/// SIGUSR2 makes the `nth` upgrade attempt, which fails saying `why`; the old master
/// says it keeps serving.
fn upgrade_fails(ferry: &Ferry, nth: usize, why: &str) {
    ferry.signal(libc::SIGUSR2);
    let line = ferry
        .log
        .wait_for_nth("upgrade failed", nth, WAIT)
        .unwrap_or_else(|| panic!("upgrade {nth} did not fail; log:\n{}", ferry.log.text()));
    assert!(line.contains(why), "{line}");
    assert!(line.contains("keeps serving"), "{line}");
}
