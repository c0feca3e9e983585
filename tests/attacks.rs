//! The attacks of `hardening.rs` at full size, as measurements: each scenario runs
//! against the real binary while a second client probes `GET /` every 50 ms, and
//! prints one `figure` line: probes answered 200 within 2 s, the probes' p99, the
//! master's CPU over the scenario, and its peak RSS. They take minutes, so they are
//! `#[ignore]`d in CI; `tests/attacks.sh [BASELINE_FERRY]` runs them (and, given an
//! older binary, runs them again against it for a before-and-after table).
//!
//! Only options every version knows are used, so a baseline binary runs them too.

mod harness;

use harness::*;
use http::StatusCode;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Probes `GET /` on fresh connections until `stop`; their latencies (`None` for a
/// probe that failed or took over 2 s).
fn probe(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Option<Duration>>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let ok = std::panic::catch_unwind(|| {
                let mut s = TcpStream::connect(addr).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                s.write_all(b"GET / HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
                    .ok()?;
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut s, &mut out).ok()?;
                String::from_utf8_lossy(&out)
                    .starts_with("HTTP/1.1 200")
                    .then_some(())
            })
            .ok()
            .flatten();
            let took = started.elapsed();
            seen.push(ok.filter(|_| took <= Duration::from_secs(2)).map(|_| took));
            std::thread::sleep(Duration::from_millis(50));
        }
        seen
    })
}

/// Runs `attack` against `f` under probes and prints the figure line.
fn measure(name: &str, f: &Ferry, attack: impl FnOnce()) {
    let stop = Arc::new(AtomicBool::new(false));
    let ticks = cpu_ticks(f.pid());
    let started = Instant::now();
    let probes = probe(f.addr, stop.clone());
    attack();
    stop.store(true, Ordering::Relaxed);
    let seen = probes.join().unwrap();
    let wall = started.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(f.pid()) - ticks) as f64 / 100.0 / wall * 100.0;
    let ok: Vec<Duration> = seen.iter().flatten().copied().collect();
    let mut sorted = ok.clone();
    sorted.sort();
    let p99 = sorted
        .get((sorted.len() * 99 / 100).min(sorted.len().saturating_sub(1)))
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    let master = std::env::var("FERRY_MASTER").unwrap_or_else(|_| "this build".into());
    println!(
        "figure | {name} | {master} | probes ok {}/{} ({:.0} %) | p99 {p99:.0} ms | master CPU {cpu:.0} % | master peak RSS {} MiB | {wall:.0} s",
        ok.len(),
        seen.len(),
        100.0 * ok.len() as f64 / seen.len().max(1) as f64,
        peak_rss(f.pid()) >> 20,
    );
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(at) = stat.rfind(')') else { return 0 };
    let fields: Vec<&str> = stat[at + 2..].split_whitespace().collect();
    let n = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    n(11) + n(12)
}

#[tokio::test]
#[ignore = "long: run by tests/attacks.sh"]
async fn long_h2_closed_window_200_streams() {
    let f = Ferry::testbed(&["--workers", "2"]);
    let addr = f.addr;
    let (client, _connection) = closed_window_client(addr).await;
    // Held until the end: a dropped response would reset its stream.
    let _streams = open_streams(&client, addr, "/stream?bytes=1048576", 200);
    tokio::task::spawn_blocking(move || {
        measure("h2: window 0, 200 streamed responses", &f, || {
            std::thread::sleep(Duration::from_secs(45))
        })
    })
    .await
    .unwrap();
    drop(client);
}

#[test]
#[ignore = "long: run by tests/attacks.sh"]
fn long_130_non_readers_and_130_trickled_uploads() {
    let f = Ferry::testbed(&["--workers", "2"]);
    measure(
        "130 clients never reading + 130 trickling 100 KiB uploads",
        &f,
        || {
            let mut held: Vec<TcpStream> = Vec::new();
            for _ in 0..130 {
                let Ok(mut s) = TcpStream::connect(f.addr) else {
                    continue;
                };
                let _ = s.write_all(b"GET /stream?bytes=104857600 HTTP/1.1\r\nHost: a\r\n\r\n");
                held.push(s);
            }
            let mut uploads: Vec<TcpStream> = (0..130)
                .filter_map(|_| TcpStream::connect(f.addr).ok())
                .collect();
            for s in &mut uploads {
                let _ = s.write_all(
                    b"POST /sleep?ms=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 102400\r\n\r\n",
                );
            }
            // A byte every 5 s from each upload, for 45 s.
            for _ in 0..9 {
                for s in &mut uploads {
                    let _ = s.write_all(b"x");
                }
                std::thread::sleep(Duration::from_secs(5));
            }
            drop((held, uploads));
        },
    );
}

#[test]
#[ignore = "long: run by tests/attacks.sh"]
fn long_4000_half_prefaces() {
    let f = Ferry::testbed(&["--workers", "2", "--header-read-timeout", "60s"]);
    measure("4,000 connections with half an HTTP/2 preface", &f, || {
        let idle: Vec<TcpStream> = (0..4000)
            .filter_map(|_| {
                let mut s = TcpStream::connect(f.addr).ok()?;
                s.write_all(b"PRI * HTTP/2.0\r\n").ok()?;
                Some(s)
            })
            .collect();
        std::thread::sleep(Duration::from_secs(20));
        drop(idle);
    });
}

#[test]
#[ignore = "long: run by tests/attacks.sh"]
fn long_crash_storm_10s() {
    let f = Ferry::testbed(&["--workers", "2"]);
    measure(
        "crash storm: a worker killed every 200 ms for 10 s, then 10 s after",
        &f,
        || {
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Some(&victim) = f.worker_pids().first() {
                    unsafe {
                        libc::kill(victim as i32, libc::SIGKILL);
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            std::thread::sleep(Duration::from_secs(10));
        },
    );
}

#[test]
#[ignore = "long: run by tests/attacks.sh"]
fn long_descriptor_flood() {
    let f = Ferry::builder(&["--workers", "2"], &[&testbed()])
        .limit_fds(1024)
        .start();
    measure(
        "descriptor flood: 2,000 idle connections at a 1,024-fd limit, 20 s, then 10 s after",
        &f,
        || {
            let flood: Vec<TcpStream> = (0..2000)
                .filter_map(|_| TcpStream::connect(f.addr).ok())
                .collect();
            if let Some(&victim) = f.worker_pids().first() {
                unsafe {
                    libc::kill(victim as i32, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_secs(20));
            drop(flood);
            std::thread::sleep(Duration::from_secs(10));
        },
    );
}

#[test]
#[ignore = "long: run by tests/attacks.sh"]
fn long_tiny_chunks_to_a_slow_reader() {
    let f = Ferry::testbed(&["--workers", "2"]);
    measure(
        "64 MiB in 100-byte chunks to a client reading 1 MiB/s",
        &f,
        || {
            let Ok(mut s) = TcpStream::connect(f.addr) else {
                return;
            };
            let total: usize = 64 << 20;
            let _ = s.write_all(
            format!("GET /stream?bytes={total}&chunk=100 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
            let mut got = 0;
            let mut buf = [0u8; 16 * 1024];
            let started = Instant::now();
            while got < total {
                match std::io::Read::read(&mut s, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
                // 1 MiB/s.
                let due = Duration::from_secs_f64(got as f64 / (1 << 20) as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        },
    );
    assert_eq!(get_status(f.addr), Some(StatusCode::OK));
}

fn get_status(addr: SocketAddr) -> Option<StatusCode> {
    let answer = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "",
    );
    answer.starts_with("HTTP/1.1 200").then_some(StatusCode::OK)
}
