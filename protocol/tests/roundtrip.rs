//! Property tests: every variant of every message, with arbitrary field values,
//! survives encode -> arbitrary re-splitting -> decode unchanged.

use bytes::{Bytes, BytesMut};
use ferry_protocol::codec::{MasterCodec, WorkerCodec};
use ferry_protocol::*;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn headers() -> impl Strategy<Value = Vec<Header>> {
    proptest::collection::vec(
        (bytes(), bytes()).prop_map(|(name, value)| Header { name, value }),
        0..6,
    )
}

fn body() -> impl Strategy<Value = BodyKind> {
    prop_oneof![
        Just(BodyKind::Empty),
        bytes().prop_map(BodyKind::Inline),
        any::<Option<u64>>().prop_map(|length| BodyKind::Streamed { length }),
    ]
}

fn version() -> impl Strategy<Value = HttpVersion> {
    prop_oneof![
        Just(HttpVersion::Http09),
        Just(HttpVersion::Http10),
        Just(HttpVersion::Http11),
        Just(HttpVersion::Http2),
        Just(HttpVersion::Http3),
    ]
}

fn worker_msg() -> impl Strategy<Value = WorkerMsg> {
    prop_oneof![
        (any::<u32>(), any::<u32>(), any::<u32>(), ".*", ".*").prop_map(
            |(pid, max_in_flight, initial_window, sdk_name, sdk_version)| {
                WorkerMsg::Hello(Hello {
                    protocol_version: PROTOCOL_VERSION,
                    pid,
                    max_in_flight,
                    initial_window,
                    sdk_name,
                    sdk_version,
                })
            }
        ),
        (any::<u64>(), any::<u16>(), headers(), body()).prop_map(|(id, status, headers, body)| {
            WorkerMsg::ResponseHead(ResponseHead {
                id,
                status,
                headers,
                body,
            })
        }),
        (any::<u64>(), bytes()).prop_map(|(id, data)| WorkerMsg::BodyChunk(BodyChunk { id, data })),
        (any::<u64>(), headers())
            .prop_map(|(id, trailers)| WorkerMsg::BodyEnd(BodyEnd { id, trailers })),
        (any::<u64>(), any::<u32>())
            .prop_map(|(id, bytes)| WorkerMsg::Credit(Credit { id, bytes })),
        (any::<u64>(), ".*")
            .prop_map(|(id, reason)| WorkerMsg::Failed(RequestFailed { id, reason })),
        (any::<u64>(), any::<u32>())
            .prop_map(|(nonce, in_flight)| WorkerMsg::Pong(Pong { nonce, in_flight })),
        (".*", proptest::option::of(any::<u64>()))
            .prop_map(|(reason, last_id)| WorkerMsg::Goodbye(Goodbye { reason, last_id })),
    ]
}

fn master_msg() -> impl Strategy<Value = MasterMsg> {
    prop_oneof![
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(worker_index, max_frame_size, max_in_flight, initial_window)| {
                MasterMsg::Welcome(Welcome {
                    protocol_version: PROTOCOL_VERSION,
                    worker_index,
                    max_frame_size,
                    max_in_flight,
                    initial_window,
                })
            }
        ),
        (
            any::<u64>(),
            "[A-Z]{1,8}",
            ".*",
            version(),
            headers(),
            ".*",
            body()
        )
            .prop_map(|(id, method, target, version, headers, peer, body)| {
                MasterMsg::RequestHead(RequestHead {
                    id,
                    method,
                    target,
                    version,
                    headers,
                    peer,
                    body,
                })
            }),
        (any::<u64>(), bytes()).prop_map(|(id, data)| MasterMsg::BodyChunk(BodyChunk { id, data })),
        (any::<u64>(), headers())
            .prop_map(|(id, trailers)| MasterMsg::BodyEnd(BodyEnd { id, trailers })),
        (any::<u64>(), any::<u32>())
            .prop_map(|(id, bytes)| MasterMsg::Credit(Credit { id, bytes })),
        any::<u64>().prop_map(|id| MasterMsg::Cancel(Cancel { id })),
        any::<u64>().prop_map(|nonce| MasterMsg::Ping(Ping { nonce })),
        Just(MasterMsg::Drain),
    ]
}

/// Feeds `wire` to `decode` in pieces cut at `cuts` (positions, any order).
fn resplit<T>(
    wire: &[u8],
    cuts: &[usize],
    mut decode: impl FnMut(&mut BytesMut) -> Option<T>,
) -> Vec<T> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.push(wire.len());
    points.sort_unstable();
    let (mut src, mut out, mut at) = (BytesMut::new(), Vec::new(), 0);
    for p in points {
        src.extend_from_slice(&wire[at..p]);
        at = p;
        while let Some(m) = decode(&mut src) {
            out.push(m);
        }
    }
    out
}

proptest! {
    #[test]
    fn worker_sequences_round_trip(msgs in proptest::collection::vec(worker_msg(), 1..12), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let mut wire = BytesMut::new();
        for m in &msgs { WorkerCodec::default().encode(m.clone(), &mut wire).unwrap(); }
        let mut dec = MasterCodec::default();
        let out = resplit(&wire, &cuts, |src| dec.decode(src).unwrap());
        prop_assert_eq!(out, msgs);
    }

    #[test]
    fn master_sequences_round_trip(msgs in proptest::collection::vec(master_msg(), 1..12), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let mut wire = BytesMut::new();
        for m in &msgs { MasterCodec::default().encode(m.clone(), &mut wire).unwrap(); }
        let mut dec = WorkerCodec::default();
        let out = resplit(&wire, &cuts, |src| dec.decode(src).unwrap());
        prop_assert_eq!(out, msgs);
    }

    #[test]
    fn arbitrary_payloads_never_panic(p in proptest::collection::vec(any::<u8>(), 1..256)) {
        let _ = frame::decode_worker(Bytes::from(p.clone()));
        let _ = frame::decode_master(Bytes::from(p));
    }
}

/// A head with every field borrowed encodes to the very bytes of the owned one.
#[test]
fn a_borrowed_head_encodes_like_the_owned_one() {
    use ferry_protocol::frame::{encode_head_ref, encode_request_head};
    let owned = RequestHead {
        id: 9,
        method: "POST".into(),
        target: "/a?b=c".into(),
        version: HttpVersion::Http11,
        headers: vec![Header::new("host", "x"), Header::new("cookie", "a=1; b=2")],
        peer: "127.0.0.1:5".into(),
        body: BodyKind::Inline(bytes::Bytes::from_static(b"hi")),
    };
    let mut a = bytes::BytesMut::new();
    encode_request_head(&owned.borrowed(), &mut a, 1 << 20).unwrap();
    let headers: Vec<Header<BytesRef>> = owned
        .headers
        .iter()
        .map(|h| Header {
            name: BytesRef(&h.name),
            value: BytesRef(&h.value),
        })
        .collect();
    let borrowed = RequestHeadRef {
        id: 9,
        method: "POST",
        target: "/a?b=c",
        version: HttpVersion::Http11,
        headers: &headers[..],
        peer: "127.0.0.1:5",
        body: BodyKind::Inline(BytesRef(b"hi")),
    };
    let mut b = bytes::BytesMut::new();
    encode_head_ref(&borrowed, &mut b, 1 << 20).unwrap();
    assert_eq!(a, b);
}
