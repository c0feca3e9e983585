//! Structured round trip, both directions: arbitrary sequences of every message kind
//! are encoded with one side's codec, the byte stream is re-split at arbitrary points
//! (as reads from a socket would split it), and the other side's codec must decode
//! exactly the messages that were encoded, leaving nothing behind.
#![no_main]

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use ferry_protocol::codec::{MasterCodec, WorkerCodec};
use ferry_protocol::*;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

// ------------------------------------------------------------ mirrors of the types

#[derive(Arbitrary, Debug)]
enum ABody {
    Empty,
    Inline(Vec<u8>),
    Streamed(Option<u64>),
}

#[derive(Arbitrary, Debug)]
enum AVersion {
    Http09,
    Http10,
    Http11,
    Http2,
    Http3,
}

type AHeaders = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Arbitrary, Debug)]
enum AWorker {
    Hello {
        pid: u32,
        max_in_flight: u32,
        initial_window: u32,
        sdk_name: String,
        sdk_version: String,
    },
    ResponseHead {
        id: u64,
        status: u16,
        headers: AHeaders,
        body: ABody,
    },
    BodyChunk {
        id: u64,
        data: Vec<u8>,
    },
    BodyEnd {
        id: u64,
        trailers: AHeaders,
    },
    Credit {
        id: u64,
        bytes: u32,
    },
    Failed {
        id: u64,
        reason: String,
    },
    Pong {
        nonce: u64,
        in_flight: u32,
    },
    Goodbye {
        reason: String,
    },
}

#[derive(Arbitrary, Debug)]
enum AMaster {
    Welcome {
        worker_index: u32,
        max_frame_size: u32,
        max_in_flight: u32,
        initial_window: u32,
    },
    RequestHead {
        id: u64,
        method: String,
        target: String,
        version: AVersion,
        headers: AHeaders,
        peer: String,
        body: ABody,
    },
    BodyChunk {
        id: u64,
        data: Vec<u8>,
    },
    BodyEnd {
        id: u64,
        trailers: AHeaders,
    },
    Credit {
        id: u64,
        bytes: u32,
    },
    Cancel {
        id: u64,
    },
    Ping {
        nonce: u64,
    },
    Drain,
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Frame limit for both codecs (clamped to at least 1): small values exercise
    /// the encoder's refusal of oversized messages.
    max_frame: u16,
    worker: Vec<AWorker>,
    worker_cuts: Vec<u16>,
    master: Vec<AMaster>,
    master_cuts: Vec<u16>,
}

// ------------------------------------------------------------ conversions

fn headers(h: AHeaders) -> Vec<Header> {
    h.into_iter().map(|(n, v)| Header::new(n, v)).collect()
}

fn body(b: ABody) -> BodyKind {
    match b {
        ABody::Empty => BodyKind::Empty,
        ABody::Inline(d) => BodyKind::Inline(Bytes::from(d)),
        ABody::Streamed(length) => BodyKind::Streamed { length },
    }
}

fn version(v: AVersion) -> HttpVersion {
    match v {
        AVersion::Http09 => HttpVersion::Http09,
        AVersion::Http10 => HttpVersion::Http10,
        AVersion::Http11 => HttpVersion::Http11,
        AVersion::Http2 => HttpVersion::Http2,
        AVersion::Http3 => HttpVersion::Http3,
    }
}

impl From<AWorker> for WorkerMsg {
    fn from(m: AWorker) -> Self {
        match m {
            AWorker::Hello {
                pid,
                max_in_flight,
                initial_window,
                sdk_name,
                sdk_version,
            } => WorkerMsg::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                pid,
                max_in_flight,
                initial_window,
                sdk_name,
                sdk_version,
            }),
            AWorker::ResponseHead {
                id,
                status,
                headers: h,
                body: b,
            } => WorkerMsg::ResponseHead(ResponseHead {
                id,
                status,
                headers: headers(h),
                body: body(b),
            }),
            AWorker::BodyChunk { id, data } => WorkerMsg::BodyChunk(BodyChunk {
                id,
                data: Bytes::from(data),
            }),
            AWorker::BodyEnd { id, trailers } => WorkerMsg::BodyEnd(BodyEnd {
                id,
                trailers: headers(trailers),
            }),
            AWorker::Credit { id, bytes } => WorkerMsg::Credit(Credit { id, bytes }),
            AWorker::Failed { id, reason } => WorkerMsg::Failed(RequestFailed { id, reason }),
            AWorker::Pong { nonce, in_flight } => WorkerMsg::Pong(Pong { nonce, in_flight }),
            AWorker::Goodbye { reason } => WorkerMsg::Goodbye(Goodbye { reason }),
        }
    }
}

impl From<AMaster> for MasterMsg {
    fn from(m: AMaster) -> Self {
        match m {
            AMaster::Welcome {
                worker_index,
                max_frame_size,
                max_in_flight,
                initial_window,
            } => MasterMsg::Welcome(Welcome {
                protocol_version: PROTOCOL_VERSION,
                worker_index,
                max_frame_size,
                max_in_flight,
                initial_window,
            }),
            AMaster::RequestHead {
                id,
                method,
                target,
                version: v,
                headers: h,
                peer,
                body: b,
            } => MasterMsg::RequestHead(RequestHead {
                id,
                method,
                target,
                version: version(v),
                headers: headers(h),
                peer,
                body: body(b),
            }),
            AMaster::BodyChunk { id, data } => MasterMsg::BodyChunk(BodyChunk {
                id,
                data: Bytes::from(data),
            }),
            AMaster::BodyEnd { id, trailers } => MasterMsg::BodyEnd(BodyEnd {
                id,
                trailers: headers(trailers),
            }),
            AMaster::Credit { id, bytes } => MasterMsg::Credit(Credit { id, bytes }),
            AMaster::Cancel { id } => MasterMsg::Cancel(Cancel { id }),
            AMaster::Ping { nonce } => MasterMsg::Ping(Ping { nonce }),
            AMaster::Drain => MasterMsg::Drain,
        }
    }
}

/// Fails to compile when a message kind is added to the protocol without being
/// mirrored above (no wildcard arms on purpose).
#[allow(dead_code)]
fn mirrors_are_exhaustive(w: &WorkerMsg, m: &MasterMsg, b: &BodyKind, v: HttpVersion) {
    match w {
        WorkerMsg::Hello(_)
        | WorkerMsg::ResponseHead(_)
        | WorkerMsg::BodyChunk(_)
        | WorkerMsg::BodyEnd(_)
        | WorkerMsg::Credit(_)
        | WorkerMsg::Failed(_)
        | WorkerMsg::Pong(_)
        | WorkerMsg::Goodbye(_) => {}
    }
    match m {
        MasterMsg::Welcome(_)
        | MasterMsg::RequestHead(_)
        | MasterMsg::BodyChunk(_)
        | MasterMsg::BodyEnd(_)
        | MasterMsg::Credit(_)
        | MasterMsg::Cancel(_)
        | MasterMsg::Ping(_)
        | MasterMsg::Drain => {}
    }
    match b {
        BodyKind::Empty | BodyKind::Inline(_) | BodyKind::Streamed { .. } => {}
    }
    match v {
        HttpVersion::Http09
        | HttpVersion::Http10
        | HttpVersion::Http11
        | HttpVersion::Http2
        | HttpVersion::Http3 => {}
    }
}

// ------------------------------------------------------------ the round trip

/// Encodes `msgs` with `enc`, feeds the bytes to `dec` in pieces cut at `cuts`, and
/// checks that exactly the encodable messages come out, in order.
fn round_trip<M, E, D>(msgs: Vec<M>, cuts: &[u16], mut enc: E, mut dec: D, max: usize)
where
    M: Clone + PartialEq + std::fmt::Debug,
    E: Encoder<M, Error = ProtocolError>,
    D: Decoder<Item = M, Error = ProtocolError>,
{
    let mut wire = BytesMut::new();
    let mut sent = Vec::new();
    for m in msgs {
        let before = wire.len();
        match enc.encode(m.clone(), &mut wire) {
            Ok(()) => {
                let len = wire.len() - before - LENGTH_PREFIX;
                assert!(
                    len >= 1 && len <= max,
                    "encoded a {len}-byte payload with max {max}"
                );
                sent.push(m);
            }
            Err(ProtocolError::FrameTooLong { len, max: m }) => {
                assert!(len > max && m == max, "refused {len} bytes with max {max}");
                assert_eq!(wire.len(), before, "a refused message left bytes behind");
            }
            Err(e) => panic!("encoding {m:?} failed: {e}"),
        }
    }

    let mut points: Vec<usize> = cuts
        .iter()
        .map(|&c| c as usize % (wire.len() + 1))
        .collect();
    points.push(wire.len());
    points.sort_unstable();
    let (mut src, mut got, mut at) = (BytesMut::new(), Vec::new(), 0);
    for p in points {
        src.extend_from_slice(&wire[at..p]);
        at = p;
        while let Some(m) = dec.decode(&mut src).expect("decoding what we encoded") {
            got.push(m);
        }
    }
    assert!(src.is_empty(), "{} bytes left undecoded", src.len());
    assert_eq!(got, sent);
}

/// The master's hot path encodes request heads from borrowed bytes
/// (`frame::encode_request_head`): it must produce exactly what `encode_master` does
/// for the owned message, and refuse exactly the same oversized heads. The borrowed
/// form is built by hand here and must equal `RequestHead::borrowed`.
fn borrowed_head_encodes_like_owned(msg: &MasterMsg, max: usize) {
    let MasterMsg::RequestHead(h) = msg else {
        return;
    };
    let borrowed = RequestHead {
        id: h.id,
        method: h.method.clone(),
        target: h.target.clone(),
        version: h.version,
        headers: h
            .headers
            .iter()
            .map(|x| Header {
                name: BytesRef(&x.name),
                value: BytesRef(&x.value),
            })
            .collect(),
        peer: h.peer.clone(),
        body: match &h.body {
            BodyKind::Empty => BodyKind::Empty,
            BodyKind::Inline(b) => BodyKind::Inline(BytesRef(b)),
            BodyKind::Streamed { length } => BodyKind::Streamed { length: *length },
        },
    };
    assert_eq!(h.borrowed(), borrowed, "RequestHead::borrowed differs");
    let (mut owned, mut via_ref) = (BytesMut::new(), BytesMut::new());
    let a = frame::encode_master(msg, &mut owned, max);
    let b = frame::encode_request_head(&borrowed, &mut via_ref, max);
    match (a, b) {
        (Ok(()), Ok(())) => assert_eq!(owned, via_ref, "borrowed head encodes differently"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("owned encoding gave {a:?}, borrowed gave {b:?}"),
    }
}

fuzz_target!(|input: Input| {
    let max = (input.max_frame as usize).max(1);
    round_trip(
        input.worker.into_iter().map(WorkerMsg::from).collect(),
        &input.worker_cuts,
        WorkerCodec::new(max),
        MasterCodec::new(max),
        max,
    );
    let master: Vec<MasterMsg> = input.master.into_iter().map(MasterMsg::from).collect();
    for m in &master {
        borrowed_head_encodes_like_owned(m, max);
    }
    round_trip(
        master,
        &input.master_cuts,
        MasterCodec::new(max),
        WorkerCodec::new(max),
        max,
    );
});
