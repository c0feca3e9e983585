//! Framing and decoding behaviour, byte by byte: splits at every boundary, limits,
//! and every kind of refusal as its own typed error.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use ferry_protocol::codec::{MasterCodec, WorkerCodec};
use ferry_protocol::frame::*;
use ferry_protocol::*;
use tokio_util::codec::{Decoder, Encoder};

const MAX: usize = DEFAULT_MAX_FRAME_SIZE;

fn all_worker_frames() -> (BytesMut, Vec<WorkerMsg>) {
    let mut buf = BytesMut::new();
    let msgs: Vec<WorkerMsg> = common::worker_samples()
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    for m in &msgs {
        encode_worker(m, &mut buf, MAX).unwrap();
    }
    (buf, msgs)
}

#[test]
fn frames_split_at_every_byte_boundary_decode_the_same() {
    let (wire, msgs) = all_worker_frames();
    for cut in 0..=wire.len() {
        let mut codec = MasterCodec::default();
        let mut src = BytesMut::new();
        let mut out = Vec::new();
        for part in [&wire[..cut], &wire[cut..]] {
            src.extend_from_slice(part);
            while let Some(m) = codec.decode(&mut src).unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, msgs, "cut at {cut}");
        assert!(src.is_empty());
    }
}

#[test]
fn byte_at_a_time_and_many_frames_in_one_read() {
    let (wire, msgs) = all_worker_frames();
    let mut codec = MasterCodec::default();
    let mut src = BytesMut::new();
    let mut out = Vec::new();
    for b in wire.iter() {
        src.put_u8(*b);
        while let Some(m) = codec.decode(&mut src).unwrap() {
            out.push(m);
        }
    }
    assert_eq!(out, msgs);

    let mut src = wire.clone();
    let mut out = Vec::new();
    while let Some(m) = codec.decode(&mut src).unwrap() {
        out.push(m);
    }
    assert_eq!(out, msgs, "all frames from one read");
}

fn chunk_frame(payload_len: usize) -> BytesMut {
    let data = vec![7u8; payload_len - BODY_CHUNK_OVERHEAD];
    let mut buf = BytesMut::new();
    encode_worker(
        &WorkerMsg::BodyChunk(BodyChunk {
            id: 1,
            data: Bytes::from(data),
        }),
        &mut buf,
        usize::MAX,
    )
    .unwrap();
    buf
}

#[test]
fn exactly_max_is_accepted_and_max_plus_one_refused_before_allocating() {
    let max = 4096;
    let mut ok = chunk_frame(max);
    assert!(split_frame(&mut ok, max).unwrap().is_some());

    let mut over = chunk_frame(max + 1);
    over.truncate(LENGTH_PREFIX); // only the prefix has arrived: refused anyway
    let cap_before = over.capacity();
    match split_frame(&mut over, max) {
        Err(ProtocolError::FrameTooLong { len, max: m }) => assert_eq!((len, m), (max + 1, max)),
        other => panic!("expected FrameTooLong, got {other:?}"),
    }
    assert_eq!(
        over.capacity(),
        cap_before,
        "no buffer growth for a refused frame"
    );

    // A hostile 4 GiB prefix is refused the same way, with no reservation.
    let mut hostile = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0x02][..]);
    assert!(matches!(
        split_frame(&mut hostile, MAX),
        Err(ProtocolError::FrameTooLong { .. })
    ));
}

#[test]
fn encoder_refuses_a_message_over_the_limit_and_leaves_nothing() {
    let mut buf = BytesMut::from(&b"keep"[..]);
    let data = vec![0u8; 100];
    let err = encode_master(
        &MasterMsg::BodyChunk(BodyChunk {
            id: 1,
            data: Bytes::from(data),
        }),
        &mut buf,
        100,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        ProtocolError::FrameTooLong { len: 109, max: 100 }
    ));
    assert_eq!(&buf[..], b"keep");
}

#[test]
fn zero_length_frame_is_refused() {
    let mut src = BytesMut::from(&[0, 0, 0, 0][..]);
    assert!(matches!(
        split_frame(&mut src, MAX),
        Err(ProtocolError::EmptyFrame)
    ));
}

#[test]
fn a_partial_frame_leaves_room_to_read_past_it() {
    // Only the prefix of a 5000-byte frame has arrived: the buffer must make room for
    // more than the rest of it, so one read can also take the frames behind it.
    let mut src = BytesMut::from(&5000u32.to_be_bytes()[..]);
    assert!(split_frame(&mut src, MAX).unwrap().is_none());
    assert!(
        src.capacity() - src.len() > 5000 + 4096,
        "spare room {}",
        src.capacity() - src.len()
    );
}

#[test]
fn partial_frames_wait_for_more() {
    let mut src = BytesMut::from(&[0, 0, 0][..]);
    assert!(split_frame(&mut src, MAX).unwrap().is_none());
    let mut src = BytesMut::from(&[0, 0, 0, 5, 0x07][..]);
    assert!(split_frame(&mut src, MAX).unwrap().is_none());
    assert_eq!(src.len(), 5, "nothing consumed while incomplete");
}

fn payload(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

#[test]
fn truncated_payloads_are_malformed() {
    for (_, msg) in common::worker_samples() {
        let mut buf = BytesMut::new();
        encode_worker(&msg, &mut buf, MAX).unwrap();
        let full = &buf[LENGTH_PREFIX..];
        for cut in 1..full.len() {
            let r = decode_worker(payload(&full[..cut]));
            // A body chunk cut after its header is a shorter, valid chunk.
            if matches!(msg, WorkerMsg::BodyChunk(_)) && cut >= BODY_CHUNK_OVERHEAD {
                continue;
            }
            // A retiring Goodbye cut after its reason is the short Goodbye (the field
            // after it is optional), and nothing else.
            if let WorkerMsg::Goodbye(Goodbye {
                reason,
                last_id: Some(_),
            }) = &msg
            {
                if cut == full.len() - 8 {
                    let short = Goodbye {
                        reason: reason.clone(),
                        last_id: None,
                    };
                    assert_eq!(r.unwrap(), WorkerMsg::Goodbye(short));
                    continue;
                }
            }
            // Streamed/Empty heads end in small enums; a cut can land on a shorter valid value
            // only if every remaining byte was optional, which our layouts never allow.
            assert!(r.is_err(), "{msg:?} cut to {cut} bytes decoded as {r:?}");
        }
    }
}

#[test]
fn trailing_bytes_are_refused_with_their_count() {
    let mut buf = BytesMut::new();
    encode_master(&MasterMsg::Ping(Ping { nonce: 1 }), &mut buf, MAX).unwrap();
    let mut p = buf[LENGTH_PREFIX..].to_vec();
    p.extend_from_slice(&[1, 2, 3]);
    match decode_master(payload(&p)) {
        Err(ProtocolError::TrailingBytes {
            message: "Ping",
            extra: 3,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        decode_master(payload(&[0x88, 0])),
        Err(ProtocolError::TrailingBytes {
            message: "Drain",
            extra: 1
        })
    ));
}

#[test]
fn unknown_message_types_are_refused_in_each_direction() {
    // A master message sent to the master (a channel wired backwards) is unknown there.
    assert!(matches!(
        decode_worker(payload(&[0x87, 0, 0, 0, 0, 0, 0, 0, 1])),
        Err(ProtocolError::UnknownMessage { tag: 0x87 })
    ));
    assert!(matches!(
        decode_master(payload(&[0x07])),
        Err(ProtocolError::UnknownMessage { tag: 0x07 })
    ));
    assert!(matches!(
        decode_worker(payload(&[0x00])),
        Err(ProtocolError::UnknownMessage { tag: 0 })
    ));
}

#[test]
fn unknown_enum_variant_is_typed() {
    // ResponseHead with body kind index 9.
    let mut p = vec![0x02];
    p.extend_from_slice(&1u64.to_be_bytes());
    p.extend_from_slice(&200u16.to_be_bytes());
    p.extend_from_slice(&0u64.to_be_bytes());
    p.extend_from_slice(&9u32.to_be_bytes());
    match decode_worker(payload(&p)) {
        Err(ProtocolError::UnknownVariant {
            message: "ResponseHead",
            found: 9,
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_utf8_in_text_is_typed() {
    let mut p = vec![0x06];
    p.extend_from_slice(&1u64.to_be_bytes());
    p.extend_from_slice(&2u64.to_be_bytes());
    p.extend_from_slice(&[0xc3, 0x28]);
    match decode_worker(payload(&p)) {
        Err(ProtocolError::InvalidUtf8 {
            message: "RequestFailed",
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn hostile_lengths_inside_a_frame_do_not_allocate() {
    // Goodbye claiming a 2^62-byte reason, in a 10-byte frame: must fail, not abort.
    let mut p = vec![0x08];
    p.extend_from_slice(&(1u64 << 62).to_be_bytes());
    p.push(b'x');
    assert!(matches!(
        decode_worker(payload(&p)),
        Err(ProtocolError::Malformed {
            message: "Goodbye",
            ..
        })
    ));
    // ResponseHead claiming 2^60 headers.
    let mut p = vec![0x02];
    p.extend_from_slice(&1u64.to_be_bytes());
    p.extend_from_slice(&200u16.to_be_bytes());
    p.extend_from_slice(&(1u64 << 60).to_be_bytes());
    assert!(matches!(
        decode_worker(payload(&p)),
        Err(ProtocolError::Malformed { .. })
    ));
}

#[test]
fn version_mismatch_names_both_versions() {
    let mut buf = BytesMut::new();
    let mut hello = match &common::worker_samples()[0].1 {
        WorkerMsg::Hello(h) => h.clone(),
        _ => unreachable!(),
    };
    hello.protocol_version = 99;
    encode_worker(&WorkerMsg::Hello(hello), &mut buf, MAX).unwrap();
    let err = decode_worker(buf.split_off(LENGTH_PREFIX).freeze()).unwrap_err();
    assert!(matches!(
        err,
        ProtocolError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: 99
        }
    ));
    assert_eq!(
        err.to_string(),
        format!("protocol version mismatch: this side speaks version {PROTOCOL_VERSION}, the peer speaks version 99")
    );
    // A Welcome from another version is refused by a worker the same way, even if the
    // rest of it would not parse.
    let mut p = vec![0x81];
    p.extend_from_slice(&2u32.to_be_bytes());
    assert!(matches!(
        decode_master(payload(&p)),
        Err(ProtocolError::VersionMismatch { theirs: 2, .. })
    ));
}

#[test]
fn body_chunk_data_is_a_slice_of_the_read_buffer_not_a_copy() {
    let data = vec![0xabu8; 64 * 1024];
    let mut src = BytesMut::new();
    encode_worker(
        &WorkerMsg::BodyChunk(BodyChunk {
            id: 3,
            data: Bytes::from(data.clone()),
        }),
        &mut src,
        MAX,
    )
    .unwrap();
    let base = src.as_ptr() as usize;
    let p = split_frame(&mut src, MAX).unwrap().unwrap();
    match decode_worker(p).unwrap() {
        WorkerMsg::BodyChunk(c) => {
            assert_eq!(c.data.len(), data.len());
            assert_eq!(
                c.data.as_ptr() as usize,
                base + LENGTH_PREFIX + BODY_CHUNK_OVERHEAD,
                "data must point into the read buffer"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn head_fields_are_slices_of_the_frame() {
    let (_, msg) = &common::master_samples()[1];
    let mut src = BytesMut::new();
    encode_master(msg, &mut src, MAX).unwrap();
    let range = src.as_ptr() as usize..src.as_ptr() as usize + src.len();
    let p = split_frame(&mut src, MAX).unwrap().unwrap();
    let MasterMsg::RequestHead(h) = decode_master(p).unwrap() else {
        panic!()
    };
    for hd in &h.headers {
        assert!(
            range.contains(&(hd.value.as_ptr() as usize)),
            "header value copied"
        );
    }
}

#[test]
fn borrowed_request_head_encodes_exactly_like_the_owned_one() {
    for (_, msg) in common::master_samples() {
        let MasterMsg::RequestHead(owned) = msg else {
            continue;
        };
        let borrowed = owned.borrowed();
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        encode_request_head(&borrowed, &mut b, MAX).unwrap();
        drop(borrowed);
        encode_master(&MasterMsg::RequestHead(owned), &mut a, MAX).unwrap();
        assert_eq!(a, b);
    }
    // And it refuses an over-long head the same way.
    let big = [b'x'; 200];
    let head = RequestHead {
        id: 1,
        method: "GET".into(),
        target: "/".into(),
        version: HttpVersion::Http11,
        headers: vec![Header {
            name: BytesRef(b"x"),
            value: BytesRef(&big),
        }],
        peer: String::new(),
        body: BodyKind::<BytesRef>::Empty,
    };
    let mut buf = BytesMut::new();
    assert!(matches!(
        encode_request_head(&head, &mut buf, 100),
        Err(ProtocolError::FrameTooLong { .. })
    ));
    assert!(buf.is_empty());
}

#[test]
fn codecs_round_trip_through_encoder_and_decoder() {
    let mut enc = WorkerCodec::new(MAX);
    let mut dec = MasterCodec::new(MAX);
    let mut buf = BytesMut::new();
    for (_, m) in common::worker_samples() {
        enc.encode(m.clone(), &mut buf).unwrap();
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(m));
    }
    let mut enc = MasterCodec::new(MAX);
    let mut dec = WorkerCodec::new(MAX);
    for (_, m) in common::master_samples() {
        enc.encode(m.clone(), &mut buf).unwrap();
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(m));
    }
    assert_eq!(dec.decode(&mut buf).unwrap(), None);
}

#[test]
fn garbage_never_panics() {
    // A deterministic sweep of short garbage; the fuzz targets go much further.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for len in 0..200 {
        for _ in 0..50 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let mut src = BytesMut::from(&bytes[..]);
            let _ = MasterCodec::default().decode(&mut src);
            let mut src = BytesMut::from(&bytes[..]);
            let _ = WorkerCodec::default().decode(&mut src);
            if !bytes.is_empty() {
                let _ = decode_worker(payload(&bytes));
                let _ = decode_master(payload(&bytes));
            }
        }
    }
}
