//! Sample messages shared by the vector and round-trip tests: one of each kind.
#![allow(dead_code)]

use bytes::Bytes;
use ferry_protocol::*;

pub fn hdr(n: &'static str, v: &'static str) -> Header {
    Header::new(
        Bytes::from_static(n.as_bytes()),
        Bytes::from_static(v.as_bytes()),
    )
}

/// (vector file stem, message) for every worker-to-master kind.
pub fn worker_samples() -> Vec<(&'static str, WorkerMsg)> {
    vec![
        (
            "w01_hello",
            WorkerMsg::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                pid: 4242,
                max_in_flight: 64,
                initial_window: 65536,
                sdk_name: "ferry-worker".into(),
                sdk_version: "0.1.0".into(),
            }),
        ),
        (
            "w02_response_head_inline",
            WorkerMsg::ResponseHead(ResponseHead {
                id: 1,
                status: 200,
                headers: vec![hdr("content-type", "text/plain")],
                body: BodyKind::Inline(Bytes::from_static(b"Hello, world!\n")),
            }),
        ),
        (
            "w02_response_head_streamed",
            WorkerMsg::ResponseHead(ResponseHead {
                id: 2,
                status: 200,
                headers: vec![],
                body: BodyKind::Streamed { length: Some(1000) },
            }),
        ),
        (
            "w02_response_head_empty",
            WorkerMsg::ResponseHead(ResponseHead {
                id: 3,
                status: 204,
                headers: vec![hdr("x-a", "1"), hdr("x-a", "2")],
                body: BodyKind::Empty,
            }),
        ),
        (
            "w03_body_chunk",
            WorkerMsg::BodyChunk(BodyChunk {
                id: 2,
                data: Bytes::from_static(b"abc"),
            }),
        ),
        (
            "w04_body_end",
            WorkerMsg::BodyEnd(BodyEnd {
                id: 2,
                trailers: vec![hdr("x-checksum", "9")],
            }),
        ),
        (
            "w05_credit",
            WorkerMsg::Credit(Credit {
                id: 5,
                bytes: 65536,
            }),
        ),
        (
            "w06_failed",
            WorkerMsg::Failed(RequestFailed {
                id: 6,
                reason: "cancelled".into(),
            }),
        ),
        (
            "w07_pong",
            WorkerMsg::Pong(Pong {
                nonce: 0x0102030405060708,
                in_flight: 3,
            }),
        ),
        (
            "w08_goodbye",
            WorkerMsg::Goodbye(Goodbye {
                reason: "max requests".into(),
                last_id: None,
            }),
        ),
        (
            "w08_goodbye_retire",
            WorkerMsg::Goodbye(Goodbye {
                reason: "retired".into(),
                last_id: Some(7),
            }),
        ),
    ]
}

/// (vector file stem, message) for every master-to-worker kind.
pub fn master_samples() -> Vec<(&'static str, MasterMsg)> {
    vec![
        (
            "m81_welcome",
            MasterMsg::Welcome(Welcome {
                protocol_version: PROTOCOL_VERSION,
                worker_index: 0,
                max_frame_size: 1 << 20,
                max_in_flight: 64,
                initial_window: 262144,
            }),
        ),
        (
            "m82_request_head",
            MasterMsg::RequestHead(RequestHead {
                id: 1,
                method: "GET".into(),
                target: "/pid?x=1".into(),
                version: HttpVersion::Http11,
                headers: vec![hdr("host", "localhost"), hdr("accept", "*/*")],
                peer: "127.0.0.1:5000".into(),
                body: BodyKind::Empty,
            }),
        ),
        (
            "m82_request_head_streamed",
            MasterMsg::RequestHead(RequestHead {
                id: 2,
                method: "POST".into(),
                target: "/echo".into(),
                version: HttpVersion::Http10,
                headers: vec![],
                peer: "[::1]:80".into(),
                body: BodyKind::Streamed { length: None },
            }),
        ),
        (
            "m83_body_chunk",
            MasterMsg::BodyChunk(BodyChunk {
                id: 2,
                data: Bytes::from_static(b"\x00\xff"),
            }),
        ),
        (
            "m84_body_end",
            MasterMsg::BodyEnd(BodyEnd {
                id: 2,
                trailers: vec![],
            }),
        ),
        ("m85_credit", MasterMsg::Credit(Credit { id: 2, bytes: 1 })),
        ("m86_cancel", MasterMsg::Cancel(Cancel { id: 7 })),
        ("m87_ping", MasterMsg::Ping(Ping { nonce: 99 })),
        ("m88_drain", MasterMsg::Drain),
    ]
}
