//! `ferry-misbehave MODE`: a worker that breaks the protocol on purpose.
//!
//! It speaks the protocol by hand with blocking I/O (as a worker in another language
//! would) and answers every request `200 ok <pid>` inline, except that:
//! - `wrong-version`: its Hello carries protocol version 99;
//! - `exit-at-start`: it prints a line to stderr and exits with status 3 before Hello;
//! - `garbage`, `oversize`, `unknown-id`, `second-head`: a request for `/evil` is
//!   answered with an unknown message type, a 2 GiB length prefix, a response for an
//!   id never sent, or two response heads;
//! - `many-fields`: `/evil` gets a response head of 40,000 header fields;
//! - `credit-flood`: `/evil` (a streamed upload) gets credits for 4 GB, twice;
//! - `stderr-junk`: `/evil` first writes invalid UTF-8 and a 10 MiB line to stderr,
//!   then answers as usual (so the master must keep reading its pipe);
//! - `deaf`: `/evil` makes it stop reading its channel (`shutdown(SHUT_RD)`), so the
//!   master's next write to it fails, and it answers nothing more;
//! - `refuse`: every request is refused: the worker retires (`Goodbye` with the
//!   previous id as `last_id`) instead of taking it, and exits when told to drain.

use bytes::{Bytes, BytesMut};
use ferry_protocol::frame::{decode_master, encode_worker, split_frame};
use ferry_protocol::*;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    if mode == "exit-at-start" {
        eprintln!("misbehave: cannot find my configuration");
        std::process::exit(3);
    }
    let fd: i32 = std::env::var(CHANNEL_FD_ENV)
        .expect("FERRY_FD")
        .parse()
        .expect("fd number");
    let mut sock = unsafe { UnixStream::from_raw_fd(fd) };
    let version = if mode == "wrong-version" {
        99
    } else {
        PROTOCOL_VERSION
    };
    send(
        &mut sock,
        &WorkerMsg::Hello(Hello {
            protocol_version: version,
            pid: std::process::id(),
            max_in_flight: 64,
            initial_window: DEFAULT_INITIAL_WINDOW,
            sdk_name: "misbehave".into(),
            sdk_version: "0".into(),
        }),
    );
    let mut buf = BytesMut::new();
    loop {
        let msg = loop {
            match split_frame(&mut buf, usize::MAX).expect("frame") {
                Some(p) => break decode_master(p).expect("message"),
                None => {
                    let mut chunk = [0u8; 65536];
                    let n = sock.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        };
        let head = match msg {
            MasterMsg::RequestHead(head) => head,
            // Alive, so that only the misbehaviour under test gets it killed.
            MasterMsg::Ping(p) => {
                send(
                    &mut sock,
                    &WorkerMsg::Pong(Pong {
                        nonce: p.nonce,
                        in_flight: 0,
                    }),
                );
                continue;
            }
            MasterMsg::Drain if mode == "refuse" => return,
            _ => continue,
        };
        let id = head.id;
        if mode == "refuse" {
            send(
                &mut sock,
                &WorkerMsg::Goodbye(Goodbye {
                    reason: "refusing on purpose".into(),
                    last_id: Some(id.saturating_sub(1)),
                }),
            );
            continue;
        }
        if head.target == "/evil" {
            match mode.as_str() {
                "garbage" => raw(&mut sock, &[0, 0, 0, 5, 0x5a, 1, 2, 3, 4]),
                "oversize" => raw(&mut sock, &[0x7f, 0xff, 0xff, 0xff, 0x02]),
                "unknown-id" => send(&mut sock, &ok(id + 1000)),
                "deaf" => {
                    let _ = sock.shutdown(std::net::Shutdown::Read);
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(60));
                    }
                }
                "many-fields" => {
                    let headers = (0..40_000)
                        .map(|_| Header::new(Bytes::from_static(b"x"), Bytes::new()))
                        .collect();
                    send(
                        &mut sock,
                        &WorkerMsg::ResponseHead(ResponseHead {
                            id,
                            status: 200,
                            headers,
                            body: BodyKind::Empty,
                        }),
                    );
                }
                "credit-flood" => {
                    for _ in 0..2 {
                        let bytes = u32::MAX;
                        send(&mut sock, &WorkerMsg::Credit(Credit { id, bytes }));
                    }
                }
                "stderr-junk" => {
                    use std::io::Write as _;
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(b"not utf-8: \xff\xfe\xc3\n");
                    let _ = err.write_all(&vec![b'y'; 10 << 20]);
                    let _ = err.write_all(b"\n");
                    let _ = err.flush();
                    drop(err);
                    // Panics (and so kills this worker) if the master stopped reading.
                    eprintln!("misbehave: after the junk");
                    send(&mut sock, &ok(id));
                }
                "second-head" => {
                    send(&mut sock, &streamed_head(id, None));
                    send(&mut sock, &ok(id));
                }
                // A body that breaks its declared length, one way or the other.
                "long-body" | "short-body" => {
                    let (declared, sent) = if mode == "long-body" {
                        (5, 10)
                    } else {
                        (10, 5)
                    };
                    send(&mut sock, &streamed_head(id, Some(declared)));
                    send(
                        &mut sock,
                        &WorkerMsg::BodyChunk(BodyChunk {
                            id,
                            data: Bytes::from(vec![b'x'; sent]),
                        }),
                    );
                    send(
                        &mut sock,
                        &WorkerMsg::BodyEnd(BodyEnd {
                            id,
                            trailers: vec![],
                        }),
                    );
                }
                _ => send(&mut sock, &ok(id)),
            }
            continue;
        }
        send(&mut sock, &ok(id));
    }
}

fn ok(id: u64) -> WorkerMsg {
    WorkerMsg::ResponseHead(ResponseHead {
        id,
        status: 200,
        headers: vec![],
        body: BodyKind::Inline(Bytes::from(format!("ok {}\n", std::process::id()))),
    })
}

fn streamed_head(id: u64, length: Option<u64>) -> WorkerMsg {
    WorkerMsg::ResponseHead(ResponseHead {
        id,
        status: 200,
        headers: vec![],
        body: BodyKind::Streamed { length },
    })
}

fn send(sock: &mut UnixStream, msg: &WorkerMsg) {
    let mut out = BytesMut::new();
    encode_worker(msg, &mut out, usize::MAX).expect("encode");
    raw(sock, &out);
}

fn raw(sock: &mut UnixStream, bytes: &[u8]) {
    let _ = sock.write_all(bytes);
}
