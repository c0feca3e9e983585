//! One channel round trip, master -> worker -> master, with a real `ferry-testbed`
//! worker started by the real spawner, next to a raw socketpair ping-pong between
//! two processes on the same machine (the floor any IPC design pays).
//!
//! `cargo bench -p ferry --bench roundtrip` (builds the testbed first if needed).
//!
//! - `socketpair_pingpong`: 64 bytes there and back, blocking reads and writes,
//!   with a child process echoing.
//! - `channel/1_in_flight`: one `GET /` RequestHead out, its ResponseHead back.
//! - `channel/64_in_flight`: 64 heads out, 64 responses back, per request: what
//!   coalescing buys when many requests share the channel.

use bytes::Bytes;
use criterion::{criterion_group, Criterion, Throughput};
use ferry_protocol::codec::MasterCodec;
use ferry_protocol::*;
use futures_util::{SinkExt, StreamExt};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::codec::{FramedRead, FramedWrite};

const PINGPONG_CHILD: &str = "FERRY_BENCH_PINGPONG_CHILD";

fn target_bin(name: &str) -> PathBuf {
    // benches run from target/<profile>/deps/
    let mut dir = std::env::current_exe().unwrap();
    dir.pop();
    dir.pop();
    let path = dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile = if dir.ends_with("release") {
            vec!["--release"]
        } else {
            vec![]
        };
        let ok = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "ferry-testbed"])
            .args(profile)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "building ferry-testbed failed");
    }
    path
}

/// The child side of the ping-pong: echo fixed-size messages on fd 3 until EOF.
fn pingpong_child() {
    let mut s = unsafe { UnixStream::from_raw_fd(3) };
    let mut buf = [0u8; 64];
    while s.read_exact(&mut buf).is_ok() {
        if s.write_all(&buf).is_err() {
            break;
        }
    }
}

fn socketpair_pingpong(c: &mut Criterion) {
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let fd = theirs.as_raw_fd();
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.env(PINGPONG_CHILD, "1");
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(theirs);
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    c.bench_function("socketpair_pingpong", |b| {
        b.iter(|| {
            ours.write_all(&msg).unwrap();
            ours.read_exact(&mut back).unwrap();
        })
    });
    drop(ours);
    let _ = child.wait();
}

fn head(id: u64) -> MasterMsg {
    let h = |n: &'static str, v: &'static str| {
        Header::new(
            Bytes::from_static(n.as_bytes()),
            Bytes::from_static(v.as_bytes()),
        )
    };
    MasterMsg::RequestHead(RequestHead {
        id,
        method: "GET".into(),
        target: "/".into(),
        version: HttpVersion::Http11,
        headers: vec![
            h("host", "localhost"),
            h("user-agent", "bench"),
            h("accept", "*/*"),
        ],
        peer: "127.0.0.1:1".into(),
        body: BodyKind::Empty,
    })
}

fn channel(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let spawner = ferry::spawn::Spawner::start(rt.handle().clone(), Default::default());
    let command = Arc::new(vec![target_bin("ferry-testbed")
        .to_string_lossy()
        .into_owned()]);
    let spawned = rt
        .block_on(spawner.spawn(command, 0))
        .expect("spawn the testbed");
    let (read, write) = {
        let _rt = rt.enter();
        ferry_channel::split(spawned.channel).unwrap()
    };
    let mut reader = FramedRead::new(read, MasterCodec::default());
    let mut writer = FramedWrite::new(write, MasterCodec::default());
    rt.block_on(async {
        match reader.next().await {
            Some(Ok(WorkerMsg::Hello(_))) => {}
            other => panic!("expected Hello, got {other:?}"),
        }
        let welcome = Welcome {
            protocol_version: PROTOCOL_VERSION,
            worker_index: 0,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE as u32,
            max_in_flight: 64,
            initial_window: DEFAULT_INITIAL_WINDOW,
        };
        writer.send(MasterMsg::Welcome(welcome)).await.unwrap();
    });

    let mut next_id = 0u64;
    let mut group = c.benchmark_group("channel");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1_in_flight", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t0 = Instant::now();
                for _ in 0..iters {
                    next_id += 1;
                    writer.send(head(next_id)).await.unwrap();
                    expect_response(&mut reader).await;
                }
                t0.elapsed()
            })
        })
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("64_in_flight", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t0 = Instant::now();
                for _ in 0..iters {
                    for _ in 0..64 {
                        next_id += 1;
                        writer.feed(head(next_id)).await.unwrap();
                    }
                    writer.flush().await.unwrap();
                    for _ in 0..64 {
                        expect_response(&mut reader).await;
                    }
                }
                t0.elapsed()
            })
        })
    });
    group.finish();
    drop(writer);
    drop(reader);
    let mut child = spawned.child;
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), child.wait()).await });
}

async fn expect_response(reader: &mut FramedRead<ferry_channel::ReadHalf, MasterCodec>) {
    loop {
        match reader.next().await {
            Some(Ok(WorkerMsg::ResponseHead(_))) => return,
            Some(Ok(WorkerMsg::Pong(_))) => continue,
            other => panic!("expected a response, got {other:?}"),
        }
    }
}

criterion_group!(benches, socketpair_pingpong, channel);

fn main() {
    if std::env::var_os(PINGPONG_CHILD).is_some() {
        pingpong_child();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
